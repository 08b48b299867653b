"""A metric added by configuration alone (``metrics.signals.extra``): the reply's peak level."""

from __future__ import annotations

import math

import numpy as np


class PeakLevel:
    """Peak sample level in dBFS; ``floor_db`` for digital silence."""

    names = ("peak_dbfs",)

    def __init__(self, floor_db: float = -120.0):
        self.floor_db = floor_db

    def identity(self) -> dict:
        return {"version": 1, "floor_db": self.floor_db}

    def score(self, audio: np.ndarray, rate: int, transcript: str | None) -> dict[str, float | None]:
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        return {"peak_dbfs": 20 * math.log10(peak) if peak > 0 else self.floor_db}


class Broken:
    names = ("broken_metric",)

    def identity(self) -> dict:
        return {"version": 1}

    def score(self, audio: np.ndarray, rate: int, transcript: str | None) -> dict[str, float | None]:
        raise RuntimeError("this plugin always fails")
