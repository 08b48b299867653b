"""The one place that decodes, encodes, resamples and measures audio (soundfile + soxr)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SILENCE_DBFS = -45.0
FRAME_SECONDS = 0.03


def read(path: str | Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read any soundfile-supported file as mono float32, optionally resampled to ``rate``."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"cannot decode audio file {path}: {err}") from err
    return _finish(audio, sr, rate)


def decode(data: bytes, rate: int | None = None, source: str = "audio bytes") -> tuple[np.ndarray, int]:
    """Decode encoded audio bytes (wav, flac, ogg, mp3...) to mono float32."""
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"cannot decode {source}: {err}") from err
    return _finish(audio, sr, rate)


def _finish(audio: np.ndarray, sr: int, rate: int | None) -> tuple[np.ndarray, int]:
    mono = audio.mean(axis=1).astype(np.float32)
    if rate is not None and rate != sr:
        return resample(mono, sr, rate), rate
    return mono, sr


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out or audio.size == 0:
        return audio.astype(np.float32)
    return soxr.resample(audio, rate_in, rate_out).astype(np.float32)


def encode_wav(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def to_base64_wav(audio: np.ndarray, rate: int) -> str:
    return base64.b64encode(encode_wav(audio, rate)).decode("ascii")


def write_wav_atomic(path: Path, audio: np.ndarray, rate: int) -> str:
    """Write a 16-bit WAV via a temporary file and rename, so a kill never leaves half a file.

    Returns the sha256 of the bytes written.
    """
    data = encode_wav(audio, rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def duration(audio: np.ndarray, rate: int) -> float:
    return float(audio.size) / float(rate) if rate else 0.0


def silence_share(audio: np.ndarray, rate: int, threshold_dbfs: float = SILENCE_DBFS) -> float:
    """Share of 30 ms frames whose RMS level is below ``threshold_dbfs`` (1.0 for empty audio)."""
    frame = max(1, int(rate * FRAME_SECONDS))
    n = audio.size // frame
    if n == 0:
        return 1.0
    frames = audio[: n * frame].reshape(n, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    return float(np.mean(level < threshold_dbfs))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class UnusableAudio(ValueError):
    """Audio that must not be sent to a model (unreadable, non-finite samples, cut short)."""


def read_user_clip(path: Path) -> tuple[np.ndarray, int]:
    """A user clip for replay; non-finite samples are refused rather than sent as full-scale clicks."""
    try:
        samples, rate = read(path)
    except (OSError, RuntimeError) as err:
        raise UnusableAudio(f"{path}: cannot be read ({err})") from None
    if not np.isfinite(samples).all():
        raise UnusableAudio(f"{path}: holds non-finite samples (NaN or inf)")
    return samples, rate
