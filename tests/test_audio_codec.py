"""The 16-bit PCM WAV fast path (stdlib ``wave`` + numpy) against soundfile (libsndfile) as the oracle:
the same bytes written, the same samples read, and soundfile's answer wherever the fast path steps aside."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from stepeval import audio as audio_io


def _soundfile_wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _soundfile_read(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1).astype(np.float32), rate


def _signals() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(24000) / 24000
    edges = [1.0, -1.0, 0.99999, -0.99999, 0.5 / 32768, -0.5 / 32768, 0.6 / 32768, -0.6 / 32768, -4e-16, 0.0, 1.7, -3.0]
    return [
        (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
        rng.uniform(-1.4, 1.4, 50_000).astype(np.float32),  # beyond full scale: clipped
        rng.normal(0, 1e-4, 20_000).astype(np.float32),  # near the rounding boundaries of the last bit
        np.array(edges, dtype=np.float32),
        np.zeros(0, dtype=np.float32),
    ]


@pytest.mark.parametrize("index", range(5))
def test_encoded_bytes_are_soundfiles(index):
    samples = _signals()[index]
    assert audio_io.encode_wav(samples, 24000) == _soundfile_wav(np.clip(samples, -1.0, 1.0), 24000)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_decoded_samples_are_soundfiles(channels):
    rng = np.random.default_rng(channels)
    frames = rng.uniform(-1, 1, (16_000, channels)).astype(np.float32)
    data = _soundfile_wav(frames, 16000)
    ours, rate = audio_io.decode(data)
    theirs, their_rate = _soundfile_read(data)
    assert rate == their_rate == 16000
    assert ours.dtype == np.float32
    assert np.array_equal(ours, theirs)


def test_extra_chunks_before_and_after_the_data_are_skipped():
    clip = _soundfile_wav(np.linspace(-0.5, 0.5, 800, dtype=np.float32), 8000)
    fmt_end = 12 + 8 + 16  # RIFF header, then the 16-byte fmt chunk
    junk = b"LIST" + (6).to_bytes(4, "little") + b"INFOab"
    data = clip[:fmt_end] + junk + clip[fmt_end:] + junk
    data = data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:]
    assert np.array_equal(audio_io.decode(data)[0], _soundfile_read(data)[0])
    assert audio_io._pcm16_wav(data) is not None  # it was the fast path that read it


@pytest.mark.parametrize(
    "subtype, fmt", [("PCM_24", "WAV"), ("FLOAT", "WAV"), ("PCM_U8", "WAV"), ("PCM_16", "FLAC"), ("PCM_16", "WAVEX")]
)
def test_other_formats_are_left_to_soundfile(subtype, fmt):
    samples = np.linspace(-0.9, 0.9, 4000, dtype=np.float32)
    data = _soundfile_wav(samples, 16000, subtype, fmt)
    assert audio_io._pcm16_wav(data) is None
    assert np.array_equal(audio_io.decode(data)[0], _soundfile_read(data)[0])


def test_a_cut_data_chunk_is_left_to_soundfile(tmp_path):
    data = _soundfile_wav(np.linspace(-0.9, 0.9, 4000, dtype=np.float32), 16000)[:-1001]  # mid-sample
    assert audio_io._pcm16_wav(data) is None
    assert np.array_equal(audio_io.decode(data)[0], _soundfile_read(data)[0])
    path = tmp_path / "cut.wav"
    path.write_bytes(data)
    with pytest.raises(audio_io.UnusableAudio, match="cut short"):
        audio_io.read_checked(path)


def test_read_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="missing.wav"):
        audio_io.read(tmp_path / "missing.wav")
