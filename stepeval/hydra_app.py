"""The Hydra application behind ``stepeval run``: config composition, sweeps, clear errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stepeval import secrets
from stepeval.config import (
    CONF_DIR_ENV,
    CONF_PACKAGE,
    check_config,
    check_overrides,
    conf_dir,
    group_options,
    register_schemas,
    search_path_override,
    to_container,
    user_conf_dirs,
)

# runs of this process (one, or a sweep's jobs) that ended with problems: the exit status says so
_UNCLEAN: list[str] = []


def _job(cfg: DictConfig) -> str | None:
    from stepeval import fleet
    from stepeval.pipeline import run

    try:  # secrets the composed config holds (keys read from the environment too) are scrubbed from all output
        for value in secrets.secrets_in_config(to_container(cfg)):
            secrets.register_secret(value)
    except OmegaConfBaseException:
        pass  # an unresolvable value: the run reports it below
    sys.argv = [sys.argv[0], *secrets.redact_argv(sys.argv[1:])]  # Hydra has parsed it; the run records this copy
    _scrub_sweep_file()
    try:
        check_config(cfg)  # unknown keys (+modle=...), timeouts of 0: before any server starts
        with fleet.up(cfg) as ready:  # model.launch: the harness's own servers, up for this run only
            outcome = run(ready)
    except (ValueError, OSError, ImportError, RuntimeError, OmegaConfBaseException) as err:
        # expected failures (bad config, missing files or servers): one clear line, no traceback;
        # records already written stay in the run folder for the next attempt
        message = secrets.scrub(str(err))
        print(f"stepeval run: error: {message}", file=sys.stderr)
        if _note_sweep_failure(cfg, message):  # a sweep job: the others still run, the table lists this one
            _UNCLEAN.append(message)
            return None
        raise SystemExit(1) from None
    if outcome.problems:
        verdict = "accepted (allow_failures=true)" if cfg.allow_failures else "exit status 1"
        print(f"stepeval run: {len(outcome.problems)} problem(s), {verdict}:", file=sys.stderr)
        for line in outcome.problems:
            print(f"  - {secrets.scrub(line)}", file=sys.stderr)
        if not cfg.allow_failures:
            _UNCLEAN.append(str(outcome.root))
    unclean = [secrets.scrub(line) for line in outcome.problems] if not cfg.allow_failures else []
    _note_sweep_run(str(outcome.view_dir), unclean)
    return str(outcome.view_dir)


def _note_sweep_run(run_dir: str, problems: list[str]) -> None:
    """In a multirun, leave the run folder (and its problems, if any) in the sweep folder: a launcher that runs
    jobs in other processes (submitit) returns nothing to the sweep's comparison callback, which reads these notes
    instead, and ends the sweep with exit status 1 when a job noted problems."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from stepeval.reporting.comparison import note_problems, note_run

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        note_run(HydraConfig.get().sweep.dir, HydraConfig.get().job.num, run_dir)
        if problems:
            note_problems(HydraConfig.get().sweep.dir, HydraConfig.get().job.num, problems)


def _note_sweep_failure(cfg: DictConfig, reason: str) -> bool:
    """In a multirun, note a job that failed without a run (instead of ``SystemExit``, which Hydra's job runner does
    not catch: it ended the sweep before the table, and in a submitit job it left no result); False otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from stepeval.reporting.comparison import note_failure

    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return False
    model = OmegaConf.select(cfg, "model.name", default=None, throw_on_resolution_failure=False)
    model = model or f"job #{HydraConfig.get().job.num}"
    note_failure(HydraConfig.get().sweep.dir, HydraConfig.get().job.num, str(model), reason)
    return True


def _scrub_sweep_file() -> None:
    """Hydra saves a multirun's overrides and config to <sweep dir>/multirun.yaml before the first job: scrub it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    path = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if hydra_cfg.mode == RunMode.MULTIRUN and path.is_file():
        text = path.read_text(encoding="utf-8")
        if secrets.scrub(text) != text:
            path.write_text(secrets.scrub(text), encoding="utf-8")


HELP = """stepeval run: replay a dataset through a model, transcribe, score, tabulate.

usage: stepeval run [--multirun|-m] [group=option ...] [key=value ...]

config groups (pick one option each; defaults marked *):
{groups}

top-level keys: run_name, results_dir, seed, history (audio|transcript), concurrency, limit, progress,
  allow_failures (exit 0 although records failed or metrics could not run; default false)
examples:
  stepeval run dataset=sample model=parrot asr=whisper_base_offline
  stepeval run -m dataset=sample model=silence,noise,parrot,canned asr=whisper_base_offline
  stepeval run model=recorded model.backend.folder=/path/to/replies dataset.source=local dataset.local_dir=/data/360
show the composed config without running: stepeval run --cfg job [overrides]
results: <results_dir>/<run name>/ (manifest.json, records/, audio/, views/<view>/summary.json + table.md); rerun to resume.
exit status: 0 clean; 1 an error stopped the run, or a record failed / was skipped / a metric could not run.

configs: the packaged ones ({packaged}); your own options (e.g. my_conf/model/my_model.yaml, starting
  `defaults: [schema, _self_]`) come in only when named: --config-dir my_conf, hydra.searchpath=[file:///abs/my_conf]
  or {env}=my_conf (several: {sep}-separated). A folder in the working directory is never read by itself.{user}
"""


def _help(user_dirs: list[Path]) -> str:
    import yaml

    defaults = {}
    for entry in yaml.safe_load((conf_dir() / "config.yaml").read_text(encoding="utf-8"))["defaults"]:
        if isinstance(entry, dict):
            defaults.update({str(k): str(v) for k, v in entry.items()})
    lines = []
    for group, options in group_options(extra_dirs=user_dirs).items():
        shown = [f"{o}*" if defaults.get(group) == o else o for o in options if o != "schema"]
        lines.append(f"  {group}: {', '.join(shown)}")
    user = "".join(f"\n  + {d}" for d in user_dirs)
    return HELP.format(groups="\n".join(lines), packaged=f"pkg://{CONF_PACKAGE}", env=CONF_DIR_ENV, sep=os.pathsep, user=user)


def _search_path_args(args: list[str]) -> tuple[list[str], list[str]]:
    """``--config-dir``/``-cd`` and ``hydra.searchpath=[...]`` taken out of ``args``: (other args, search path entries).

    They are put back as one ``hydra.searchpath`` override together with ``$STEPEVAL_CONF``, after checking them.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    rest: list[str] = []
    entries: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("--config-dir", "-cd"):
            value = next(it, None)
            if value is None:
                raise ValueError(f"{arg} needs a folder")
            entries.append(value)
        elif arg.startswith("--config-dir="):
            entries.append(arg.split("=", 1)[1])
        elif arg.split("=", 1)[0] == "hydra.searchpath":
            value = OverridesParser.create().parse_override(arg).value()
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{arg}: hydra.searchpath must be a list of folders, e.g. [file:///abs/my_conf]")
            entries.extend(value)
        else:
            rest.append(arg)
    return rest, entries


# Hydra's flags that take a value (``--info`` takes one of its choices or none)
_VALUED = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--experimental-rerun"}
_INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _overrides_of(args: list[str]) -> list[str]:
    """The overrides among ``args`` (not Hydra's flags, nor the values those flags take)."""
    out = []
    for i, arg in enumerate(args):
        before = args[i - 1] if i else ""
        if not arg.startswith("-") and before not in _VALUED and not (before in ("--info", "-i") and arg in _INFO):
            out.append(arg)
    return out


def _with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """``extra`` overrides inserted next to the user's own: Hydra's parser takes overrides in one run only."""
    for i, arg in enumerate(args):
        before = args[i - 1] if i else ""
        if not arg.startswith("-") and before not in _VALUED and not (before in ("--info", "-i") and arg in _INFO):
            return [*args[:i], *extra, *args[i:]]
    return [*args, *extra]


def main(args: list[str]) -> int:
    try:
        rest, entries = _search_path_args(list(args))
        folders = user_conf_dirs([e.removeprefix("file://") for e in entries if e.startswith("file://") or "://" not in e])
    except (ValueError, OmegaConfBaseException, HydraException) as err:
        print(f"stepeval run: error: {err}", file=sys.stderr)
        return 1
    if any(a in ("-h", "--help") for a in rest):
        print(_help(folders))
        return 0
    packages = [e for e in entries if "://" in e and not e.startswith("file://")]
    # Hydra echoes overrides itself ("Error executing job with overrides: [...]", multirun job lines):
    # the command line's secrets are registered and stdout, stderr and every log record scrubbed
    secrets.install(args)
    try:  # each override parsed on its own (the error names it), group choices checked (the schema is no option)
        check_overrides(_overrides_of(rest), group_options(extra_dirs=folders), complete=not packages)
    except ValueError as err:
        print(f"stepeval run: error: {secrets.scrub(str(err))}", file=sys.stderr)
        return 1
    register_schemas()
    app = hydra.main(config_path=f"pkg://{CONF_PACKAGE}", config_name="config", version_base="1.3")(_job)
    saved = sys.argv
    sys.argv = ["stepeval run", *_with_overrides(rest, search_path_override([*folders, *packages]))]
    _UNCLEAN.clear()
    try:
        app()
    except SystemExit as exit_:
        return int(exit_.code or 0) or (1 if _UNCLEAN else 0)
    finally:
        sys.argv = saved
    return 1 if _UNCLEAN else 0
