"""sha256 of large dataset files, remembered by (path, size, mtime_ns) so a resumed run does not re-hash them.

The archive of StepEval-Audio-360 is hashed for the extraction folder's name and for the manifest;
hashing it on every start (twice) was measurable. The cache is a small JSON beside the extraction
cache; a file whose size or modification time changed is hashed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stepeval.audio import file_sha256, temporary_name

CACHE_NAME = "hashes.json"


def _read(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache_file: Path, data: dict) -> None:
    """Best effort: a cache that cannot be written only costs a re-hash next time."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(cache_file)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache_file)
    except OSError:
        pass


def sha256(path: Path, cache_root: Path) -> str:
    """The file's sha256, from ``cache_root/hashes.json`` when its size and mtime_ns are unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cache_file = Path(cache_root) / CACHE_NAME
    data = _read(cache_file)
    entry = data.get(key)
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = file_sha256(path)
    data = _read(cache_file)  # another process may have added entries meanwhile
    data[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write(cache_file, data)
    return digest
