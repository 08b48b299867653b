"""Map a table of unknown schema onto conversations.

The real StepEval-Audio-360 schema is not published, so the mapping is configuration
(``dataset.columns.*``) with evidence-based detection (``stepeval.data.detect``) of the two likely layouts:

* ``conversation``: one row per conversation, turns nested in a list column
  (a list of structs holding an audio reference and a transcript, or a list of audio refs);
* ``turn``: one row per user turn, with a conversation id and (optionally) a turn index.

A mapping value is a column name, a dotted path into a struct column (``meta.category``), or, for
the per-turn keys of the conversation layout (``audio``, ``text``, ``role``), a field of the turn entries
(``speech``, or ``dialogue.speech`` with the list column's name first); ``audio`` equal to ``turns`` says the
entries themselves are the audio (parallel lists). ``none`` says the dataset has no such column.
``stepeval data inspect`` and ``stepeval run`` take the same ``dataset.columns.KEY=VALUE``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from stepeval.data.chat import USER_ROLES, audio_of, text_of, user_test

CONFIG_KEYS = ("layout", "conversation_id", "turns", "turn_index", "role", "audio", "text", "category", "language")
LAYOUTS = ("auto", "conversation", "turn")
NONE = "none"  # a mapping value meaning: this dataset has no such column


class SchemaError(ValueError):
    """The table's columns could not be mapped; the message lists what was found."""


class DatasetEmpty(SchemaError):
    """The table has no rows."""


@dataclass(frozen=True)
class ColumnSpec:
    """``dataset.columns``: a key left null is detected; ``none`` means the dataset has no such column."""

    layout: str = "auto"  # auto | conversation | turn
    conversation_id: str | None = None
    turns: str | None = None
    turn_index: str | None = None
    role: str | None = None  # the field/column telling user turns (replayed) from the others (the reference)
    audio: str | None = None
    text: str | None = None
    category: str | None = None
    language: str | None = None

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> ColumnSpec:
        mapping = {str(k): v for k, v in dict(mapping or {}).items()}
        unknown = set(mapping) - {f.name for f in fields(cls)}
        if unknown:
            raise SchemaError(f"unknown dataset.columns keys {sorted(unknown)}; allowed: {list(CONFIG_KEYS)}")
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            value = getattr(value, "value", value)  # a Hydra enum
            if value is not None:
                value = str(value).strip()
                if value.lower() in (NONE, "null", "") and key != "layout":
                    value = NONE
            values[key] = value
        layout = values.get("layout") or "auto"
        if layout not in LAYOUTS:
            raise SchemaError(f"dataset.columns.layout={layout!r}: use auto, conversation or turn")
        values["layout"] = layout
        if values.get("audio") == NONE:
            raise SchemaError("dataset.columns.audio=none: the user audio is required; name its column")
        return cls(**values)

    def given(self) -> dict[str, str]:
        """The keys the user set (layout only when not auto)."""
        out = {k: getattr(self, k) for k in CONFIG_KEYS if getattr(self, k) is not None}
        if out.get("layout") == "auto":
            del out["layout"]
        return out


@dataclass(frozen=True)
class RawTurn:
    audio_ref: Any
    text: str | None
    row: int | None = None  # where the reference came from, for errors: table row and column/field
    field: str | None = None


@dataclass(frozen=True)
class RawConversation:
    id: str
    category: str | None
    language: str | None
    turns: tuple[RawTurn, ...]


@dataclass(frozen=True)
class Mapping:
    """What detection settled on, and why: ``columns`` (key -> path or None), ``evidence`` (key -> one line)."""

    layout: str
    columns: dict[str, str | None]
    evidence: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, list[str]] = field(default_factory=dict)

    @property
    def role(self) -> str | None:
        """The turn field (conversation layout) or column (turn layout) telling user turns from the others."""
        return self.columns.get("role")

    def overrides(self) -> str:
        return overrides_line({"layout": self.layout, **self.columns})


# -- the one line both commands take ------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def override_token(key: str, value: str | None) -> str:
    """``dataset.columns.KEY=VALUE``, quoted for Hydra and the shell where the value needs it."""
    value = NONE if value is None else str(value)
    if _BARE.match(value) and value.lower() not in ("null", "true", "false"):
        return f"dataset.columns.{key}={value}"
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    return shlex.quote(f'dataset.columns.{key}="{quoted}"')


def overrides_line(columns: dict[str, str | None]) -> str:
    """Every key, in a fixed order, as one line to paste after ``stepeval data inspect <source>`` or ``stepeval run``."""
    return " ".join(override_token(key, columns.get(key)) for key in CONFIG_KEYS)


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """Parse ``dataset.columns.KEY=VALUE`` tokens exactly as ``stepeval run`` (Hydra's override grammar) does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out: dict[str, Any] = {}
    for token in tokens:
        try:
            override = parser.parse_override(token)
        except Exception as err:  # Hydra's grammar errors are several types
            raise SchemaError(f"cannot parse {token!r} as KEY=VALUE: {err}") from err
        key = override.key_or_group
        if key.startswith("dataset.columns."):
            key = key[len("dataset.columns.") :]
        elif key.startswith("columns."):
            key = key[len("columns.") :]
        value = override.value()
        out[key] = None if value is None else str(value)
    return out


# -- reading values out of rows ------------------------------------------------------------------


def is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def first_value(series: pd.Series) -> Any:
    return next((v for v in series if v is not None and not (isinstance(v, float) and np.isnan(v))), None)


def split_path(path: str, names: list[str]) -> list[str] | None:
    """``a.b.c`` -> [column, field, ...], taking the longest prefix that is a column name; None if none is."""
    if path in names:
        return [path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in names:
            return [head, *parts[cut:]]
    return None


def get_path(value: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def text_value(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def nested_fields(df: pd.DataFrame) -> list[str]:
    """Every dotted path one level into struct columns and into the structs of list columns."""
    out = []
    for name in map(str, df.columns):
        sample = first_value(df[name])
        if isinstance(sample, dict):
            out.extend(f"{name}.{k}" for k in sample)
        elif is_list(sample) and len(sample) and isinstance(sample[0], dict):
            out.extend(f"{name}.{k}" for k in sample[0])
    return out


def describe_columns(df: pd.DataFrame) -> str:
    parts = []
    for name in df.columns:
        sample = first_value(df[name])
        kind = type(sample).__name__ if sample is not None else "null"
        if isinstance(sample, dict):
            kind = f"struct{{{', '.join(map(str, sample))}}}"
        elif is_list(sample) and len(sample) and isinstance(sample[0], dict):
            kind = f"list<struct{{{', '.join(map(str, sample[0]))}}}>"
        elif is_list(sample):
            kind = "list"
        parts.append(f"{name} ({kind})")
    return ", ".join(parts)


# -- building conversations from a settled mapping ------------------------------------------------


def _turns_from_list(items: Any, mapping: Mapping, source: str, parallel_text: Any, position: int) -> list[RawTurn]:
    cols = mapping.columns
    turns_col, audio_field, text_field = cols["turns"], cols.get("audio"), cols.get("text")
    role_field, is_user = user_test(mapping.role)
    entries_are_audio = audio_field in (None, NONE, turns_col)
    texts = list(parallel_text) if is_list(parallel_text) else None
    turns: list[RawTurn] = []
    for number, item in enumerate(list(items)):
        where = f"{turns_col}[{number}]"
        if isinstance(item, dict) and not entries_are_audio and not _is_audio_struct(item):
            if role_field and not is_user(get_path(item, role_field.split("."))):
                continue  # assistant/reference turns are not replayed
            content = get_path(item, audio_field.split("."))
            audio = audio_of(content)
            if audio is None and audio_of(content, decode=False) is not None:
                raise SchemaError(f"{source}: row {position} {where}.{audio_field}: its inline audio is not valid base64")
            if is_list(audio):
                raise SchemaError(
                    f"{source}: row {position} {where}.{audio_field} holds {len(audio)} audio parts; a user turn replays one"
                )
            text = text_value(text_of(get_path(item, text_field.split(".")))) if text_field else None
            turns.append(RawTurn(audio, text, position, f"{where}.{audio_field}"))
        else:
            text = text_value(texts[number]) if texts and number < len(texts) else None
            turns.append(RawTurn(item, text, position, where))
    if not turns:
        why = f" (none whose {role_field} is a user role: {mapping.role!r}, default {sorted(USER_ROLES)})" if role_field else ""
        raise SchemaError(f"{source}: row {position} has no user turns in {turns_col!r}{why}")
    return turns


def _is_audio_struct(value: dict) -> bool:
    return set(value) <= {"bytes", "path", "array", "sampling_rate"} and ("bytes" in value or "path" in value)


def _refuse_duplicates(ids: list[str], column: str | None, source: str) -> None:
    """One row per conversation: an id seen on two rows is two conversations under one name."""
    rows: dict[str, list[int]] = {}
    for position, conv_id in enumerate(ids):
        rows.setdefault(conv_id, []).append(position)
    dupes = {k: v for k, v in rows.items() if len(v) > 1}
    if dupes:
        shown = "; ".join(f"{k!r} on rows {', '.join(map(str, v[:4]))}" for k, v in list(dupes.items())[:5])
        raise SchemaError(
            f"{source}: duplicate conversation ids in column {column!r} ({len(dupes)} ids on several rows): {shown}. "
            "Each row is one conversation: remove the duplicate rows, name another id column "
            "(dataset.columns.conversation_id=...), or number conversations by row (dataset.columns.conversation_id=none)"
        )


def to_conversations(df: pd.DataFrame, mapping: Mapping, source: str) -> list[RawConversation]:
    cols = mapping.columns
    names = [str(c) for c in df.columns]
    role_column, is_user = user_test(cols.get("role"))
    if mapping.layout == "turn" and role_column:
        cols = {**cols, "role": role_column}
    entry_keys = ("role",) if mapping.layout == "conversation" else ()  # a field of the turn entries, not a column
    paths = {k: split_path(v, names) for k, v in cols.items() if v and k not in entry_keys}
    records = df.to_dict("records")

    def value(row: dict, key: str) -> Any:
        parts = paths.get(key)
        return get_path({k: row[k] for k in parts[:1]}, parts) if parts else None

    out: list[RawConversation] = []
    if mapping.layout == "conversation":
        parallel = cols["text"] if cols.get("text") and cols["text"] in names and cols["text"] != cols["turns"] else None
        if cols.get("conversation_id"):
            _refuse_duplicates([str(text_value(value(r, "conversation_id"))) for r in records], cols["conversation_id"], source)
        for position, row in enumerate(records):
            conv_id = text_value(value(row, "conversation_id")) or f"row{position:04d}"
            items = value(row, "turns")
            if not is_list(items):
                raise SchemaError(
                    f"{source}: row {position} column {cols['turns']!r} is not a list of turns ({type(items).__name__})"
                )
            turns = _turns_from_list(items, mapping, source, row[parallel] if parallel else None, position)
            category, language = text_value(value(row, "category")), text_value(value(row, "language"))
            out.append(RawConversation(conv_id, category, language, tuple(turns)))
        return out

    groups: dict[str, list[tuple[float, int, dict]]] = {}
    for position, row in enumerate(records):
        if cols.get("role") and not is_user(value(row, "role")):
            continue  # a row of an assistant/reference turn
        conv_id = text_value(value(row, "conversation_id")) if cols.get("conversation_id") else None
        conv_id = conv_id or f"row{position:04d}"
        order = value(row, "turn_index") if cols.get("turn_index") else position
        try:
            order = float(order)
        except (TypeError, ValueError):
            raise SchemaError(f"{source}: row {position} turn index {cols['turn_index']}={order!r} is not a number") from None
        groups.setdefault(conv_id, []).append((order, position, row))
    for conv_id, rows in groups.items():
        rows.sort(key=lambda item: (item[0], item[1]))
        first = rows[0][2]
        turns = tuple(
            RawTurn(audio_of(value(r, "audio")), text_value(text_of(value(r, "text"))), p, cols.get("audio")) for _, p, r in rows
        )
        category, language = text_value(value(first, "category")), text_value(value(first, "language"))
        out.append(RawConversation(conv_id, category, language, tuple(turns)))
    return out
