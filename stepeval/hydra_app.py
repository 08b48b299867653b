"""The Hydra application behind ``stepeval run``: config composition, sweeps, clear errors."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from stepeval.config import conf_dir, register_schemas


def _job(cfg: DictConfig) -> str:
    from stepeval.pipeline import run

    return str(run(cfg))


def run_app(args: list[str]) -> int:
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
