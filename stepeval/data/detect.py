"""Evidence-based column detection: every key is settled by what its values show, or the mapping fails.

Names alone are weak (``id`` may be per row, ``type`` may be free text), so each candidate is checked
against its values: audio columns hold audio references, a conversation id groups rows into
conversations whose turn indices do not repeat, a category column yields categories. When a key
cannot be settled the error lists the candidates for every key and the full mapping as one line
that both ``stepeval data inspect`` and ``stepeval run`` take.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stepeval.data.columns import (
    CONFIG_KEYS,
    NONE,
    USER_ROLES,
    ColumnSpec,
    DatasetEmpty,
    Mapping,
    SchemaError,
    describe_columns,
    first_value,
    get_path,
    is_list,
    nested_fields,
    overrides_line,
    split_path,
    text_value,
)

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
        "t", "k", "step", "position", "order", "index", "轮次", "轮",
    ),
    "audio": (
        "audio", "audio_path", "audio_file", "audio_filename", "wav", "wav_path", "speech", "speech_path", "path",
        "file", "filename", "question_audio", "query_audio", "input_audio", "user_audio", "音频", "语音",
    ),
    "text": (
        "text", "transcript", "transcription", "utterance", "query", "prompt", "question", "content", "asr",
        "sentence", "question_text", "query_text", "user_text", "文本", "问题", "内容", "转写",
    ),
    "category": (
        "category", "categories", "task", "task_type", "capability", "type", "class", "domain", "scenario", "scene",
        "skill", "subject", "subset", "topic", "类别", "类型", "分类", "任务", "场景", "能力",
    ),
    "language": ("language", "lang", "locale", "dialect", "语言", "语种", "方言"),
    "role": ("role", "speaker", "from"),
}  # fmt: skip
NOT_USER_SIDE = re.compile(r"(answer|reply|response|target|reference|output|assistant|回答|答案)", re.IGNORECASE)
REQUIRED = ("audio",)
_ID_WORD = re.compile(r"(^|[_\-\s.])(id|uid|idx|key)($|[_\-\s.])", re.IGNORECASE)


def name_rank(name: str, key: str) -> int | None:
    """0.. for an exact (case-insensitive) name match in list order, 100.. for a matching word in the name; None if neither."""
    lowered = name.strip().lower()
    names = NAMES[key]
    if lowered in names:
        return names.index(lowered)
    words = set(re.split(r"[\s_\-.:/]+", lowered))
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


@dataclass
class Profile:
    """What one column's (or one turn field's) values look like."""

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
        present = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
        profile = cls(name, values, nonnull=len(present))
        if not present:
            return profile
        sample = present[0]
        profile.kind = (
            "audio" if isinstance(sample, dict) and looks_like_audio(sample)
            else "struct" if isinstance(sample, dict)
            else "list" if is_list(sample)
            else "bytes" if isinstance(sample, (bytes, bytearray))
            else "number" if isinstance(sample, (int, float, np.integer, np.floating)) and not isinstance(sample, bool)
            else "str"
        )  # fmt: skip
        profile.audio_share = sum(map(looks_like_audio, present)) / len(present)
        if profile.kind in ("str", "number"):
            profile.unique = len({str(v) for v in present})
            profile.integer = all(_as_int(v) is not None for v in present)
        profile.example = _short(sample)
        return profile

    @property
    def scalar(self) -> bool:
        return self.kind in ("str", "number")


def _as_int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) else None


def _short(value: Any) -> str:
    if isinstance(value, dict) and looks_like_audio(value):
        return f"{{path: {value.get('path')!r}, bytes: {len(value.get('bytes') or b'')} B}}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Decision:
    columns: dict[str, str | None] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    role: str | None = None

    def settle(self, key: str, column: str | None, why: str) -> None:
        self.columns[key], self.evidence[key] = column, why

    def undecided(self, key: str, guess: str | None, why: str) -> None:
        self.columns[key] = guess
        self.evidence[key] = f"UNDECIDED: {why}"
        self.problems.append(f"{key}: {why}")


class Detector:
    def __init__(self, df: pd.DataFrame, spec: ColumnSpec, source: str):
        self.df, self.spec, self.source = df, spec, source
        self.names = [str(c) for c in df.columns]
        self.rows = len(df)
        self.top = {name: Profile.of(name, list(df[name])) for name in self.names}
        self.decision = Decision()

    # -- helpers --------------------------------------------------------------------------------

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

    def by_name(self, key: str, profiles: dict[str, Profile], taken: set[str]) -> list[tuple[int, Profile]]:
        ranked = [(name_rank(p.name.split(".")[-1], key), p) for p in profiles.values() if p.name not in taken]
        return sorted(((r, p) for r, p in ranked if r is not None), key=lambda item: item[0])

    # -- layout ---------------------------------------------------------------------------------

    def list_columns(self) -> list[tuple[str, str]]:
        """(column, why) for list columns whose entries hold audio (structs with an audio field, or audio refs)."""
        found = []
        for name, profile in self.top.items():
            if profile.kind != "list":
                continue
            items = [i for row in profile.values if is_list(row) for i in row][:500]
            if not items:
                continue
            if isinstance(items[0], dict):
                dicts = [i for i in items if isinstance(i, dict)]
                fields = set(dict.fromkeys(k for i in dicts for k in i))
                audio = [f for f in fields if Profile.of(f, [i.get(f) for i in dicts]).audio_share >= 0.8]
                if audio:
                    found.append(
                        (name, f"list of structs{{{', '.join(sorted(fields))}}}; field {', '.join(sorted(audio))} holds audio")
                    )
                elif looks_like_audio(items[0]):
                    found.append((name, "list of audio structs"))
            elif Profile.of(name, items).audio_share >= 0.8:
                found.append((name, f"list of audio references (e.g. {_short(items[0])})"))
        return found

    def audio_columns(self, taken: set[str] = frozenset()) -> list[Profile]:
        return [p for p in self.top.values() if p.audio_share >= 0.8 and p.name not in taken]

    def layout(self) -> str:
        spec = self.spec
        if spec.layout != "auto":
            self.decision.evidence["layout"] = "given"
            return spec.layout
        if spec.turns not in (None, NONE):
            self.decision.evidence["layout"] = f"given turns={spec.turns}"
            return "conversation"
        lists, flat = self.list_columns(), self.audio_columns()
        if spec.audio and spec.audio != NONE:
            parts = split_path(spec.audio, self.names)
            if parts is not None and self.top[parts[0]].kind != "list":
                self.decision.evidence["layout"] = f"turn: the given audio {spec.audio!r} is a top-level column"
                return "turn"
            if lists:
                self.decision.evidence["layout"] = f"conversation: the given audio {spec.audio!r} is a field of the turns"
                return "conversation"
        if lists and not flat:
            self.decision.evidence["layout"] = f"conversation: one row per conversation ({lists[0][0]}: {lists[0][1]})"
            return "conversation"
        if flat and not lists:
            self.decision.evidence["layout"] = f"turn: one row per turn ({flat[0].name} holds audio, no list column does)"
            return "turn"
        if flat and lists:
            self.decision.candidates["layout"] = ["conversation", "turn"]
            self.decision.undecided(
                "layout",
                "conversation",
                f"both a list column ({lists[0][0]}) and a top-level audio column ({flat[0].name}) hold audio",
            )
            return "conversation"
        named = [p for _, p in self.by_name("audio", self.top, set()) if p.scalar]
        if named:
            self.decision.evidence["layout"] = f"turn: no values look like audio; {named[0].name} is named like audio"
            return "turn"
        self.decision.candidates["layout"] = list(LAYOUT_CHOICES)
        self.decision.undecided(
            "layout", "turn", "no column holds audio references (paths ending .wav/.flac/..., or audio structs)"
        )
        return "turn"

    # -- keys -----------------------------------------------------------------------------------

    def pick_audio(self, profiles: dict[str, Profile], where: str) -> None:
        d = self.decision
        content = [p for p in profiles.values() if p.audio_share >= 0.8]
        user_side = [p for p in content if not NOT_USER_SIDE.search(p.name)] or content
        named = [p for _, p in self.by_name("audio", profiles, set()) if p.kind in ("str", "audio", "bytes")]
        d.candidates["audio"] = [p.name for p in content] or [p.name for p in named]
        if len(user_side) == 1:
            p = user_side[0]
            others = [c.name for c in content if c is not p]
            extra = f"; not {', '.join(others)} (answer side)" if others else ""
            d.settle("audio", p.name, f"{where}: {p.audio_share:.0%} of values are audio (e.g. {p.example}){extra}")
        elif len(user_side) > 1:
            ranked = sorted(user_side, key=lambda p: name_rank(p.name.split(".")[-1], "audio") or 999)
            d.undecided("audio", ranked[0].name, f"several {where} hold audio: {', '.join(p.name for p in user_side)}")
        elif len(named) == 1:
            p = named[0]
            d.settle(
                "audio", p.name, f"{where}: named like audio; values (e.g. {p.example}) are matched to files by path or name"
            )
        else:
            guess = named[0].name if named else "<column>"
            d.undecided(
                "audio",
                guess,
                f"no {where} holds audio references" + (f"; named like audio: {d.candidates['audio']}" if named else ""),
            )

    def pick_text(self, profiles: dict[str, Profile], taken: set[str], where: str, content_fallback: bool) -> None:
        d = self.decision
        usable = {
            n: p
            for n, p in profiles.items()
            if p.kind == "str" and p.audio_share < 0.5 and n not in taken and not _ID_WORD.search(n.split(".")[-1])
        }
        named = [p for r, p in self.by_name("text", usable, taken) if not NOT_USER_SIDE.search(p.name)]
        d.candidates["text"] = [p.name for p in named] or list(usable)
        if named:
            best = named[0]
            same = [p for p in named[1:] if name_rank(p.name, "text") == name_rank(best.name, "text")]
            if same:
                d.undecided(
                    "text", best.name, f"several {where} are named like a transcript: {[best.name, *[p.name for p in same]]}"
                )
            else:
                d.settle("text", best.name, f"{where}: named like a transcript (e.g. {best.example})")
        elif content_fallback and len(usable) == 1:
            best = next(iter(usable.values()))
            d.settle("text", best.name, f"{where}: the only text field (e.g. {best.example})")
        elif content_fallback and len(usable) > 1:
            d.undecided("text", NONE, f"several {where} hold text and none is named like a transcript: {list(usable)}")
        else:
            d.settle("text", None, "none: no transcript column (history=transcript needs one)")

    def pick_optional(self, key: str, taken: set[str], groups: list[list[int]] | None) -> None:
        """category / language: a name match whose values are not all empty; for category also low-cardinality columns."""
        d = self.decision
        profiles = {n: p for n, p in self.all_scalar_paths().items() if n not in taken}
        named = [(r, p) for r, p in self.by_name(key, profiles, taken) if p.kind in ("str", "null")]
        rejected = [f"{p.name} (every value empty: it would yield only 'unknown')" for _, p in named if p.nonnull == 0]
        rejected += [
            f"{p.name} (unique per row: {p.unique} values)"
            for _, p in named
            if key == "category" and p.nonnull and p.unique == self.rows and self.rows > 20
        ]
        good = [p for _, p in named if p.nonnull and not (key == "category" and p.unique == self.rows and self.rows > 20)]
        content = []
        if key == "category":
            limit = max(2, min(60, self.rows // 2))
            content = [
                p
                for p in profiles.values()
                if p.kind == "str" and p not in good and 2 <= p.unique <= limit and p.audio_share == 0 and not _varies(p, groups)
                and (groups is None or p.unique < len(groups))
                and name_rank(p.name.split(".")[-1], "language") is None
            ]  # fmt: skip
        d.candidates[key] = [p.name for p in good] + [p.name for p in content]
        note = f"; rejected: {', '.join(rejected)}" if rejected else ""
        if good:
            p = good[0]
            values = _top_values(p)
            d.settle(key, p.name, f"named like a {key}; {p.unique} values ({values}){note}")
        elif content:
            shown = ", ".join(f"{p.name} ({p.unique} values: {_top_values(p)})" for p in content[:4])
            d.undecided(key, content[0].name, f"no column is named like a {key}; columns that could be: {shown}{note}")
        elif key == "category":
            d.settle(key, None, f"none: no category column, every conversation is 'unknown'{note}")
        else:
            d.settle(key, None, f"none: detected from each conversation's transcript{note}")

    def all_scalar_paths(self) -> dict[str, Profile]:
        """Top-level scalar columns and scalar fields one level into struct columns (meta.category)."""
        out = {n: p for n, p in self.top.items() if p.scalar or p.kind == "null"}
        for name, p in self.top.items():
            if p.kind == "struct":
                sample = first_value(self.df[name])
                for key in sample:
                    sub = self.profile(f"{name}.{key}")
                    if sub is not None and sub.scalar:
                        out[sub.name] = sub
        return out

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

    # -- layouts --------------------------------------------------------------------------------

    def conversation(self) -> None:
        d, spec = self.decision, self.spec
        taken: set[str] = set()
        if spec.turns not in (None, NONE):
            self.check_given("turns", spec.turns)
            d.settle("turns", spec.turns, "given")
        else:
            lists = self.list_columns()
            d.candidates["turns"] = [name for name, _ in lists]
            if not lists:
                d.undecided("turns", "<column>", "no list column holds turns with audio")
            elif len(lists) > 1:
                ranked = sorted(lists, key=lambda item: name_rank(item[0], "turns") or 999)
                d.undecided("turns", ranked[0][0], f"several list columns hold audio: {[n for n, _ in lists]}")
            else:
                d.settle("turns", lists[0][0], lists[0][1])
        turns_col = d.columns["turns"]
        taken.add(str(turns_col))
        values = self.column_values(turns_col) if turns_col and turns_col != "<column>" else None
        items = [i for row in values or [] if is_list(row) for i in row]
        dicts = [i for i in items if isinstance(i, dict)]
        keys = dict.fromkeys(k for i in dicts for k in i)
        fields = {k: Profile.of(k, [i.get(k) for i in dicts]) for k in keys}
        if items and isinstance(items[0], dict) and not looks_like_audio(items[0]):
            self.turn_fields(fields, turns_col)
        else:
            d.settle("audio", None, "the entries of the turns are the audio references")
            d.candidates["audio"] = []
            lists = [n for n, p in self.top.items() if p.kind == "list" and n != turns_col]
            named = [n for n in lists if name_rank(n, "text") is not None]
            if spec.text is not None and self.given_or("text", taken):
                pass
            elif named:
                d.settle("text", named[0], "a list column named like transcripts, one per turn")
            else:
                d.settle("text", None, "none: no transcript column")
        counts = [len(r) for r in values or [] if is_list(r)]
        if counts:
            d.evidence["turns"] = d.evidence.get("turns", "") + f"; {min(counts)}-{max(counts)} entries per row"
        self.conversation_id_per_row(taken)
        d.settle("turn_index", None, "none: turns are in list order")
        for key in ("language", "category"):
            if not self.given_or(key, taken):
                self.pick_optional(key, taken, None)
            if d.columns.get(key):
                taken.add(str(d.columns[key]))

    def turn_fields(self, fields: dict[str, Profile], turns_col: str) -> None:
        d, spec = self.decision, self.spec
        prefix = f"{turns_col}."
        roles = [p for _, p in self.by_name("role", fields, set()) if p.kind == "str"]
        for p in roles:
            values = {str(v).strip().lower() for v in p.values if v is not None}
            if values & USER_ROLES:
                d.role = p.name
                d.evidence["_role"] = (
                    f"turn field {p.name}: only turns whose role is one of {sorted(values & USER_ROLES)} are replayed"
                )
                break
        for key in ("audio", "text"):
            value = getattr(spec, key)
            if value is None:
                continue
            name = value[len(prefix) :] if value.startswith(prefix) else value
            if value == NONE:
                d.settle(key, None, "given: none")
            elif name in fields or name.split(".")[0] in fields:
                d.settle(key, name, f"given (a field of {turns_col})")
            elif value in self.names and key == "text":
                d.settle(key, value, "given (a list column, one transcript per turn)")
            else:
                raise SchemaError(
                    f"{self.source}: dataset.columns.{key}={value!r} is neither a field of the turns in {turns_col!r} "
                    f"(fields: {sorted(fields)}) nor a column ({self.names})"
                )
        if spec.audio is None:
            self.pick_audio(fields, f"fields of {turns_col}")
        taken = {f for f in (d.columns.get("audio"), d.role) if f}
        if spec.text is None:
            self.pick_text(fields, taken, f"fields of {turns_col}", content_fallback=True)

    def conversation_id_per_row(self, taken: set[str]) -> None:
        d = self.decision
        if self.given_or("conversation_id", taken):
            return
        named = [(r, p) for r, p in self.by_name("conversation_id", self.top, taken) if p.scalar]
        unique = [p for _, p in named if p.unique == self.rows == p.nonnull]
        d.candidates["conversation_id"] = [p.name for _, p in named]
        if unique:
            d.settle(
                "conversation_id",
                unique[0].name,
                f"named like an id, unique per row ({self.rows} values, e.g. {unique[0].example})",
            )
            taken.add(unique[0].name)
        else:
            why = "; ".join(f"{p.name} repeats ({p.unique} values for {self.rows} rows)" for _, p in named)
            d.settle(
                "conversation_id",
                None,
                "none: conversations are numbered by row (row0000, ...)" + (f"; rejected {why}" if why else ""),
            )

    def turn(self) -> None:
        d = self.decision
        taken: set[str] = set()
        if not self.given_or("audio", taken):
            self.pick_audio(self.top, "columns")
        if d.columns.get("audio"):
            taken.add(str(d.columns["audio"]))
        if not self.given_or("text", taken):
            self.pick_text(self.top, taken, "columns", content_fallback=False)
        if d.columns.get("text"):
            taken.add(str(d.columns["text"]))
        d.settle("turns", None, "none: one row per turn")
        indices = self.turn_index_candidates(taken)
        self.conversation_id_grouping(taken, indices)
        taken.update(str(d.columns[k]) for k in ("conversation_id", "turn_index") if d.columns.get(k) not in (None, NONE))
        groups = _groups(self.column_values(d.columns["conversation_id"])) if d.columns.get("conversation_id") else None
        for key in ("language", "category"):
            if not self.given_or(key, taken):
                self.pick_optional(key, taken, groups)
            if d.columns.get(key):
                taken.add(str(d.columns[key]))

    def turn_index_candidates(self, taken: set[str]) -> list[Profile]:
        given = self.given("turn_index")
        if given is not None:
            if given == NONE:
                return []
            return [self.check_given("turn_index", given)]
        return [p for _, p in self.by_name("turn_index", self.top, taken) if p.scalar and p.integer and p.nonnull == self.rows]

    def conversation_id_grouping(self, taken: set[str], indices: list[Profile]) -> None:
        d = self.decision
        given_id = self.given("conversation_id")
        if given_id is not None:
            self.given_or("conversation_id", taken)
            self.pick_turn_index(indices, d.columns["conversation_id"], taken)
            return
        scalars = {n: p for n, p in self.top.items() if p.scalar and n not in taken and p.nonnull == self.rows}
        index_names = {p.name for p in indices}
        named = [p for _, p in self.by_name("conversation_id", scalars, index_names)]
        strong, weak, notes = [], [], []
        for p in named:
            groups = _groups(p.values)
            if len(groups) == self.rows:
                weak.append(p)
                notes.append(f"{p.name} is unique per row ({self.rows} values): every conversation would have one turn")
                continue
            index = _consistent_index(groups, indices)
            if indices and index is None:
                notes.append(f"{p.name} repeats a turn index within a group ({', '.join(i.name for i in indices)})")
                continue
            strong.append((p, groups, index))
        content = [
            p
            for p in scalars.values()
            if indices
            and p not in named
            and p.name not in index_names
            and 1 < p.unique < self.rows
            and _consistent_index(_groups(p.values), indices) is not None
            and name_rank(p.name, "category") is None
            and name_rank(p.name, "language") is None
        ]  # fmt: skip  (without a turn index, any low-cardinality column "groups" rows: no evidence)
        d.candidates["conversation_id"] = [p.name for p, _, _ in strong] + [p.name for p in content] + [p.name for p in weak]
        note = f"; rejected: {'; '.join(notes)}" if notes else ""
        if strong and len({_partition(g) for _, g, _ in strong}) == 1:
            p, groups, index = strong[0]
            sizes = [len(g) for g in groups]
            d.settle(
                "conversation_id",
                p.name,
                f"named like a conversation id; groups {self.rows} rows into {len(groups)} conversations of "
                f"{min(sizes)}-{max(sizes)} turns{note}",
            )
            taken.add(p.name)
            self.pick_turn_index(indices, p.name, taken)
            return
        if strong:
            names = [p.name for p, _, _ in strong]
            d.undecided("conversation_id", names[0], f"several columns group rows differently: {names}{note}")
        elif content:
            shown = ", ".join(f"{p.name} ({p.unique} groups)" for p in content[:4])
            d.undecided(
                "conversation_id", content[0].name, f"no column named like a conversation id groups rows; could be: {shown}{note}"
            )
        elif weak:
            spread = [p for p in indices if len({str(v) for v in p.values}) > 1]
            name = weak[0].name
            if spread:
                taken_values = len({str(v) for v in spread[0].values})
                why = f"{name} is unique per row, but turn index {spread[0].name} takes {taken_values} values"
            else:
                why = (
                    f"{name} is unique per row: every conversation would have one turn "
                    f"(single-turn data: confirm by giving conversation_id={name})"
                )
            d.undecided("conversation_id", weak[0].name, why)
            d.columns["turn_index"] = NONE if not spread else spread[0].name
            return
        else:
            d.undecided("conversation_id", NONE, "no column groups rows into conversations")
        first = d.columns.get("conversation_id")
        self.pick_turn_index(indices, first if first not in (None, NONE) else None, taken)

    def pick_turn_index(self, indices: list[Profile], conv_col: str | None, taken: set[str]) -> None:
        d = self.decision
        if self.given("turn_index") is not None:
            self.given_or("turn_index", taken)
            return
        d.candidates["turn_index"] = [p.name for p in indices]
        groups = _groups(self.column_values(conv_col)) if conv_col else None
        if groups is not None and all(len(g) == 1 for g in groups):
            d.settle("turn_index", None, "none: every conversation has one turn")
            return
        index = _consistent_index(groups, indices) if groups is not None else None
        if index is not None:
            values = [_as_int(v) for v in index.values]
            d.settle("turn_index", index.name, f"integers {min(values)}..{max(values)}, none repeated within a conversation")
            taken.add(index.name)
        else:
            d.settle("turn_index", None, "none: rows keep their file order within a conversation")

    def run(self) -> Mapping:
        d = self.decision
        layout = self.layout()
        if layout == "conversation":
            self.conversation()
        else:
            self.turn()
        if d.problems:
            raise SchemaError(self.failure(layout))
        evidence = {k: v for k, v in d.evidence.items() if not k.startswith("_")}
        if d.role:
            evidence["role"] = d.evidence["_role"]
        columns = {k: d.columns.get(k) for k in CONFIG_KEYS if k != "layout"}
        return Mapping(layout=layout, columns=columns, evidence=evidence, candidates=d.candidates, role=d.role)

    def failure(self, layout: str) -> str:
        d = self.decision
        line = overrides_line({"layout": layout, **{k: d.columns.get(k) for k in CONFIG_KEYS if k != "layout"}})
        lines = [f"{self.source}: cannot settle the column mapping:"]
        lines += [f"  - {problem}" for problem in d.problems]
        lines.append(f"  columns found: {describe_columns(self.df)}")
        lines.append("  evidence and candidates per key:")
        for key in CONFIG_KEYS:
            chosen = layout if key == "layout" else d.columns.get(key)
            cands = d.candidates.get(key)
            shown = f" | candidates: {', '.join(cands)}" if cands else ""
            lines.append(f"    {evidence_line(key, chosen, d.evidence.get(key, ''))}{shown}")
        lines.append("  the full mapping, for `stepeval data inspect <source> ...` and `stepeval run ...` (edit any guess):")
        lines.append(f"  {line}")
        return "\n".join(lines)


LAYOUT_CHOICES = ("conversation", "turn")


def evidence_line(key: str, value: str | None, why: str) -> str:
    """``key = value  (why)``, without repeating the value at the start of the evidence."""
    value = NONE if value is None else value
    for prefix in (f"{value}: ", f"{NONE}: "):
        if why.startswith(prefix):
            why = why[len(prefix) :]
    return f"{key} = {value}  ({why})" if why else f"{key} = {value}"


def _groups(values: list[Any] | None) -> list[list[int]]:
    order: dict[str, list[int]] = {}
    for position, value in enumerate(values or []):
        order.setdefault(str(value), []).append(position)
    return list(order.values())


def _partition(groups: list[list[int]]) -> frozenset:
    return frozenset(tuple(g) for g in groups)


def _consistent_index(groups: list[list[int]] | None, indices: list[Profile]) -> Profile | None:
    """The first turn-index column whose values never repeat within a group (None if there is none)."""
    for index in indices:
        if groups is not None and all(len({str(index.values[i]) for i in g}) == len(g) for g in groups):
            return index
    return None


def _varies(profile: Profile, groups: list[list[int]] | None) -> bool:
    """A per-conversation label is constant within each conversation."""
    if groups is None:
        return False
    return any(len({str(profile.values[i]) for i in g}) > 1 for g in groups)


def _top_values(profile: Profile, n: int = 4) -> str:
    counts = pd.Series([str(v) for v in profile.values if v is not None]).value_counts()
    shown = ", ".join(f"{k}: {v}" for k, v in counts.head(n).items())
    return shown + (", ..." if len(counts) > n else "")


def detect(df: pd.DataFrame, spec: ColumnSpec, source: str) -> Mapping:
    """Choose a layout and the column that fills each key, with evidence; or fail listing candidates and the line to paste."""
    if len(df) == 0:
        raise DatasetEmpty(f"dataset is empty: 0 rows in {source}")
    return Detector(df, spec, source).run()


__all__ = ["detect", "looks_like_audio", "name_rank", "text_value"]
