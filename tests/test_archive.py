"""audios.tar.gz is extracted once, safely: unsafe members refuse the whole archive, nothing escapes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from stepeval.data.archive import COMPLETE_MARKER, UnsafeArchiveError, extract_once


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
