"""Extract ``audios.tar.gz`` once, safely, into a cache folder keyed by the archive's hash."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from stepeval.audio import file_sha256

COMPLETE_MARKER = ".complete"


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target, or is a link/device/fifo."""


def _why_unsafe(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if not (member.isfile() or member.isdir()):
        kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "device, fifo or other special file"
        return f"is a {kind}"
    if "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "has a Windows-style path"
    path = PurePosixPath(name)
    if path.is_absolute():
        return "has an absolute path"
    if ".." in path.parts:
        return "escapes the target folder with '..'"
    return None


def check_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Validate every member before anything is written; refuse the archive on the first bad one."""
    members = tar.getmembers()
    for member in members:
        reason = _why_unsafe(member)
        if reason:
            raise UnsafeArchiveError(f"refusing to extract {archive}: member {member.name!r} {reason}")
    return members


def extract_once(archive: Path, cache_root: Path) -> Path:
    """Extract ``archive`` under ``cache_root/<sha256 prefix>/`` unless already done.

    Extraction goes to a temporary sibling that is renamed into place only when complete,
    so an interrupted extraction is redone, never half-used.
    """
    archive = Path(archive)
    target = Path(cache_root) / file_sha256(archive)[:16]
    if (target / COMPLETE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = check_members(tar, archive)
            tmp.mkdir()
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters; members already vetted
                tar.extractall(tmp, members=members)
        (tmp / COMPLETE_MARKER).write_text(archive.name, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
