"""Map a parquet table of unknown schema onto conversations.

The real StepEval-Audio-360 schema is not published, so the mapping is configuration
(``dataset.columns.*``) with auto-detection of the two likely layouts:

* ``conversation``: one row per conversation, turns nested in a list column
  (a list of structs holding an audio reference and a transcript, or a list of audio refs);
* ``turn``: one row per user turn, with a conversation id and (optionally) a turn index.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

CANDIDATES: dict[str, tuple[str, ...]] = {
    "conversation_id": ("conversation_id", "conv_id", "dialog_id", "dialogue_id", "session_id", "id", "uid", "idx"),
    "turns": ("turns", "conversation", "conversations", "dialog", "dialogue", "messages", "history", "rounds"),
    "turn_index": ("turn_index", "turn_idx", "turn_id", "turn", "round", "round_id"),
    "audio": ("audio", "audio_path", "audio_file", "audio_filename", "wav", "wav_path", "path", "file", "filename"),
    "text": ("text", "transcript", "transcription", "query", "prompt", "question", "content", "asr", "sentence"),
    "category": ("category", "task", "capability", "type", "class", "domain"),
    "language": ("language", "lang", "locale", "dialect"),
    "role": ("role", "speaker", "from"),
}
USER_ROLES = {"user", "human", "speaker", "client", "usr", "q"}
CONFIG_KEYS = ("layout", "conversation_id", "turns", "turn_index", "audio", "text", "category", "language")


class SchemaError(ValueError):
    """The table's columns could not be mapped; the message lists what was found."""


@dataclass(frozen=True)
class ColumnSpec:
    """``dataset.columns``: any key left null is auto-detected."""

    layout: str = "auto"  # auto | conversation | turn
    conversation_id: str | None = None
    turns: str | None = None
    turn_index: str | None = None
    audio: str | None = None
    text: str | None = None
    category: str | None = None
    language: str | None = None

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> ColumnSpec:
        mapping = dict(mapping or {})
        unknown = set(mapping) - {f.name for f in fields(cls)}
        if unknown:
            raise SchemaError(f"unknown dataset.columns keys {sorted(unknown)}; allowed: {list(CONFIG_KEYS)}")
        if mapping.get("layout", "auto") not in ("auto", "conversation", "turn"):
            raise SchemaError(f"dataset.columns.layout={mapping['layout']!r}: use auto, conversation or turn")
        return cls(**mapping)


@dataclass(frozen=True)
class RawTurn:
    audio_ref: Any
    text: str | None


@dataclass(frozen=True)
class RawConversation:
    id: str
    category: str | None
    language: str | None
    turns: tuple[RawTurn, ...]


@dataclass(frozen=True)
class Mapping:
    layout: str
    columns: dict[str, str | None]


def describe_columns(df: pd.DataFrame) -> str:
    parts = []
    for name in df.columns:
        sample = next((v for v in df[name] if v is not None), None)
        kind = type(sample).__name__ if sample is not None else "null"
        if isinstance(sample, dict):
            kind = f"struct{{{', '.join(map(str, sample))}}}"
        elif _is_list(sample) and len(sample) and isinstance(sample[0], dict):
            kind = f"list<struct{{{', '.join(map(str, sample[0]))}}}>"
        elif _is_list(sample):
            kind = "list"
        parts.append(f"{name} ({kind})")
    return ", ".join(parts)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _pick(present: list[str], key: str, configured: str | None, source: str, required: bool) -> str | None:
    if configured is not None:
        if configured not in present:
            raise SchemaError(f"{source}: dataset.columns.{key}={configured!r} is not a column; found: {present}")
        return configured
    lowered = {c.lower(): c for c in present}
    for name in CANDIDATES[key]:
        if name in lowered:
            return lowered[name]
    if required:
        return None
    return None


def _fail(df: pd.DataFrame, source: str, why: str) -> SchemaError:
    return SchemaError(
        f"{source}: {why}.\n  columns found: {describe_columns(df)}\n"
        f"  set the mapping in config, e.g. `stepeval run dataset.columns.layout=turn "
        f"dataset.columns.conversation_id=<col> dataset.columns.audio=<col>`; keys: {', '.join(CONFIG_KEYS)}"
    )


def detect(df: pd.DataFrame, spec: ColumnSpec, source: str) -> Mapping:
    """Choose a layout and the columns that fill each role, or fail naming what was found."""
    present = [str(c) for c in df.columns]
    pick = {key: _pick(present, key, getattr(spec, key), source, False) for key in CONFIG_KEYS if key != "layout"}
    turns_col = pick["turns"]
    if turns_col is None and spec.layout in ("auto", "conversation"):
        # a list-valued audio column also means one row per conversation
        for col in [pick["audio"], *present]:
            if col is not None and _is_list(next((v for v in df[col] if v is not None), None)):
                turns_col = col
                break
    layout = spec.layout
    if layout == "auto":
        layout = "conversation" if turns_col is not None else "turn"
    if layout == "conversation":
        if turns_col is None:
            raise _fail(df, source, "layout 'conversation' needs a list column of turns and none was found")
        pick["turns"] = turns_col
    else:
        missing = [k for k in ("conversation_id", "audio") if pick[k] is None]
        if missing:
            raise _fail(df, source, f"no column found for {', '.join(missing)} (neither layout fits)")
    return Mapping(layout=layout, columns=pick)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _turns_from_list(items: Any, spec: ColumnSpec, source: str, parallel_text: Any = None) -> list[RawTurn]:
    turns: list[RawTurn] = []
    texts = list(parallel_text) if _is_list(parallel_text) else None
    for position, item in enumerate(list(items)):
        if isinstance(item, dict):
            keys = [str(k) for k in item]
            role_key = _pick(keys, "role", None, source, False)
            if role_key and str(item[role_key]).lower() not in USER_ROLES:
                continue  # assistant/reference turns are not replayed
            audio_key = _pick(keys, "audio", spec.audio, f"{source} (turn fields)", True)
            text_key = _pick(keys, "text", spec.text, f"{source} (turn fields)", False)
            if audio_key is None:
                raise SchemaError(f"{source}: turn entries have fields {keys} and none holds audio; set dataset.columns.audio")
            turns.append(RawTurn(item[audio_key], _text(item.get(text_key)) if text_key else None))
        else:
            text = _text(texts[position]) if texts and position < len(texts) else None
            turns.append(RawTurn(item, text))
    return turns


def to_conversations(df: pd.DataFrame, mapping: Mapping, spec: ColumnSpec, source: str) -> list[RawConversation]:
    cols = mapping.columns
    out: list[RawConversation] = []

    def value(row: pd.Series, key: str) -> str | None:
        return _text(row[cols[key]]) if cols.get(key) else None

    if mapping.layout == "conversation":
        parallel_text = cols["text"] if cols["text"] and cols["text"] != cols["turns"] else None
        for position, (_, row) in enumerate(df.iterrows()):
            conv_id = value(row, "conversation_id") or f"row{position:04d}"
            items = row[cols["turns"]]
            if not _is_list(items):
                raise SchemaError(f"{source}: row {position} column {cols['turns']!r} is not a list of turns")
            extra_text = row[parallel_text] if parallel_text else None
            turns = _turns_from_list(items, spec, source, extra_text)
            out.append(RawConversation(conv_id, value(row, "category"), value(row, "language"), tuple(turns)))
        return out

    groups: dict[str, list[tuple[float, int, pd.Series]]] = {}
    for position, (_, row) in enumerate(df.iterrows()):
        order = row[cols["turn_index"]] if cols["turn_index"] else position
        groups.setdefault(str(row[cols["conversation_id"]]), []).append((float(order), position, row))
    for conv_id, rows in groups.items():
        rows.sort(key=lambda item: (item[0], item[1]))
        first = rows[0][2]
        turns = tuple(RawTurn(r[cols["audio"]], value(r, "text")) for _, _, r in rows)
        out.append(RawConversation(conv_id, value(first, "category"), value(first, "language"), turns))
    return out
