"""The run store: one folder per run, append-only records per stage, fingerprints, manifest.

A record's key is (conversation id, turn) within a stage's log, and it carries the
fingerprint of everything that produced it. A stage recomputes exactly the keys whose
stored fingerprint differs from the current one (or that failed), so resume, caching and
re-scoring without regenerating are one mechanism.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stepeval.audio import write_bytes_atomic

Key = tuple[str, int]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-serialisable parts (config sections, input hashes...)."""
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()[:16]


def safe_name(name: str) -> str:
    """A file-system-safe form of an id (conversation ids may hold slashes or spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "_"
    if cleaned != name:
        cleaned = f"{cleaned}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return cleaned


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room for what is being written: the next write fails too


def storage_error(err: OSError, path: Path) -> OSError:
    """``err`` (a bare "[Errno 28] No space left on device" from a write) with the path it failed on."""
    hint = " (disk full)" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return OSError(err.errno, f"cannot write {path}{hint}: {err.strerror or err}", str(path))


def write_json_atomic(path: Path, value: Any) -> None:
    """Via a temporary sibling and a rename; on failure the temporary is removed and the error names ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(err, path) from err


def load_manifest(run_dir: Path) -> dict:
    """A run folder's manifest ({} when it has none yet); a corrupt one is an error naming the file."""
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


class RecordLog:
    """Append-only JSON Lines file of one stage. Each append is flushed and fsynced, so a
    kill loses at most the record being written; a torn last line is ignored on load."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def load_all(self) -> list[dict]:
        """Every complete record, in file order (a log keeps every version of a key: it is also a cache)."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        complete = lines[:-1]  # anything after the last newline is a torn write
        records = []
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{number}: corrupt record ({err})") from err
        return records

    def load(self) -> dict[Key, dict]:
        """The latest record of each key."""
        return {(r["conversation_id"], int(r["turn"])): r for r in self.load_all()}

    def index(self) -> RecordIndex:
        return RecordIndex(self.load_all())

    def _drop_torn_tail(self) -> None:
        """Cut a half-written last line (left by a kill) before appending after it."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict) -> None:
        self.append_many([record])

    def append_many(self, records: list[dict]) -> None:
        """Write records and make them durable with one fsync (group commit)."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._drop_torn_tail()
            self._fh = open(self.path, "ab")
        end = self._fh.tell()
        try:
            self._fh.write(b"".join(canonical_json(r).encode("utf-8") + b"\n" for r in records))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as err:  # a full disk: no half line is left for the next append to write after
            self._discard_after(end)
            raise storage_error(err, self.path) from err

    def _discard_after(self, end: int) -> None:
        """Close the log, cutting what a failed append left after ``end`` (best effort: the next open cuts a torn tail)."""
        fh, self._fh = self._fh, None
        try:
            fh.close()  # flushes what is still buffered, or fails to: either way the file is cut below
        except OSError:
            pass
        try:
            os.truncate(self.path, end)
        except OSError:
            pass

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class RecordIndex:
    """A log's records findable by (key, fingerprint): the latest record written for each pair.

    Looking up by fingerprint, not just by key, is what makes the log a cache: switching back to an
    earlier judge, rubric or ASR finds the records made with it."""

    def __init__(self, records: list[dict]):
        self._by_fingerprint: dict[tuple[Key, str], dict] = {}
        for record in records:
            key = (record["conversation_id"], int(record["turn"]))
            self._by_fingerprint[(key, record.get("fingerprint", ""))] = record

    def get(self, key: Key, fingerprint: str) -> dict | None:
        return self._by_fingerprint.get((key, fingerprint))

    def __len__(self) -> int:
        return len(self._by_fingerprint)


class GroupCommitter:
    """Appends records from many coroutines to one log off the event loop, batching whatever
    arrives while an fsync is in progress into the next one. ``await append(r)`` returns only
    once ``r`` is durable, so a turn is on disk before its conversation moves on.

    A record may bring files it points to (a reply's audio): they are written (temporary, fsync,
    rename) in the same trip to the writer thread, before the batch's records, so a durable record
    never names a file that is not. One thread hop per batch, not one per file. A record whose files
    cannot be written is left out and its waiter gets the error; the rest of the batch is written."""

    def __init__(self, log: RecordLog):
        self.log = log
        self._pending: list[tuple[dict, Sequence[tuple[Path, bytes]], asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def append(self, record: dict, files: Sequence[tuple[Path, bytes]] = ()) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((record, files, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await future

    def _write(self, batch: list) -> list[OSError | None]:
        """Each entry's files, then the records whose files are in place; per entry, why it was left out."""
        outcomes: list[OSError | None] = []
        for _, files, _ in batch:
            try:
                for path, data in files:
                    write_bytes_atomic(path, data)
                outcomes.append(None)
            except OSError as err:
                outcomes.append(err)
        self.log.append_many([record for (record, _, _), err in zip(batch, outcomes, strict=True) if err is None])
        return outcomes

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await asyncio.to_thread(self._write, batch)
            except Exception as err:  # the log itself failed: every waiter learns that its record was not written
                outcomes = [err] * len(batch)
            for (_, _, future), err in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if err is None:
                    future.set_result(None)
                else:
                    future.set_exception(err)


class RunStore:
    """``results/<run name>/``: manifest.json, records/<stage>.jsonl, audio/, summary, table."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._logs: dict[str, RecordLog] = {}
        self._lock_fh = None

    def __enter__(self) -> RunStore:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.root / ".lock", "w")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"run folder {self.root} is in use by another stepeval process") from None
        return self

    def __exit__(self, *exc: object) -> None:
        for log in self._logs.values():
            log.close()
        if self._lock_fh is not None:
            self._lock_fh.close()

    def log(self, stage: str) -> RecordLog:
        if stage not in self._logs:
            self._logs[stage] = RecordLog(self.root / "records" / f"{stage}.jsonl")
        return self._logs[stage]

    def reply_audio_path(self, conversation_id: str, turn: int) -> Path:
        return self.root / "audio" / safe_name(conversation_id) / f"turn_{turn}.wav"

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def read_manifest(self) -> dict:
        return load_manifest(self.root)

    def write_manifest(self, manifest: dict) -> None:
        write_json_atomic(self.manifest_path, manifest)

    def write_manifest_in_place(self, manifest: dict) -> None:
        """Overwrite manifest.json without a temporary: for a full disk, where the file's own blocks are all the room
        there is. Compact JSON, so the failed status usually fits where the running one was."""
        data = (json.dumps(manifest, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        try:
            with open(self.manifest_path, "r+b") as fh:
                fh.write(data)
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            raise storage_error(err, self.manifest_path) from err


def iter_records(path: Path) -> Iterator[dict]:
    """Records of a finished log, in file order (for reports and tests)."""
    yield from RecordLog(path).load().values()
