"""UTMOS (UTokyo-SaruLab MOS predictor, VoiceMOS 2022 "strong" system) for speech naturalness, 1-5.

The weights come through ``torch.hub`` from the SpeechMOS repository (tarepan/SpeechMOS) on first
use and are cached by torch; no package on PyPI ships them, so this runs only where GitHub is
reachable. It is off by default (``metrics.signals.utmos=true`` turns it on) so that offline runs do
not try the network for every process.
"""

from __future__ import annotations

import functools

import numpy as np

from stepeval import audio as audio_io

RATE = 16000
HUB_REPO = "tarepan/SpeechMOS:v1.2.0"
HUB_MODEL = "utmos22_strong"


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str | None]:
    """(model, None) or (None, reason); tried once per process."""
    try:
        import torch
    except ImportError as err:
        return None, f"UTMOS needs torch ({err})"
    try:
        model = torch.hub.load(HUB_REPO, HUB_MODEL, trust_repo=True)
    except Exception as err:  # offline, or the hub repo moved: missing with this reason
        return None, f"UTMOS weights unavailable (torch.hub {HUB_REPO} {HUB_MODEL}): {type(err).__name__}: {err}"
    return model.eval(), None


def unavailable() -> str | None:
    return _load()[1]


def score(samples: np.ndarray, rate: int) -> float:
    model, why = _load()
    if model is None:
        raise RuntimeError(why)
    import torch

    wave = torch.from_numpy(audio_io.resample(samples, rate, RATE)).unsqueeze(0)
    with torch.inference_mode():
        return float(model(wave, RATE).reshape(-1)[0])
