"""``hide``: a fixture that makes installed packages look uninstalled to stepeval's availability checks (as on a
core install), and leaves every cached check and model load as it found it."""

from __future__ import annotations

import importlib.util

import pytest

from stepeval.signals import dnsmos, prosody, speaker, utmos

CACHED = (dnsmos.unavailable, speaker.unavailable, utmos.unavailable, prosody.unavailable)
LOADS = (dnsmos._load, speaker._load, utmos._load)  # a load refused while hidden must not stay cached


def _clear() -> None:
    for check in CACHED:
        check.cache_clear()


@pytest.fixture(name="hide")
def hide_fixture(monkeypatch: pytest.MonkeyPatch):
    """hide("librosa", ...): those packages look uninstalled; hide() shows everything again."""
    real = importlib.util.find_spec

    def hide(*packages: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in packages else real(name, *a))
        _clear()

    yield hide
    monkeypatch.undo()
    _clear()
    for load in LOADS:
        if load.cache_info().currsize and load()[0] is None:
            load.cache_clear()
