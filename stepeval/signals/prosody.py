"""Prosody and sanity measurements of one reply: speaking rate, pitch statistics and the
empty / silent / clipped / truncated flags.

Speaking rate uses the ASR transcript over the speech span (first to last non-silent 30 ms frame,
so leading and trailing silence do not count, pauses inside do): characters per second for
Chinese, Cantonese and Japanese (a Chinese character is one syllable), words per second otherwise.
Pitch comes from librosa's probabilistic YIN over voiced frames only.
"""

from __future__ import annotations

import functools
import importlib.util
import re

import numpy as np

from stepeval import audio as audio_io

PITCH_RATE = 8000  # enough for F0 up to 1 kHz, and half the cost of 16 kHz
FRAME_S = audio_io.FRAME_SECONDS
F0_MIN_HZ, F0_MAX_HZ = 60.0, 1000.0  # speech and most singing
MAX_PITCH_SECONDS = 120.0  # pitch statistics on the first two minutes (bounded cost on long replies)
MIN_VOICED_FRAMES = 10
FULL_SCALE = 0.999  # |sample| at or above this is at full scale (16-bit max is 0.99997)
CLIPPED_SHARE = 0.001  # more than 0.1 % of samples at full scale: clipped
EMPTY_SECONDS = 0.1
TAIL_SECONDS = 0.1  # speech in the last 100 ms: the reply was cut off mid-speech
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
INSTALL_HINT = "pip install 'stepeval[judges]'"


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why pitch cannot be tracked here (librosa missing), or None; imports nothing."""
    if importlib.util.find_spec("librosa") is None:
        return f"pitch unavailable (No module named 'librosa'): {INSTALL_HINT}"
    return None


def frame_levels(samples: np.ndarray, rate: int) -> np.ndarray:
    """dBFS level of each 30 ms frame."""
    frame = max(1, int(rate * FRAME_S))
    n = samples.size // frame
    if n == 0:
        return np.zeros(0)
    frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
    return 20 * np.log10(np.maximum(np.sqrt(np.mean(frames**2, axis=1)), 1e-10))


def speech_span_seconds(samples: np.ndarray, rate: int) -> float:
    """Seconds from the first to the last non-silent frame (0 when all silent)."""
    loud = np.flatnonzero(frame_levels(samples, rate) >= audio_io.SILENCE_DBFS)
    return 0.0 if loud.size == 0 else float((loud[-1] - loud[0] + 1) * FRAME_S)


def flags(samples: np.ndarray, rate: int) -> dict[str, float]:
    """1.0 when the condition holds, else 0.0: empty (under 0.1 s), silent (no frame above the silence
    level), clipped (over 0.1 % of samples at full scale), truncated (speech in the last 100 ms)."""
    if samples.size < EMPTY_SECONDS * rate:
        return {"flag_empty": 1.0, "flag_silent": 1.0, "flag_clipped": 0.0, "flag_truncated": 0.0}
    levels = frame_levels(samples, rate)
    silent = not bool(np.any(levels >= audio_io.SILENCE_DBFS))
    clipped = float(np.mean(np.abs(samples) >= FULL_SCALE)) > CLIPPED_SHARE
    tail = samples[-max(1, int(TAIL_SECONDS * rate)) :].astype(np.float64)
    tail_dbfs = 20 * np.log10(max(float(np.sqrt(np.mean(tail**2))), 1e-10))
    return {
        "flag_empty": 0.0,
        "flag_silent": float(silent),
        "flag_clipped": float(clipped),
        "flag_truncated": float(not silent and tail_dbfs >= audio_io.SILENCE_DBFS),
    }


def speaking_rate(text: str, unit_language: str, speech_seconds: float) -> tuple[str, float] | None:
    """("speech_rate_cps", characters/s) when ``unit_language`` (a normaliser kind from the reference,
    ``resolve_language``) is zh or ja, ("speech_rate_wps", words/s) otherwise; None when there is no text
    or no speech span. Latin words and numbers inside CJK text count one each."""
    if speech_seconds <= 0 or not text.strip():
        return None
    if unit_language in ("zh", "ja"):
        units = len(_CJK_CHAR.findall(text)) + len(_WORD.findall(_CJK_CHAR.sub(" ", text)))
        return ("speech_rate_cps", units / speech_seconds) if units else None
    words = len(_WORD.findall(text))
    return ("speech_rate_wps", words / speech_seconds) if words else None


def pitch(samples: np.ndarray, rate: int) -> dict[str, float] | str:
    """{f0_median_hz, f0_std_st, f0_range_st} over voiced frames, or the reason it could not be measured.
    Spread is in semitones around the median (std) and between the 5th and 95th percentiles (range),
    so it compares across voices of different pitch."""
    import librosa

    speech = audio_io.resample(samples[: int(MAX_PITCH_SECONDS * rate)], rate, PITCH_RATE)
    if speech.size < 1024:
        return "audio too short for pitch tracking"
    f0, voiced, _ = librosa.pyin(
        speech, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=PITCH_RATE, frame_length=1024, hop_length=160, resolution=0.25
    )
    f0 = f0[voiced & np.isfinite(f0)]
    if f0.size < MIN_VOICED_FRAMES:
        return f"fewer than {MIN_VOICED_FRAMES} voiced frames ({f0.size}): no pitch to measure"
    median = float(np.median(f0))
    semitones = 12 * np.log2(f0 / median)
    low, high = np.percentile(semitones, [5, 95])
    return {"f0_median_hz": median, "f0_std_st": float(np.std(semitones)), "f0_range_st": float(high - low)}
