"""The Hydra application behind ``stepeval run``: config composition, sweeps, clear errors."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from stepeval.config import conf_dir, group_options, register_schemas

# runs of this process (one, or a sweep's jobs) that ended with problems: the exit status says so
_UNCLEAN: list[str] = []


def _job(cfg: DictConfig) -> str:
    from stepeval.pipeline import run
    from stepeval.secrets import scrub

    try:
        outcome = run(cfg)
    except (ValueError, OSError, ImportError, RuntimeError, OmegaConfBaseException) as err:
        # expected failures (bad config, missing files or servers): one clear line, no traceback;
        # records already written stay in the run folder for the next attempt
        print(f"stepeval run: error: {scrub(str(err))}", file=sys.stderr)
        raise SystemExit(1) from None
    if outcome.problems:
        verdict = "accepted (allow_failures=true)" if cfg.allow_failures else "exit status 1"
        print(f"stepeval run: {len(outcome.problems)} problem(s), {verdict}:", file=sys.stderr)
        for line in outcome.problems:
            print(f"  - {scrub(line)}", file=sys.stderr)
        if not cfg.allow_failures:
            _UNCLEAN.append(str(outcome.root))
    return str(outcome.view_dir)


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
    _UNCLEAN.clear()
    try:
        app()
    except SystemExit as exit_:
        return int(exit_.code or 0) or (1 if _UNCLEAN else 0)
    finally:
        sys.argv = saved
    return 1 if _UNCLEAN else 0
