"""Objective metrics added from configuration, without touching the harness.

A plugin is any class named by ``_target_`` in ``metrics.signals.extra`` that has ``names`` (the metric names
it fills), ``identity()`` (what its values depend on: a version, its settings; part of every score's
fingerprint, so changing it recomputes the scores) and ``score(audio, rate, transcript) -> {name: value}``.
A value of ``None``, a missing name or an exception makes that metric missing for the reply, with the reason.
Adding a metric is its module and its config entry (plus, optionally, its rule in ``metrics.rules``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np


class SignalPlugin(Protocol):
    names: tuple[str, ...]

    def identity(self) -> dict: ...

    def score(self, audio: np.ndarray, rate: int, transcript: str | None) -> Mapping[str, float | None]: ...


_LOADED: dict[str, SignalPlugin] = {}


def load(specs: Sequence[Mapping]) -> list[SignalPlugin]:
    """The configured plugins, instantiated once per process; a bad entry is an error naming it."""
    from hydra.utils import instantiate

    plugins = []
    for number, spec in enumerate(specs):
        where = f"metrics.signals.extra[{number}]"
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise ValueError(f"{where}: expected a mapping with a _target_ (a signal plugin class)")
        key = json.dumps(dict(spec), sort_keys=True, default=str)
        if key not in _LOADED:
            plugin = instantiate(dict(spec))
            if not getattr(plugin, "names", None) or not callable(getattr(plugin, "score", None)):
                raise ValueError(f"{where}: {spec['_target_']} needs `names` and `score(audio, rate, transcript)`")
            _LOADED[key] = plugin
        plugins.append(_LOADED[key])
    return plugins


def names(specs: Sequence[Mapping]) -> tuple[str, ...]:
    return tuple(name for plugin in load(specs) for name in plugin.names)


def identities(specs: Sequence[Mapping]) -> list[dict]:
    return [{"target": str(spec["_target_"]), **plugin.identity()} for spec, plugin in zip(specs, load(specs), strict=True)]
