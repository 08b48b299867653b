"""DNSMOS (Microsoft, ITU-T P.835 SIG/BAK/OVRL and P.808 MOS predictors) from the ``speechmos``
package, which ships the ONNX models: runs offline on CPU.

DNSMOS was trained on speech with noise and processing artefacts; it rates speech quality, not
content, and means little for music or singing with accompaniment.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from stepeval import audio as audio_io

RATE = 16000
MIN_SECONDS = 0.5
WINDOW_SECONDS = 9.01  # speechmos.dnsmos.INPUT_LENGTH
INSTALL_HINT = "pip install 'stepeval[judges]' (speechmos, librosa, onnxruntime, requests)"
METRICS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str | None]:
    """(model, None) or (None, why it is unavailable); loaded once per process, failures too."""
    try:
        import speechmos
        from speechmos.dnsmos import DNSMOS
    except ImportError as err:
        return None, f"DNSMOS unavailable ({err}): {INSTALL_HINT}"
    models = Path(speechmos.__file__).parent / "dnsmos_models"
    try:
        return DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx")), None
    except Exception as err:  # a broken install: the metrics are missing with this reason
        return None, f"DNSMOS models in {models} failed to load: {type(err).__name__}: {err}"


def unavailable() -> str | None:
    """Why DNSMOS cannot run here, or None."""
    return _load()[1]


def score(samples: np.ndarray, rate: int) -> dict[str, float]:
    """{dnsmos_ovrl, dnsmos_sig, dnsmos_bak, dnsmos_p808}, each on a 1-5 scale. Raises ValueError for
    audio too short to rate (speechmos would loop an empty clip forever) and RuntimeError when the
    models are unavailable."""
    model, why = _load()
    if model is None:
        raise RuntimeError(why)
    speech = np.clip(audio_io.resample(samples, rate, RATE), -1.0, 1.0).astype(np.float32)
    if speech.size < MIN_SECONDS * RATE:
        raise ValueError(f"audio shorter than {MIN_SECONDS} s")
    # speechmos scores 9.01 s windows with a 1 s hop, and repeats shorter clips until they fill one. We pass
    # it one window at a time, non-overlapping, the last one repeated to full length: the same inputs for
    # clips under 9 s (where its extra windows only repeat the clip), and 9x less work on long replies.
    window = int(WINDOW_SECONDS * RATE)
    parts = [speech[start : start + window] for start in range(0, speech.size, window)]
    if len(parts) > 1 and parts[-1].size < MIN_SECONDS * RATE:
        parts.pop()
    scores = [model(np.resize(part, window), RATE, False) for part in parts]
    return {
        "dnsmos_ovrl": float(np.mean([r["ovrl_mos"] for r in scores])),
        "dnsmos_sig": float(np.mean([r["sig_mos"] for r in scores])),
        "dnsmos_bak": float(np.mean([r["bak_mos"] for r in scores])),
        "dnsmos_p808": float(np.mean([r["p808_mos"] for r in scores])),
    }
