"""The one place that decodes, encodes, resamples and measures audio (soundfile + soxr).

16-bit PCM WAV, the format of every clip the harness writes and of most replies, has a fast path: the
standard library's ``wave`` parses the container and numpy converts the samples, with libsndfile's own
arithmetic, so the samples and the bytes are identical to soundfile's (``tests/test_audio_codec.py`` checks
it against soundfile). soundfile's per-call overhead (a SoundFile object, virtual I/O through cffi) was
0.2-0.3 ms per clip, about a tenth of the harness's CPU per turn (docs/performance.md). Anything else
(other sample formats, FLAC, MP3, WAVE_FORMAT_EXTENSIBLE, streamed headers) goes through soundfile.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import re
import shutil
import struct
import wave
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SILENCE_DBFS = -45.0
FRAME_SECONDS = 0.03


_PCM16_SCALE = np.float32(1 / 32768)  # libsndfile reads 16-bit samples as x / 0x8000


def _pcm16_wav(data: bytes) -> tuple[np.ndarray, int] | None:
    """(frames x channels float32, rate) of a plain 16-bit PCM WAV whose data chunk is all there, else None."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data)) as clip:
            channels, width, rate, frames = clip.getnchannels(), clip.getsampwidth(), clip.getframerate(), clip.getnframes()
            if width != 2 or frames == 0:  # frames 0: also a streamed header (length unknown): soundfile decides
                return None
            pcm = clip.readframes(frames)
    except (wave.Error, EOFError, struct.error):  # WAVE_FORMAT_EXTENSIBLE, float, damaged: soundfile decides
        return None
    if len(pcm) != frames * channels * 2:  # data chunk cut short: soundfile decides what is there
        return None
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * _PCM16_SCALE
    return samples.reshape(-1, channels), rate


def _decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    fast = _pcm16_wav(data)
    if fast is not None:
        return fast
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)


def read(path: str | Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read any soundfile-supported file as mono float32, optionally resampled to ``rate``."""
    try:
        audio, sr = _decode_bytes(Path(path).read_bytes())
    except (OSError, sf.LibsndfileError, RuntimeError) as err:  # OSError: as soundfile's open failure used to
        raise ValueError(f"cannot decode audio file {path}: {err}") from err
    return _finish(audio, sr, rate)


class UnusableAudio(ValueError):
    """A file that decodes but must not be sent to a model: non-finite samples, or a header that disagrees with its data."""

    def __init__(self, path: str | Path, defect: str):
        self.path, self.defect = Path(path), defect
        super().__init__(f"unusable audio {path}: {defect}")


def wav_length_defect(data: bytes) -> str | None:
    """Compare a RIFF/WAVE header's declared data length with the bytes actually present (a file's bytes, read
    once and then decoded from the same bytes).

    libsndfile quietly reads what is there, so a WAV cut to a third decodes as a third of the turn;
    only the header says how long it should be.
    """
    size = len(data)
    with io.BytesIO(data) as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = rate = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return "no data chunk (the file ends inside its header)"
            ident, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if ident == b"fmt ":
                fmt = fh.read(length + (length & 1))
                if len(fmt) >= 14:
                    rate, block_align = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
                continue
            if ident == b"data":
                present = size - fh.tell()
                if length in (0, 0xFFFFFFFF) or present >= length:  # 0 / max: a streamed header, length unknown
                    return None
                bytes_per_s = block_align * rate
                if bytes_per_s:
                    return (
                        f"header declares {length / bytes_per_s:.2f} s of audio but the file holds "
                        f"{present / bytes_per_s:.2f} s (data chunk cut short)"
                    )
                return f"header declares {length} data bytes but the file holds {present} (data chunk cut short)"
            fh.seek(length + (length & 1), os.SEEK_CUR)


def read_checked(path: str | Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """``read`` for audio that is about to be sent to a model: damaged audio raises ``UnusableAudio``.

    Checks what decoding hides: a header length that disagrees with the data, and NaN/inf samples
    (which become full-scale clicks once converted to 16-bit PCM).
    """
    data = Path(path).read_bytes()
    defect = wav_length_defect(data)
    if defect:
        raise UnusableAudio(path, defect)
    try:
        audio, sr = _decode_bytes(data)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise UnusableAudio(path, f"cannot decode ({err})") from err
    bad = int(audio.size - np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise UnusableAudio(path, f"{bad} non-finite sample(s) (NaN or inf) of {audio.size}")
    if audio.shape[0] == 0:
        raise UnusableAudio(path, "no samples")
    return _finish(audio, sr, rate)


def decode(data: bytes, rate: int | None = None, source: str = "audio bytes") -> tuple[np.ndarray, int]:
    """Decode encoded audio bytes (wav, flac, ogg, mp3...) to mono float32."""
    mono, sr, _ = decode_storable(data, source)
    if rate is not None and rate != sr:
        return resample(mono, sr, rate), rate
    return mono, sr


def decode_storable(data: bytes, source: str = "audio bytes") -> tuple[np.ndarray, int, bool]:
    """``decode``, and whether ``data`` may be stored as it is: a complete mono 16-bit PCM WAV holds exactly the
    samples ``encode_wav`` would write for them (16-bit values survive the float round trip), so a reply that
    arrives as one is kept byte for byte instead of re-encoded."""
    fast = _pcm16_wav(data)
    try:
        frames, sr = fast if fast is not None else sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"cannot decode {source}: {err}") from err
    mono, sr = _finish(frames, sr, None)
    return mono, sr, fast is not None and frames.shape[1] == 1


def _finish(audio: np.ndarray, sr: int, rate: int | None) -> tuple[np.ndarray, int]:
    # one channel: the samples themselves (what the mean of one is; numpy's mean over a length-1 axis is slow)
    mono = audio[:, 0].astype(np.float32) if audio.shape[1] == 1 else audio.mean(axis=1).astype(np.float32)
    if rate is not None and rate != sr:
        return resample(mono, sr, rate), rate
    return mono, sr


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out or audio.size == 0:
        return audio.astype(np.float32)
    return soxr.resample(audio, rate_in, rate_out).astype(np.float32)


def encode_wav(audio: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV of ``audio`` clipped to [-1, 1]: a mono float32 clip takes the fast path, the rest soundfile."""
    audio = np.clip(audio, -1.0, 1.0)
    if audio.ndim == 1 and audio.dtype == np.float32:
        # libsndfile's float -> 16-bit conversion: round(x * 2**31) to a 32-bit int, then its top 16 bits
        wide = np.rint(audio * np.float32(2**31)).astype(np.float64)
        pcm = (np.clip(wide, -(2**31), 2**31 - 1).astype(np.int64) >> 16).astype("<i2")
        buf = io.BytesIO()
        with wave.open(buf, "wb") as clip:
            clip.setnchannels(1)
            clip.setsampwidth(2)
            clip.setframerate(int(rate))
            clip.writeframes(pcm.tobytes())
        return buf.getvalue()
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def to_base64_wav(audio: np.ndarray, rate: int) -> str:
    return base64.b64encode(encode_wav(audio, rate)).decode("ascii")


def write_wav_atomic(path: Path, audio: np.ndarray, rate: int) -> str:
    """Write a 16-bit WAV via a temporary file and rename, so a kill never leaves half a file.

    Returns the sha256 of the bytes written.
    """
    data = encode_wav(audio, rate)
    write_bytes_atomic(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def temporary_name(path: Path) -> Path:
    """``.<name>.<pid>.tmp`` beside ``path``: the pid lets a later start tell a dead writer's litter from a live one's."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling, fsync, rename; on failure remove the temporary and name the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        hint = " (disk full)" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise OSError(err.errno, f"cannot write {path}{hint}: {err.strerror or err}", str(path)) from err


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temporaries(folder: Path, recursive: bool = False) -> list[Path]:
    """Remove ``.<name>.<pid>.tmp`` files and folders left by writers that died (SIGKILL, disk full).

    Only temporaries whose pid is no longer running are removed: a concurrent writer's are left alone.
    Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if not match or _pid_alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


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


def leading_silence(audio: np.ndarray, rate: int, threshold_dbfs: float = SILENCE_DBFS) -> float | None:
    """Seconds before the first 30 ms frame whose RMS level reaches ``threshold_dbfs`` (the measure of
    ``silence_share``); None when no frame does (no speech to reach). A partial last frame counts."""
    mono = audio if audio.ndim == 1 else audio.mean(axis=-1)
    frame = max(1, int(rate * FRAME_SECONDS))
    n = -(-mono.size // frame)
    if n == 0:
        return None
    padded = np.zeros(n * frame, dtype=np.float64)
    padded[: mono.size] = mono
    rms = np.sqrt(np.mean(padded.reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-10)) >= threshold_dbfs)
    return None if loud.size == 0 else float(loud[0] * frame) / float(rate)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
