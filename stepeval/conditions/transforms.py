"""The degradations themselves: pure functions of (samples, rate, parameters, a seeded generator).

Each returns float32 samples at the input's rate (a telephone line or a codec is decoded back to it, as a
receiving system would), so the wire encoding and the model's resampling are the same as for clean audio.
What each claims is measured in tests/test_conditions.py: SNR, band edges, loss rate, duration, pitch, level.

The simple ones (noise, packet loss, clipping, level) are a few lines of numpy with our own seeded
``Generator``: exact by construction and measurable. Where a library does real work it is used:
pyroomacoustics (image-method room impulse responses), pedalboard (Rubber Band time stretch and pitch
shift), scipy (the telephone band-pass), soxr (resampling) and libsndfile through soundfile (MP3, Opus).
"""

from __future__ import annotations

import io
import math

import numpy as np

from stepeval import audio as audio_io

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def power(x: np.ndarray) -> float:
    """Mean square over the whole clip (pauses included): the SNR's definition here."""
    return float(np.mean(np.square(np.asarray(x, dtype=np.float64)))) if len(x) else 0.0


def level_db(x: np.ndarray) -> float:
    p = power(x)
    return 10 * math.log10(p) if p > 0 else -math.inf


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``n`` samples (a codec's or resampler's delay and padding)."""
    return x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


# --- additive noise -------------------------------------------------------------------------------


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power (-3 dB per octave): white noise shaped in the frequency domain, DC removed."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = np.inf  # no DC
    return np.fft.irfft(spectrum / np.sqrt(freqs), n)


def babble_noise(clips: list[np.ndarray], n: int) -> np.ndarray:
    """Several talkers at once: each clip at unit power, looped to ``n`` samples, summed."""
    total = np.zeros(n, dtype=np.float64)
    for clip in clips:
        clip = np.asarray(clip, dtype=np.float64)
        if not len(clip) or power(clip) == 0:
            continue
        looped = np.tile(clip, math.ceil(n / len(clip)))[:n]
        total += looped / math.sqrt(power(clip))
    return total


def add_noise(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal`` plus ``noise`` scaled so that 10 log10(P_signal / P_noise) is ``snr_db`` exactly.

    A silent clip has no SNR to keep: it gets noise at the level of -30 dBFS speech (so "no speech" stays noisy)."""
    noise = _fit(np.asarray(noise, dtype=np.float64), len(signal))
    p_noise = power(noise)
    if p_noise == 0:
        return _f32(signal)
    p_signal = power(signal) or 10 ** (-30 / 10)
    scale = math.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return _f32(np.asarray(signal, dtype=np.float64) + scale * noise)


# --- rooms -----------------------------------------------------------------------------------------


def room_impulse_response(
    rate: int, rt60_s: float, room_m: tuple[float, float, float], distance_m: float, rng: np.random.Generator
) -> np.ndarray:
    """A shoebox room's impulse response (pyroomacoustics, image method; absorption from Sabine's formula
    for ``rt60_s``); the microphone at ``distance_m`` from the talker, both placed by ``rng``, 1.5 m high."""
    import pyroomacoustics as pra

    room_m = tuple(float(v) for v in room_m)
    absorption, max_order = pra.inverse_sabine(rt60_s, room_m)
    room = pra.ShoeBox(room_m, fs=rate, materials=pra.Material(absorption), max_order=max_order)
    margin = 0.5
    for _ in range(1000):  # a talker position and direction that keep both inside the room
        source = np.array([rng.uniform(margin, room_m[0] - margin), rng.uniform(margin, room_m[1] - margin), 1.5])
        angle = rng.uniform(0, 2 * math.pi)
        mic = source + distance_m * np.array([math.cos(angle), math.sin(angle), 0.0])
        if margin / 2 <= mic[0] <= room_m[0] - margin / 2 and margin / 2 <= mic[1] <= room_m[1] - margin / 2:
            break
    else:
        raise ValueError(f"input: a microphone {distance_m} m from the talker does not fit in a room of {room_m} m")
    room.add_source(source.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float64)


def convolve(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` heard through ``rir``, as long as ``x`` (the tail past its end is cut: the turn ends when it ends)."""
    from scipy.signal import fftconvolve

    return fftconvolve(np.asarray(x, dtype=np.float64), rir)[: len(x)]


def reverberate(x: np.ndarray, rir: np.ndarray, gain_db: float = 0.0) -> np.ndarray:
    """Convolved, then at the clean clip's level plus ``gain_db`` (the room changes the sound, ``gain_db`` the level)."""
    wet = convolve(x, rir)
    p_in, p_out = power(x), power(wet)
    scale = math.sqrt(p_in / p_out) * 10 ** (gain_db / 20) if p_out > 0 else 0.0
    return _f32(wet * scale)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    return _f32(np.asarray(x, dtype=np.float64) * 10 ** (db / 20))


# --- channels --------------------------------------------------------------------------------------


def telephone(x: np.ndarray, rate: int, low_hz: float, high_hz: float, line_rate: int, order: int) -> np.ndarray:
    """A narrowband phone line: down to ``line_rate``, Butterworth band-pass ``low_hz``-``high_hz``, back up."""
    from scipy.signal import butter, sosfilt

    line = audio_io.resample(_f32(x), rate, line_rate) if rate != line_rate else _f32(x)
    sos = butter(order, [low_hz, high_hz], btype="bandpass", fs=line_rate, output="sos")
    narrow = _f32(sosfilt(sos, line))
    back = audio_io.resample(narrow, line_rate, rate) if rate != line_rate else narrow
    return _f32(_fit(back, len(x)))


def codec(x: np.ndarray, rate: int, name: str, compression_level: float) -> tuple[np.ndarray, int]:
    """Encoded with libsndfile (MP3 via LAME, Opus in Ogg) and decoded back; returns (samples, encoded bytes).

    ``compression_level`` is libsndfile's 0 (best quality, highest bitrate) .. 1 (lowest bitrate). Opus takes
    only some rates: other clips go through 16 kHz."""
    import soundfile as sf

    formats = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
    fmt, subtype = formats[name]
    work_rate = rate if name != "opus" or rate in OPUS_RATES else 16000
    work = audio_io.resample(_f32(x), rate, work_rate) if work_rate != rate else _f32(x)
    buf = io.BytesIO()
    extra = {"bitrate_mode": "CONSTANT"} if name == "mp3" else {}
    sf.write(buf, work, work_rate, format=fmt, subtype=subtype, compression_level=compression_level, **extra)
    data = buf.getvalue()
    decoded, decoded_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    if decoded.ndim > 1:
        decoded = decoded.mean(axis=1)
    if decoded_rate != rate:
        decoded = audio_io.resample(_f32(decoded), decoded_rate, rate)
    return _f32(_fit(decoded, len(x))), len(data)


def packet_loss(x: np.ndarray, rate: int, loss_rate: float, frame_ms: float, rng: np.random.Generator) -> np.ndarray:
    """Frames of ``frame_ms`` dropped (zeroed, no concealment): round(loss_rate x frames) of them, chosen by ``rng``."""
    frame = max(1, int(round(rate * frame_ms / 1000)))
    frames = math.ceil(len(x) / frame)
    lost = rng.choice(frames, size=int(round(loss_rate * frames)), replace=False)
    out = np.array(x, dtype=np.float32, copy=True)
    for index in lost:
        out[index * frame : (index + 1) * frame] = 0.0
    return out


def lost_frames(x: np.ndarray, rate: int, frame_ms: float) -> np.ndarray:
    """Which frames are all zero (for measuring packet loss)."""
    frame = max(1, int(round(rate * frame_ms / 1000)))
    frames = math.ceil(len(x) / frame)
    return np.array([not np.any(x[i * frame : (i + 1) * frame]) for i in range(frames)])


def clipping(x: np.ndarray, fraction: float) -> np.ndarray:
    """Hard clipping at the amplitude that ``fraction`` of the samples exceed (an overdriven input stage)."""
    x = np.asarray(x, dtype=np.float32)
    if not len(x) or fraction <= 0:
        return _f32(x)
    threshold = float(np.quantile(np.abs(x), 1.0 - fraction))
    return _f32(np.clip(x, -threshold, threshold))


# --- time and pitch --------------------------------------------------------------------------------


def speed(x: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """Faster (factor > 1) or slower speech, pitch kept (Rubber Band through pedalboard): duration / factor."""
    from pedalboard import time_stretch

    out = time_stretch(_f32(x)[None, :], float(rate), stretch_factor=float(factor))
    return _f32(out[0])


def pitch(x: np.ndarray, rate: int, semitones: float) -> np.ndarray:
    """Pitch moved by ``semitones``, duration kept (Rubber Band through pedalboard)."""
    from pedalboard import time_stretch

    out = time_stretch(_f32(x)[None, :], float(rate), stretch_factor=1.0, pitch_shift_in_semitones=float(semitones))
    return _f32(_fit(out[0], len(x)))
