"""What a column's values show: names matched to keys, audio-looking values, one profile per column or field.

Detection (``stepeval.data.detect``) settles each key from these profiles and records one line of
evidence per key in a ``Decision``; ``evidence_line`` is how that line is printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stepeval.data import chat
from stepeval.data.columns import NONE, ColumnSpec, SchemaError, first_value, get_path, is_list, nested_fields, split_path

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".aac")
AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3")
NAMES: dict[str, tuple[str, ...]] = {
    "conversation_id": (
        "conversation_id", "conv_id", "dialog_id", "dialogue_id", "session_id", "session", "conversation", "dialog",
        "dialogue", "chat_id", "thread_id", "episode_id", "sample_id", "id", "uid", "idx", "key", "对话id", "会话id", "编号",
    ),
    "turns": (
        "turns", "conversation", "conversations", "dialog", "dialogue", "messages", "history", "rounds", "utterances", "对话",
    ),
    "turn_index": (
        "turn_index", "turn_idx", "turn_id", "turn", "turn_no", "turn_number", "round", "round_id", "round_index",
        "t", "k", "step", "seq", "sequence", "position", "order", "index", "轮次", "轮",
    ),
    "audio": (
        "audio", "audio_path", "audio_file", "audio_filename", "wav", "wav_path", "speech", "speech_path", "path",
        "file", "filename", "question_audio", "query_audio", "input_audio", "user_audio", "音频", "语音",
    ),
    "text": (
        "text", "transcript", "transcription", "utterance", "query", "prompt", "question", "content", "asr",
        "sentence", "question_text", "query_text", "user_text", "value", "文本", "问题", "内容", "转写",
    ),
    "category": (
        "category", "categories", "task", "task_type", "capability", "type", "class", "domain", "scenario", "scene",
        "skill", "subject", "subset", "topic", "类别", "类型", "分类", "任务", "场景", "能力",
    ),
    "language": ("language", "lang", "locale", "dialect", "语言", "语种", "方言"),
    "role": ("role", "from", "speaker", "sender", "author", "角色", "说话人", "发言人"),
}  # fmt: skip
NOT_USER_SIDE = re.compile(r"(answer|reply|response|target|reference|output|assistant|回答|答案)", re.IGNORECASE)
PLACEHOLDER = "<column>"  # the guess for a key no column could fill
ID_WORD = re.compile(r"(^|[_\-\s.])(id|uid|idx|key)($|[_\-\s.])", re.IGNORECASE)


def name_rank(name: str, key: str) -> int | None:
    """0.. for an exact (case-insensitive) name match in list order, 100.. for a matching word (or its singular); else None."""
    lowered = name.strip().lower()
    names = NAMES[key]
    if lowered in names:
        return names.index(lowered)
    words = set(re.split(r"[\s_\-.:/#()（）\[\]]+", lowered))
    words |= {w[:-1] for w in words if len(w) > 3 and w.endswith("s")}  # question_audios, questions
    for position, entry in enumerate(names):
        if entry in words or (not entry.isascii() and entry in lowered):
            return 100 + position
    return None


def looks_like_audio(value: Any) -> bool:
    if isinstance(value, dict):
        return ("bytes" in value or "path" in value) and set(value) <= {"bytes", "path", "array", "sampling_rate"}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:4]).startswith(AUDIO_MAGIC)
    if isinstance(value, str):
        return value.strip().lower().split("?", 1)[0].endswith(AUDIO_SUFFIXES)
    return False


def present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


@dataclass
class Profile:
    """What one column's (or one turn field's) values look like; chat content parts count by their audio part."""

    name: str
    values: list[Any]
    nonnull: int = 0
    unique: int = 0
    audio_share: float = 0.0
    kind: str = "null"
    integer: bool = False
    example: str = ""

    @classmethod
    def of(cls, name: str, values: list[Any]) -> Profile:
        kept = [v for v in values if present(v)]
        profile = cls(name, values, nonnull=len(kept))
        if not kept:
            return profile
        sample = kept[0]
        profile.kind = (
            "audio" if isinstance(sample, dict) and looks_like_audio(sample)
            else "parts" if chat.is_parts(sample)
            else "struct" if isinstance(sample, dict)
            else "list" if is_list(sample)
            else "bytes" if isinstance(sample, (bytes, bytearray))
            else "number" if isinstance(sample, (int, float, np.integer, np.floating)) and not isinstance(sample, bool)
            else "str"
        )  # fmt: skip
        profile.audio_share = sum(looks_like_audio(chat.audio_of(v, decode=False)) for v in kept) / len(kept)
        if profile.kind in ("str", "number"):
            profile.unique = len({str(v) for v in kept})
            profile.integer = all(as_int(v) is not None for v in kept)
        profile.example = short(chat.audio_of(sample, decode=False) if profile.kind == "parts" else sample)
        return profile

    @property
    def scalar(self) -> bool:
        return self.kind in ("str", "number")


def as_int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) else None


def short(value: Any) -> str:
    if isinstance(value, dict) and looks_like_audio(value):
        if value.get("bytes") is None:
            return f"{{path: {value.get('path')!r}}}"
        return f"{{path: {value.get('path')!r}, bytes: {len(value.get('bytes') or b'')} B}}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Decision:
    """The value chosen for each key, the evidence line, the candidates; problems make detection fail."""

    columns: dict[str, str | None] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def settle(self, key: str, column: str | None, why: str) -> None:
        self.columns[key], self.evidence[key] = column, why

    def undecided(self, key: str, guess: str | None, why: str) -> None:
        self.columns[key] = guess
        self.evidence[key] = f"UNDECIDED: {why}"
        self.problems.append(f"{key}: {why}")


def evidence_line(key: str, value: str | None, why: str) -> str:
    """``key = value  (why)``, without repeating the value at the start of the evidence."""
    value = NONE if value is None else value
    for prefix in (f"{value}: ", f"{NONE}: "):
        if why.startswith(prefix):
            why = why[len(prefix) :]
    return f"{key} = {value}  ({why})" if why else f"{key} = {value}"


def groups_of(values: list[Any] | None) -> list[list[int]]:
    """Row positions grouped by value, in first-seen order."""
    order: dict[str, list[int]] = {}
    for position, value in enumerate(values or []):
        order.setdefault(str(value), []).append(position)
    return list(order.values())


def partition(groups: list[list[int]]) -> frozenset:
    return frozenset(tuple(g) for g in groups)


def consistent_index(groups: list[list[int]] | None, indices: list[Profile]) -> Profile | None:
    """The first turn-index column whose values never repeat within a group (None if there is none)."""
    for index in indices:
        if groups is not None and all(len({str(index.values[i]) for i in g}) == len(g) for g in groups):
            return index
    return None


def varies(profile: Profile, groups: list[list[int]] | None) -> bool:
    """A per-conversation label is constant within each conversation."""
    if groups is None:
        return False
    return any(len({str(profile.values[i]) for i in g}) > 1 for g in groups)


def top_values(profile: Profile, n: int = 4) -> str:
    counts = pd.Series([str(v) for v in profile.values if v is not None]).value_counts()
    shown = ", ".join(f"{k}: {v}" for k, v in counts.head(n).items())
    return shown + (", ..." if len(counts) > n else "")


class Table:
    """The rows being mapped, each column profiled once, and the decision being built."""

    def __init__(self, df: pd.DataFrame, spec: ColumnSpec, source: str):
        self.df, self.spec, self.source = df, spec, source
        self.names = [str(c) for c in df.columns]
        self.rows = len(df)
        self.top = {name: Profile.of(name, list(df[name])) for name in self.names}
        self.decision = Decision()
        self.memo: dict[Any, Any] = {}  # per-table results that several rules ask for (a list column's entries)

    def column_values(self, path: str) -> list[Any] | None:
        parts = split_path(path, self.names)
        if parts is None:
            return None
        return [get_path({parts[0]: v}, parts) for v in self.df[parts[0]]]

    def profile(self, path: str) -> Profile | None:
        if path in self.top:
            return self.top[path]
        values = self.column_values(path)
        return Profile.of(path, values) if values is not None else None

    def given(self, key: str) -> str | None:
        return getattr(self.spec, key)

    def check_given(self, key: str, value: str) -> Profile:
        profile = self.profile(value)
        if profile is None:
            raise SchemaError(
                f"{self.source}: dataset.columns.{key}={value!r} is not a column or a dotted path into one; "
                f"columns: {self.names}; nested fields: {nested_fields(self.df) or 'none'}"
            )
        return profile

    def given_or(self, key: str, taken: set[str]) -> bool:
        """Settle ``key`` from the spec if the user gave it; True when given."""
        value = self.given(key)
        if value is None:
            return False
        if value == NONE:
            self.decision.settle(key, None, "given: none")
            return True
        self.check_given(key, value)
        self.decision.settle(key, value, "given")
        taken.add(value)
        return True

    def all_scalar_paths(self) -> dict[str, Profile]:
        """Top-level scalar columns and scalar fields one level into struct columns (meta.category)."""
        out = {n: p for n, p in self.top.items() if p.scalar or p.kind == "null"}
        for name, p in self.top.items():
            if p.kind == "struct":
                for key in first_value(self.df[name]):
                    sub = self.profile(f"{name}.{key}")
                    if sub is not None and sub.scalar:
                        out[sub.name] = sub
        return out


def by_name(key: str, profiles: dict[str, Profile], taken: set[str]) -> list[tuple[int, Profile]]:
    """Profiles whose (last) name matches ``key``, best first."""
    ranked = [(name_rank(p.name.split(".")[-1], key), p) for p in profiles.values() if p.name not in taken]
    return sorted(((r, p) for r, p in ranked if r is not None), key=lambda item: item[0])
