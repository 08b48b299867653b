"""audios.tar.gz is extracted once, safely: unsafe members refuse the whole archive, nothing escapes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from stepeval.data import hashcache
from stepeval.data.archive import COMPLETE_MARKER, ArchiveError, UnsafeArchiveError, extract_once
from stepeval.data.sources import SAMPLE_DIR

SAMPLE_PARQUET = SAMPLE_DIR / "data" / "sample.parquet"


def _archive(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"RIFF") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            if info.isfile():
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_file("../escape.wav"), "escapes the target folder"),
        (_file("audios/../../escape.wav"), "escapes the target folder"),
        (_file("/tmp/absolute.wav"), "absolute path"),
        (_link("audios/link.wav", "/etc/passwd", tarfile.SYMTYPE), "symbolic link"),
        (_link("audios/hard.wav", "audios/ok.wav", tarfile.LNKTYPE), "hard link"),
        (_device("audios/dev"), "device"),
    ],
)
def test_unsafe_member_refuses_archive_and_writes_nothing(tmp_path: Path, bad: tarfile.TarInfo, reason: str):
    archive = _archive(tmp_path / "audios.tar.gz", [_file("audios/ok.wav"), bad])
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(UnsafeArchiveError) as caught:
        extract_once(archive, cache)
    message = str(caught.value)
    assert repr(bad.name) in message and reason in message and str(archive) in message
    # nothing extracted: not the safe member, not the escapee, no temp folder left behind (the hash cache is not a member)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != archive and p.name != "hashes.json"]
    assert written == []
    assert not (tmp_path / "deep" / "escape.wav").exists()


def test_extraction_is_idempotent_and_keyed_by_content(tmp_path: Path):
    archive = _archive(tmp_path / "a.tar.gz", [_file("audios/x/turn_0.wav")])
    first = extract_once(archive, tmp_path / "cache")
    assert (first / "audios" / "x" / "turn_0.wav").read_bytes() == b"RIFF"
    assert (first / COMPLETE_MARKER).exists()
    (first / "audios" / "x" / "turn_0.wav").write_bytes(b"touched")  # a second call must not re-extract
    assert extract_once(archive, tmp_path / "cache") == first
    assert (first / "audios" / "x" / "turn_0.wav").read_bytes() == b"touched"
    other = _archive(tmp_path / "b.tar.gz", [_file("audios/x/turn_0.wav")], payload=b"OTHER")
    assert extract_once(other, tmp_path / "cache") != first


def test_interrupted_extraction_is_redone(tmp_path: Path):
    archive = _archive(tmp_path / "a.tar.gz", [_file("audios/one.wav")])
    target = extract_once(archive, tmp_path / "cache")
    (target / COMPLETE_MARKER).unlink()  # as if killed before the marker was written
    (target / "audios" / "one.wav").unlink()
    assert extract_once(archive, tmp_path / "cache") == target
    assert (target / "audios" / "one.wav").exists()


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _sample_archive_bytes() -> bytes:
    return (SAMPLE_DIR / "audios.tar.gz").read_bytes()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (lambda data: data[: len(data) // 3], "is truncated"),
        (lambda data: b"<html>rate limited</html>" * 40, "not a readable tar archive"),
    ],
)
def test_truncated_or_garbage_archive_is_one_line_naming_the_file(tmp_path: Path, content, said: str):
    archive = tmp_path / "audios.tar.gz"
    archive.write_bytes(content(_sample_archive_bytes()))
    with pytest.raises(ArchiveError) as caught:
        extract_once(archive, tmp_path / "cache" / "audio")
    assert str(archive) in str(caught.value) and said in str(caught.value)
    assert not list((tmp_path / "cache" / "audio").glob(".*.tmp"))  # no half extraction left
    # the same through `stepeval data inspect`: one line, no traceback
    root = tmp_path / "dataset"
    (root / "data").mkdir(parents=True)
    shutil.copy(SAMPLE_PARQUET, root / "data" / "train.parquet")
    shutil.copy(archive, root / "audios.tar.gz")
    result = subprocess.run(
        [sys.executable, "-m", "stepeval.cli", "data", "inspect", str(root), "--cache-dir", str(tmp_path / "c2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and said in result.stderr and "audios.tar.gz" in result.stderr


def test_stale_extraction_temporaries_of_dead_processes_are_removed(tmp_path: Path):
    archive = _archive(tmp_path / "a.tar.gz", [_file("audios/one.wav")])
    cache = tmp_path / "cache" / "audio"
    dead = cache / f".0123456789abcdef.{_dead_pid()}.tmp"  # as left by a SIGKILL during extraction
    alive = cache / f".fedcba9876543210.{os.getppid()}.tmp"  # a concurrent extraction still running
    for folder in (dead, alive):
        (folder / "audios").mkdir(parents=True)
        (folder / "audios" / "partial.wav").write_bytes(b"RIFF" * 1000)
    target = extract_once(archive, cache)
    assert (target / "audios" / "one.wav").exists()
    assert not dead.exists() and alive.exists()


def test_archive_hash_is_remembered_by_size_and_mtime(tmp_path: Path):
    archive = _archive(tmp_path / "a.tar.gz", [_file("audios/one.wav")])
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert hashcache.sha256(archive, tmp_path) == digest
    stat = archive.stat()
    # same size, same mtime, other bytes: the remembered hash is used (nothing re-read)
    archive.write_bytes(bytes(b ^ 0xFF for b in archive.read_bytes()))
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hashcache.sha256(archive, tmp_path) == digest
    # a new mtime: hashed again
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert hashcache.sha256(archive, tmp_path) == hashlib.sha256(archive.read_bytes()).hexdigest() != digest
    entry = json.loads((tmp_path / hashcache.CACHE_NAME).read_text())[str(archive.resolve())]
    assert entry["size"] == stat.st_size
