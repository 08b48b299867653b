"""Damaged user audio is named, never sent: non-finite samples, a WAV whose data is shorter than its header says.
Temporaries of dead writers are cleaned; a failed write names the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from stepeval import audio

RATE = 16000


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _nan_wav(path: Path) -> Path:
    samples = _tone(1.0)
    samples[100], samples[200] = np.nan, np.inf
    sf.write(path, samples, RATE, subtype="FLOAT")
    return path


def _cut_wav(path: Path) -> Path:
    """3.84 s of 16-bit mono, the data chunk cut to its first third (1.28 s) with the header left as it was."""
    sf.write(path, _tone(3.84), RATE, subtype="PCM_16")
    data_bytes = 61440 * 2
    header = path.stat().st_size - data_bytes
    with open(path, "r+b") as fh:
        fh.truncate(header + data_bytes // 3)
    return path


def test_non_finite_samples_are_unusable(tmp_path: Path):
    path = _nan_wav(tmp_path / "nan.wav")
    with pytest.raises(audio.UnusableAudio) as caught:
        audio.read_checked(path)
    assert str(path) in str(caught.value) and "2 non-finite sample(s)" in str(caught.value)


def test_wav_shorter_than_its_header_is_unusable(tmp_path: Path):
    path = _cut_wav(tmp_path / "cut.wav")
    assert sf.info(str(path)).duration == pytest.approx(1.28)  # what a plain decoder would send
    with pytest.raises(audio.UnusableAudio) as caught:
        audio.read_checked(path)
    assert "header declares 3.84 s of audio but the file holds 1.28 s" in str(caught.value) and str(path) in str(caught.value)


def test_intact_audio_reads(tmp_path: Path):
    path = tmp_path / "ok.wav"
    sf.write(path, _tone(2.0), RATE, subtype="PCM_16")
    samples, rate = audio.read_checked(path, rate=8000)
    assert rate == 8000 and samples.size == 16000


def test_inspect_reports_damaged_audio_and_fails(tmp_path: Path):
    root = tmp_path / "dataset"
    (root / "data").mkdir(parents=True)
    _nan_wav(root / "nan.wav")
    _cut_wav(root / "cut.wav")
    sf.write(root / "ok.wav", _tone(1.0), RATE)
    rows = [
        {"conversation_id": f"c{i}", "turn_index": 0, "audio": name} for i, name in enumerate(["ok.wav", "nan.wav", "cut.wav"])
    ]
    pd.DataFrame(rows).to_parquet(root / "data" / "test.parquet")
    result = subprocess.run(
        [sys.executable, "-m", "stepeval.cli", "data", "inspect", str(root), "dataset.columns.conversation_id=conversation_id"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "unusable audio files: 2" in result.stdout
    assert "c1 turn 0:" in result.stdout and "non-finite" in result.stdout
    assert "c2 turn 0:" in result.stdout and "header declares 3.84 s" in result.stdout


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_stale_write_temporaries_of_dead_pids_are_cleaned(tmp_path: Path):
    dead = tmp_path / "c1" / f".turn_0.wav.{_dead_pid()}.tmp"
    live = tmp_path / "c1" / f".turn_1.wav.{os.getpid()}.tmp"
    other = tmp_path / "c1" / "turn_0.wav"
    for path in (dead, live, other):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    assert audio.clean_stale_temporaries(tmp_path, recursive=True) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


def test_failed_write_names_the_path_and_leaves_no_temporary(tmp_path: Path):
    """A file-size limit makes the write fail for real (as a full disk does), in a child process."""
    target = tmp_path / "run" / "turn_0.wav"
    code = (
        "import resource, signal, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from stepeval import audio\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        f"    audio.write_wav_atomic(Path({str(target)!r}), np.zeros(16000, dtype=np.float32), 16000)\n"
        "except OSError as err:\n"
        "    print(err); sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert f"cannot write {target}" in result.stdout
    assert list(target.parent.iterdir()) == []
