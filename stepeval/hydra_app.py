"""The Hydra application behind ``stepeval run``: config composition, sweeps, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from stepeval import secrets
from stepeval.config import conf_dir, group_options, register_schemas, to_container


def _job(cfg: DictConfig) -> str:
    from stepeval.pipeline import run

    try:  # secrets the composed config holds (keys read from the environment too) are scrubbed from all output
        for value in secrets.secrets_in_config(to_container(cfg)):
            secrets.register_secret(value)
    except OmegaConfBaseException:
        pass  # an unresolvable value: the run reports it below
    sys.argv = [sys.argv[0], *secrets.redact_argv(sys.argv[1:])]  # Hydra has parsed it; the run records this copy
    _scrub_sweep_file()
    try:
        return str(run(cfg))
    except (ValueError, OSError, ImportError, RuntimeError, OmegaConfBaseException) as err:
        # expected failures (bad config, missing files or servers): one clear line, no traceback;
        # records already written stay in the run folder for the next attempt
        print(f"stepeval run: error: {secrets.scrub(str(err))}", file=sys.stderr)
        raise SystemExit(1) from None


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

top-level keys: run_name, results_dir, seed, history (audio|transcript), concurrency, limit, progress
examples:
  stepeval run dataset=sample model=parrot asr=whisper_base_offline
  stepeval run -m dataset=sample model=silence,noise,parrot,canned asr=whisper_base_offline
  stepeval run model=recorded model.backend.folder=/path/to/replies dataset.source=local dataset.local_dir=/data/360
show the composed config without running: stepeval run --cfg job [overrides]
results: <results_dir>/<run name>/ (manifest.json, records/, audio/, summary.json, table.md); rerun to resume.
"""


def _help() -> str:
    import yaml

    defaults = {}
    for entry in yaml.safe_load((conf_dir() / "config.yaml").read_text(encoding="utf-8"))["defaults"]:
        if isinstance(entry, dict):
            defaults.update({str(k): str(v) for k, v in entry.items()})
    lines = []
    for group, options in group_options().items():
        shown = [f"{o}*" if defaults.get(group) == o else o for o in options if o != "schema"]
        lines.append(f"  {group}: {', '.join(shown)}")
    return HELP.format(groups="\n".join(lines))


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(_help())
        return 0
    # Hydra echoes overrides itself ("Error executing job with overrides: [...]", multirun job lines):
    # the command line's secrets are registered and stdout, stderr and every log record scrubbed
    secrets.install(args)
    register_schemas()
    app = hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_job)
    saved = sys.argv
    sys.argv = ["stepeval run", *args]
    try:
        app()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return 0
