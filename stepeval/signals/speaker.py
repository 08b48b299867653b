"""Speaker consistency across a conversation's replies, from Resemblyzer's speaker embeddings
(a GE2E d-vector model whose weights ship inside the ``resemblyzer`` package: offline, CPU).

Each reply gets the cosine similarity between its embedding and the mean embedding of the
conversation's *other* replies with speech (leave-one-out, so a reply is never compared with
itself). Resemblyzer's embeddings are non-negative and L2-normalised, so the value lies in [0, 1];
the same voice usually scores above 0.75, different voices lower.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np

from stepeval import threads

MIN_SECONDS = 0.5
RATE = 16000
# resemblyzer's dependency webrtcvad does not build with recent setuptools: see the Makefile's setup
INSTALL_HINT = "pip install webrtcvad-wheels && pip install --no-deps resemblyzer==0.1.4 (needs torch, librosa, scipy)"


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why speaker consistency cannot run here, or None; from what is installed and the weights file,
    without importing torch or loading the encoder."""
    for package in ("resemblyzer", "torch", "webrtcvad", "librosa"):
        if importlib.util.find_spec(package) is None:
            return f"Resemblyzer unavailable (No module named {package!r}): {INSTALL_HINT}"
    weights = Path(importlib.util.find_spec("resemblyzer").origin).parent / "pretrained.pt"
    if not weights.is_file():
        return f"Resemblyzer weights {weights} missing: reinstall resemblyzer"
    return None


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str | None]:
    """(encoder, None) or (None, reason); loaded once per process, on first use."""
    why = unavailable()
    if why:
        return None, why
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy.ndimage.morphology deprecation inside resemblyzer
            from resemblyzer import VoiceEncoder
        threads.set_torch_threads()
        return VoiceEncoder("cpu", verbose=False), None
    except Exception as err:
        return None, f"Resemblyzer weights failed to load: {type(err).__name__}: {err}"


def load_error() -> str | None:
    """Why the encoder failed to load although ``unavailable()`` found it installed (None if loaded or never tried)."""
    if _load.cache_info().currsize == 0 or unavailable():
        return None
    return _load()[1]


def embed(samples: np.ndarray, rate: int) -> np.ndarray | None:
    """256-d embedding of the voiced part, or None when under MIN_SECONDS of speech remains after
    Resemblyzer's voice-activity trimming."""
    encoder, why = _load()
    if encoder is None:
        raise RuntimeError(why)
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(np.asarray(samples, dtype=np.float32), source_sr=rate)
    if wav.size < MIN_SECONDS * RATE:
        return None
    return np.asarray(encoder.embed_utterance(wav), dtype=np.float64)


def consistency(embeddings: Mapping[Hashable, np.ndarray]) -> dict[Hashable, float]:
    """Leave-one-out similarity per reply; empty when fewer than two replies have embeddings."""
    if len(embeddings) < 2:
        return {}
    keys = list(embeddings)
    matrix = np.stack([embeddings[k] / np.linalg.norm(embeddings[k]) for k in keys])
    total = matrix.sum(axis=0)
    out = {}
    for key, vector in zip(keys, matrix, strict=True):
        others = total - vector
        out[key] = float(np.dot(vector, others) / np.linalg.norm(others))
    return out
