"""Turn dataset files into ``Conversation`` objects whose audio references all resolve."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stepeval.audio import write_bytes_atomic
from stepeval.data.archive import COMPLETE_MARKER, extract_once
from stepeval.data.columns import ColumnSpec, Mapping, RawConversation, describe_columns, to_conversations
from stepeval.data.detect import detect
from stepeval.data.sources import DatasetFiles, default_cache_dir, resolve
from stepeval.types import Conversation, UserTurn

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm"}
LANGUAGE_ALIASES = {
    "zh": ("zh", "zh-cn", "zh_cn", "cn", "chinese", "mandarin", "中文", "普通话", "汉语"),
    "yue": ("yue", "cantonese", "粤语", "廣東話", "zh-hk"),
    "zh-sichuan": ("sichuanese", "sichuan", "四川话"),
    "en": ("en", "en-us", "en_us", "english", "英文", "英语"),
    "ja": ("ja", "jp", "japanese", "日语", "日文", "日本語"),
}
_ALIAS = {alias: code for code, aliases in LANGUAGE_ALIASES.items() for alias in aliases}


def normalise_language(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip().lower()
    return _ALIAS.get(key, key)


def detect_language(texts: list[str | None]) -> str:
    """Script-based guess used only when the dataset has no language column."""
    joined = "".join(t for t in texts if t)
    if re.search(r"[\u3040-\u30ff]", joined):
        return "ja"
    if re.search(r"[\u4e00-\u9fff]", joined):
        return "zh"
    return "en" if re.search(r"[A-Za-z]", joined) else "unknown"


class OutsidePath(ValueError):
    """An audio reference that would open a file outside the dataset's folder (dataset.allow_outside_paths)."""


class AudioIndex:
    """Finds an audio reference among the dataset's files: by path, path minus its top folder, or name.

    A file that lies outside ``allowed`` (a symlink out of the folder, an absolute path, ``..``) is refused
    with ``OutsidePath`` unless ``allow_outside``; a reference that matches a file inside by name still does.
    """

    def __init__(
        self,
        roots: list[Path],
        spill_dir: Path,
        allowed: list[Path] | None = None,
        allow_outside: bool = False,
        bases: list[Path] | None = None,
    ):
        self.by_path: dict[str, Path] = {}
        self.by_name: dict[str, list[Path]] = {}
        self.spill_dir = spill_dir
        self.allowed = [p.resolve() for p in (allowed if allowed is not None else roots)]
        self.allow_outside = allow_outside
        self.bases = [p.resolve() for p in (bases or roots)]  # folders a relative ``..`` reference starts from
        for root in roots:
            for path in root.rglob("*"):
                if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                    rel = path.relative_to(root).as_posix()
                    self.by_path.setdefault(rel, path)
                    self.by_path.setdefault(rel.split("/", 1)[-1], path)
                    self.by_name.setdefault(path.name, []).append(path)
                    self.by_name.setdefault(path.stem, []).append(path)

    def inside(self, path: Path) -> bool:
        real = path.resolve()
        return any(real.is_relative_to(root) for root in self.allowed)

    def resolve(self, ref: Any) -> Path | None:
        if isinstance(ref, dict):  # Hugging Face Audio feature: {"bytes": ..., "path": ...}
            if ref.get("bytes"):
                return self._spill(ref["bytes"], ref.get("path") or "audio.wav")
            ref = ref.get("path")
        if isinstance(ref, (bytes, bytearray)):
            return self._spill(bytes(ref), "audio.wav")
        if not ref:
            return None
        raw = str(ref).replace("\\", "/")
        direct = [Path(raw)] if raw.startswith("/") else [base / raw for base in self.bases]
        for path in direct:  # ``../audio/x.wav`` from data/, resolved: inside the folder is fine
            if path.is_file() and self.inside(path):
                return path
        found = self._lookup(raw.lstrip("./"))
        if found is not None:
            return self._checked(ref, found)
        outside = next((p for p in direct if p.is_file()), None)
        return self._checked(ref, outside) if outside is not None else None

    def _lookup(self, text: str) -> Path | None:
        for candidate in (text, text.split("/", 1)[-1]):
            if candidate in self.by_path:
                return self.by_path[candidate]
        for name in (Path(text).name, Path(text).stem):
            hits = self.by_name.get(name, [])
            if len(set(hits)) == 1:
                return hits[0]
        return None

    def _checked(self, ref: Any, path: Path) -> Path:
        if self.allow_outside or self.inside(path):
            return path
        raise OutsidePath(f"{ref!r} opens {path.resolve()}")

    def _spill(self, data: bytes, name: str) -> Path:
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = self.spill_dir / f"{digest}{Path(name).suffix or '.wav'}"
        if not path.exists():
            write_bytes_atomic(path, data)
        return path


@dataclass
class LoadedDataset:
    conversations: list[Conversation]
    mapping: Mapping
    files: DatasetFiles
    columns: str
    rows: int
    unresolved: list[tuple[str, int, str]] = field(default_factory=list)
    audio_dir: Path | None = None  # where the archive was extracted (None: no archive)

    def counts(self, attribute: str) -> Counter:
        return Counter(getattr(c, attribute) for c in self.conversations)


def read_table(files: DatasetFiles) -> pd.DataFrame:
    """The rows: already read through ``datasets`` (hub, packaged), or the parquet files of a local clone."""
    if files.table is not None:
        return files.table
    frames = []
    for path in files.parquet:
        kind = "JSON Lines" if path.suffix == ".jsonl" else "parquet"
        try:  # JSON Lines values kept as written: "1".."11" stay strings, chat content stays str or list of parts
            frames.append(pd.read_json(path, lines=True, dtype=False) if kind != "parquet" else pd.read_parquet(path))
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"cannot read {kind} file {path}: {err}") from err
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def source_label(files: DatasetFiles) -> str:
    return ", ".join(str(p) for p in files.parquet) or str(files.root)


def load(
    files: DatasetFiles,
    spec: ColumnSpec | None = None,
    cache_dir: Path | None = None,
    strict: bool = True,
    limit: int | None = None,
    allow_outside_paths: bool = False,
) -> LoadedDataset:
    """Load conversations; with ``strict`` an unresolved audio reference is an error naming it.

    A reference to a file outside the dataset's folder (a symlink out of it, an absolute path, ``..``) is
    an error naming the row, field and path, strict or not, unless ``allow_outside_paths``.

    ``cache_dir`` is stepeval's cache (default ``$STEPEVAL_CACHE`` or ``~/.cache/stepeval``): the archive
    is extracted into ``<cache_dir>/audio/<hash>/``, embedded audio bytes go to ``<cache_dir>/embedded-audio/``.
    """
    spec = spec or ColumnSpec()
    cache = Path(cache_dir) if cache_dir else (files.cache_dir or default_cache_dir())
    files.cache_dir = cache
    df = read_table(files)
    source = source_label(files)
    mapping = detect(df, spec, source)
    raw = to_conversations(df, mapping, source)
    roots = [files.root]
    audio_dir = None
    if files.archive is not None:
        audio_dir = extract_once(files.archive, cache / "audio", hash_cache=cache)
        roots.insert(0, audio_dir)
    allowed = [*roots, cache / "embedded-audio"]
    if files.provenance.get("kind") == "hub":  # a hub snapshot's files are links into the repo's blobs/
        allowed.append(files.root.resolve().parent.parent)
    bases = [files.root, *dict.fromkeys(p.parent for p in files.parquet)]
    index = AudioIndex(roots, cache / "embedded-audio", allowed, allow_outside_paths, bases)
    conversations, unresolved, outside = [], [], []
    for item in raw[:limit] if limit else raw:
        conv, missing = _build(item, index, outside)
        unresolved.extend(missing)
        if conv is not None:
            conversations.append(conv)
    if outside:
        raise OutsidePath(
            f"{len(outside)} audio reference(s) in {source} leave the dataset folder {files.root}: "
            f"{'; '.join(outside[:5])}. Set dataset.allow_outside_paths=true to read them "
            "(stepeval data inspect: --allow-outside-paths)"
        )
    if strict and unresolved:
        shown = "; ".join(f"{c} turn {t}: {r!r}" for c, t, r in unresolved[:5])
        raise FileNotFoundError(
            f"{len(unresolved)} audio reference(s) in {source} do not resolve to a file "
            f"(searched {', '.join(map(str, roots))}): {shown}. Run `stepeval data inspect` for the full list."
        )
    ids = Counter(c.id for c in conversations)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:  # the row layout refuses them before; here e.g. a turn-layout id that is also a row number
        raise ValueError(f"{source}: duplicate conversation ids {dupes[:5]}; set dataset.columns.conversation_id")
    return LoadedDataset(conversations, mapping, files, describe_columns(df), len(df), unresolved, audio_dir)


def load_configured(dataset: dict, limit: int | None = None, strict: bool = True) -> LoadedDataset:
    """Load from a ``dataset`` config section (a plain dict: source, repo_id, local_dir, revision, split,
    cache_dir, columns, allow_outside_paths), as ``stepeval run`` and ``stepeval report`` do."""
    source = str(getattr(dataset.get("source"), "value", dataset.get("source")) or "sample")
    location = dataset.get("local_dir") if source == "local" else dataset.get("repo_id")
    cache = Path(dataset["cache_dir"]).expanduser() if dataset.get("cache_dir") else None
    files = resolve(source, location, dataset.get("revision"), split=dataset.get("split"), cache_dir=cache)
    spec = ColumnSpec.from_mapping(dataset.get("columns"))
    allow = bool(dataset.get("allow_outside_paths"))
    return load(files, spec, cache_dir=cache, strict=strict, limit=limit, allow_outside_paths=allow)


def _build(
    item: RawConversation, index: AudioIndex, outside: list[str]
) -> tuple[Conversation | None, list[tuple[str, int, str]]]:
    turns, missing = [], []
    for number, raw_turn in enumerate(item.turns):
        try:
            path = index.resolve(raw_turn.audio_ref)
        except OutsidePath as err:
            outside.append(f"row {raw_turn.row} {raw_turn.field or 'audio'} ({item.id} turn {number}): {err}")
            continue
        if path is None:
            shown = raw_turn.audio_ref.get("path") if isinstance(raw_turn.audio_ref, dict) else raw_turn.audio_ref
            missing.append((item.id, number, str(shown)))
            continue
        turns.append(UserTurn(index=number, audio_path=path, text=raw_turn.text))
    if missing or not turns:
        return None, missing
    language = normalise_language(item.language)
    source = "dataset"
    if language is None:
        language, source = detect_language([t.text for t in turns]), "detected"
    conv = Conversation(item.id, item.category or "unknown", language, tuple(turns), language_source=source)
    return conv, missing


__all__ = ["COMPLETE_MARKER", "LoadedDataset", "OutsidePath", "load", "load_configured", "normalise_language", "read_table"]
