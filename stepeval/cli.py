"""``stepeval``: one command, subcommands that each live in the module that owns them."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

# subcommand -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("stepeval.hydra_app", "replay a dataset through a model, transcribe, score, tabulate (Hydra overrides; --help)"),
    "data": ("stepeval.data.inspect", "data inspect <hub id | folder | sample>: schema, counts, unresolved audio"),
    "serve": ("stepeval.backends.server", "serve <backend> [overrides]: expose a backend as OpenAI-compatible audio chat"),
    "leaderboard": ("stepeval.reporting.leaderboard", "leaderboard <runs...>: one table over many runs (md, csv, tex, json)"),
    "report": ("stepeval.reporting.report", "report <run>: a self-contained HTML report with audio"),
    "compare": ("stepeval.reporting.compare", "compare --baseline <run> --candidate <run>: regression gate for CI"),
    "validate-judge": ("stepeval.validation.validate", "validate-judge <run> [judge overrides]: controls and agreement"),
    "rate": ("stepeval.validation.ratings", "rate <run> [--port] [--rater NAME]: a listening page for human ratings"),
}


def usage() -> str:
    available = {name: text for name, (module, text) in COMMANDS.items() if importlib.util.find_spec(module) is not None}
    width = max(map(len, available))
    lines = [f"  {name.ljust(width)}  {text}" for name, text in available.items()]
    return "usage: stepeval <command> [args]\n\ncommands:\n" + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS or importlib.util.find_spec(COMMANDS[command][0]) is None:
        print(f"stepeval: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
