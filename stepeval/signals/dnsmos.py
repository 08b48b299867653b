"""DNSMOS (Microsoft, ITU-T P.835 SIG/BAK/OVRL and P.808 MOS predictors) from the ``speechmos``
package, which ships the ONNX models: runs offline on CPU.

DNSMOS was trained on speech with noise and processing artefacts; it rates speech quality, not
content, and means little for music or singing with accompaniment.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from stepeval import audio as audio_io
from stepeval import threads

RATE = 16000
MIN_SECONDS = 0.5
WINDOW_SECONDS = 9.01  # speechmos.dnsmos.INPUT_LENGTH
INSTALL_HINT = "pip install 'stepeval[judges]' (speechmos, librosa, onnxruntime, requests)"
METRICS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")


MODEL_FILES = ("sig_bak_ovr.onnx", "model_v8.onnx")


def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("speechmos")
    return Path(spec.origin).parent / "dnsmos_models" if spec is not None and spec.origin else None


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why DNSMOS cannot run here, or None; from what is installed, without loading the models (a
    resumed run fingerprints its scores with this and should not pay for a model load)."""
    for package in ("speechmos", "onnxruntime", "librosa"):
        if importlib.util.find_spec(package) is None:
            return f"DNSMOS unavailable (No module named {package!r}): {INSTALL_HINT}"
    models = _models_dir()
    lacking = [name for name in MODEL_FILES if not (models / name).is_file()]
    if lacking:
        return f"DNSMOS models {lacking} missing from {models}: reinstall speechmos"
    return None


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str | None]:
    """(model, None) or (None, why it failed); loaded once per process, on first use, failures too."""
    why = unavailable()
    if why:
        return None, why
    models = _models_dir()
    try:
        import onnxruntime as ort
        from speechmos.dnsmos import DNSMOS

        model = DNSMOS.__new__(DNSMOS)  # its __init__ takes no session options: the same two sessions, with them
        model.primary_model_path = str(models / MODEL_FILES[0])
        model.onnx_sess = ort.InferenceSession(model.primary_model_path, threads.onnx_session_options())
        model.p808_onnx_sess = ort.InferenceSession(str(models / MODEL_FILES[1]), threads.onnx_session_options())
        return model, None
    except Exception as err:  # a broken install: the metrics are missing with this reason
        return None, f"DNSMOS models in {models} failed to load: {type(err).__name__}: {err}"


def load_error() -> str | None:
    """Why the models failed to load although ``unavailable()`` found them installed (None if loaded or never tried)."""
    if _load.cache_info().currsize == 0 or unavailable():
        return None
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
