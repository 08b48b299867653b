"""UTMOS (UTokyo-SaruLab MOS predictor, VoiceMOS 2022 "strong" system) for speech naturalness, 1-5.

The weights come through ``torch.hub`` from the SpeechMOS repository (tarepan/SpeechMOS) on first
use and are cached by torch; no package on PyPI ships them, so this runs only where GitHub is
reachable. It is off by default (``metrics.signals.utmos=true`` turns it on) so that offline runs do
not try the network for every process.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

from stepeval import audio as audio_io
from stepeval import threads

RATE = 16000
HUB_REPO = "tarepan/SpeechMOS:v1.2.0"
HUB_MODEL = "utmos22_strong"


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why UTMOS cannot run here, or None: torch is installed. Loads nothing; where the weights then
    fail to come (offline), the scores are recorded as failed with the reason and retried next run."""
    if importlib.util.find_spec("torch") is None:
        return "UTMOS needs torch (No module named 'torch')"
    return None


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str | None]:
    """(model, None) or (None, reason); tried once per process, on first use."""
    why = unavailable()
    if why:
        return None, why
    try:
        import torch

        threads.set_torch_threads()
        model = torch.hub.load(HUB_REPO, HUB_MODEL, trust_repo=True)
    except Exception as err:  # offline, or the hub repo moved: missing with this reason
        return None, f"UTMOS weights unavailable (torch.hub {HUB_REPO} {HUB_MODEL}): {type(err).__name__}: {err}"
    return model.eval(), None


def load_error() -> str | None:
    if _load.cache_info().currsize == 0 or unavailable():
        return None
    return _load()[1]


def score(samples: np.ndarray, rate: int) -> float:
    model, why = _load()
    if model is None:
        raise RuntimeError(why)
    import torch

    wave = torch.from_numpy(audio_io.resample(samples, rate, RATE)).unsqueeze(0)
    with torch.inference_mode():
        return float(model(wave, RATE).reshape(-1)[0])
