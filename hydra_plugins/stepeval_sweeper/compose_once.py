"""Hydra's basic sweeper, composing each job's config once instead of twice.

Hydra's sweeper composes every job of a batch to check that it is legal before launching any (so a typo in the last
model of a sweep fails before the first runs for an hour), and then the launcher composes each job again. Composing
our config tree costs about 0.2 s a job, most of a no-op rerun of ``make eval`` (docs/performance.md). This sweeper
keeps the early check and hands the launcher the config the check composed. A launcher that runs jobs elsewhere
(submitit) pickles its config loader: the kept configs are left behind and each job composes its own, as before.
"""

# no ``from __future__ import annotations``: Hydra loads this module outside sys.modules, where dataclasses
# cannot resolve string annotations; and OmegaConf wants typing.Optional, not ``X | None``
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class KeptConfigs:
    """A config loader that returns a sweep config composed earlier (once) and otherwise asks the real loader."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.kept: dict[tuple[str, ...], DictConfig] = {}

    def keep(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> None:
        """Compose one job's config now (raising if it cannot be composed) and keep it for its launch."""
        overrides = list(sweep_overrides)
        self.kept[tuple(overrides)] = self.loader.load_sweep_config(master_config=master_config, sweep_overrides=overrides)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self.kept.pop(tuple(sweep_overrides), None)
        if kept is not None:
            return kept
        return self.loader.load_sweep_config(master_config=master_config, sweep_overrides=sweep_overrides)

    def __getattr__(self, name: str) -> Any:  # everything else is the real loader's
        if name in ("loader", "kept"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __getstate__(self) -> dict:
        return {"loader": self.loader, "kept": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class ComposeOnceSweeper(BasicSweeper):
    """``BasicSweeper`` (same sweeps, same batches, same early check) whose launcher reuses the checked configs."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.kept_configs = KeptConfigs(hydra_context.config_loader)
        context = HydraContext(config_loader=self.kept_configs, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """``BasicSweeper.sweep``, except that a job that raised does not end the sweep: Hydra's reads each job's
        return value, re-raising the first error, so the jobs after it never ran and the comparison was never
        written. Here its traceback is printed, the comparison callback lists it as failed, and the sweep exits 1."""
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params_conf), self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Sequence[JobReturn]] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for number, result in enumerate(results, start=initial_job_idx):
                if result.status == JobStatus.FAILED:
                    error = result._return_value
                    print(f"stepeval run: sweep job #{number} raised:", file=sys.stderr)
                    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.config is not None
        for overrides in batch:
            self.kept_configs.keep(self.config, overrides)


@dataclass
class ComposeOnceSweeperConf:
    _target_: str = "hydra_plugins.stepeval_sweeper.compose_once.ComposeOnceSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf, provider="stepeval")
