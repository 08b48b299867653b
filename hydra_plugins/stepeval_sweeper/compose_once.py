"""Hydra's basic sweeper, composing each job's config once instead of twice.

Hydra's sweeper composes every job of a batch to check that it is legal before launching any (so a typo in the last
model of a sweep fails before the first runs for an hour), and then the launcher composes each job again. Composing
our config tree costs about 0.2 s a job, most of a no-op rerun of ``make eval`` (docs/performance.md). This sweeper
keeps the early check and hands the launcher the config the check composed. A launcher that runs jobs elsewhere
(submitit) pickles its config loader: the kept configs are left behind and each job composes its own, as before.
"""

# no ``from __future__ import annotations``: Hydra loads this module outside sys.modules, where dataclasses
# cannot resolve string annotations; and OmegaConf wants typing.Optional, not ``X | None``
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Dict, Optional  # noqa: UP035

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


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
