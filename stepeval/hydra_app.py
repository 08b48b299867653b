"""The Hydra application behind ``stepeval run``: config composition, sweeps, clear errors."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from stepeval.config import conf_dir, group_options, register_schemas


def _job(cfg: DictConfig) -> str:
    from stepeval import fleet
    from stepeval.pipeline import run

    try:
        with fleet.up(cfg) as ready:  # model.launch: the harness's own servers, up for this run only
            out = str(run(ready))
        _note_sweep_run(out)
        return out
    except (ValueError, OSError, ImportError, RuntimeError, OmegaConfBaseException) as err:
        # expected failures (bad config, missing files or servers): one clear line, no traceback;
        # records already written stay in the run folder for the next attempt
        print(f"stepeval run: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def _note_sweep_run(run_dir: str) -> None:
    """In a multirun, leave the run folder in the sweep folder: a launcher that runs jobs in other processes
    (submitit) returns nothing to the sweep's comparison callback, which reads these notes instead."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from stepeval.reporting.comparison import note_run

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        note_run(HydraConfig.get().sweep.dir, HydraConfig.get().job.num, run_dir)


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
