"""Extract ``audios.tar.gz`` once, safely, into a cache folder keyed by the archive's hash."""

from __future__ import annotations

import errno
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from stepeval.audio import clean_stale_temporaries, temporary_name
from stepeval.data import hashcache

COMPLETE_MARKER = ".complete"


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target, or is a link/device/fifo."""


class ArchiveError(ValueError):
    """The archive cannot be read (truncated download, not a tar.gz): one line naming the file."""


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


def _unreadable(archive: Path, err: BaseException) -> ArchiveError:
    size = archive.stat().st_size if archive.exists() else 0
    if isinstance(err, EOFError):
        what = "is truncated (the compressed stream ends early)"
    elif isinstance(err, (zlib.error, OSError)) and not isinstance(err, tarfile.TarError):
        what = f"is damaged ({' '.join(str(err).split())})"
    else:  # tarfile's ReadError lists every method it tried over several lines: keep it to one
        detail = " ".join(str(err).split())
        what = f"is not a readable tar archive ({detail[:160]})"
    return ArchiveError(f"{archive} ({size} bytes) {what}: download it again (git lfs pull, or delete it from the hub cache)")


def extract_once(archive: Path, cache_root: Path, hash_cache: Path | None = None) -> Path:
    """Extract ``archive`` under ``cache_root/<sha256 prefix>/`` unless already done.

    Extraction goes to a temporary sibling that is renamed into place only when complete,
    so an interrupted extraction is redone, never half-used; temporaries of extractions whose
    process died (SIGKILL) are removed on the next start. The archive's hash is remembered in
    ``hash_cache`` (default: ``cache_root``'s parent) by size and mtime.
    """
    archive = Path(archive)
    cache_root = Path(cache_root)
    target = cache_root / hashcache.sha256(archive, hash_cache or cache_root.parent)[:16]
    if (target / COMPLETE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target.parent)
    tmp = temporary_name(target)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = check_members(tar, archive)
                tmp.mkdir()
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters; members already vetted
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, zlib.error) as err:
            raise _unreadable(archive, err) from err
        except OSError as err:
            if err.errno is None:  # gzip.BadGzipFile: the archive, not the disk
                raise _unreadable(archive, err) from err
            full = " (disk full)" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise OSError(err.errno, f"cannot extract {archive} into {tmp}{full}: {err.strerror or err}") from err
        (tmp / COMPLETE_MARKER).write_text(archive.name, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
