"""Which layout a table has: a list column of turns per conversation, or one row per turn.

A list column holds turns when its entries hold audio: audio references themselves (parallel lists such
as ``question_audios``), ``datasets`` Audio structs, or structs with a field that holds audio in the user
turns (chat formats: ``messages`` role/content with audio parts, ShareGPT ``conversations`` from/value).
The role field decides which entries are user turns, so a chat whose assistant turns are text still counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stepeval.data import chat
from stepeval.data.columns import NONE, SchemaError, is_list, split_path
from stepeval.data.evidence import NOT_USER_SIDE, Profile, Table, by_name, looks_like_audio, name_rank, short

LAYOUT_CHOICES = ("conversation", "turn")
SAMPLE_ENTRIES = 2000  # turn entries profiled per list column


@dataclass
class Entries:
    """The turn entries of one list column: their fields profiled over user turns, and the role field if any."""

    column: str
    items: list[Any]
    role: str | None = None
    role_note: str = ""
    fields: dict[str, Profile] = field(default_factory=dict)
    audio_fields: list[str] = field(default_factory=list)
    role_undecided: str = ""  # why the role below is only a guess

    @property
    def structs(self) -> bool:
        return bool(self.items) and isinstance(self.items[0], dict) and not looks_like_audio(self.items[0])


def _role_by_values(name: str, values: list[str], total: int, how: str, users: frozenset[str] | None) -> str | None:
    hits = [v for v in values if chat.role_is_user(v, users)]
    if not hits:
        return None
    others = sorted(set(values) - set(hits))
    other_note = f"; not replayed: {', '.join(others[:4])}" if others else ""
    return f"{how}; {len(hits)} of {total} entries are user turns ({', '.join(sorted(set(hits)))}){other_note}"


def _role_by_audio(dicts: list[dict]) -> tuple[str | None, str]:
    """Roles under unknown names/values: a field of 2-4 values whose one value's entries alone hold audio."""
    found = []
    keys = dict.fromkeys(k for d in dicts for k in d)
    for name in keys:
        values = [d.get(name) for d in dicts]
        distinct = {v for v in values if isinstance(v, str)}
        if not 2 <= len(distinct) <= 4 or len([v for v in values if isinstance(v, str)]) != len(values):
            continue
        for value in sorted(distinct):
            side = [d for d in dicts if d.get(name) == value]
            rest = [d for d in dicts if d.get(name) != value]
            for other in keys:
                if other == name:
                    continue
                mine = Profile.of(other, [d.get(other) for d in side]).audio_share
                theirs = Profile.of(other, [d.get(other) for d in rest]).audio_share
                if mine >= 0.8 and theirs < 0.5:
                    found.append((f"{name}:{value}", f"{other} holds audio only in the entries whose {name} is {value!r}"))
    if len(found) == 1:
        return found[0][0], f"by value; {found[0][1]} (the user turns)"
    return None, ""


def role_field(dicts: list[dict], given: str | None) -> tuple[str | None, str]:
    """(the role as configured, why): a field named like a role whose values include a user role, else a value split."""
    if given == NONE:
        return None, "given: none (every entry is a user turn)"
    field_name, users = chat.parse_role(given)
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    ranked = sorted((name_rank(k, "role"), k) for k in keys if name_rank(k, "role") is not None)
    for name in [field_name] if given else [k for _, k in ranked]:
        values = [str(d.get(name)).strip().lower() for d in dicts if isinstance(d.get(name), str)]
        note = _role_by_values(name, values, len(dicts), "given" if given else "named like a role", users)
        if note:
            return (given if given else name), note
    return (None, "") if given else _role_by_audio(dicts)


def role_guess(dicts: list[dict]) -> tuple[str | None, str]:
    """A field named like a role whose values name no user role (caller/agent, A/B): (``FIELD:first value``, why)."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    for name in sorted((k for k in keys if name_rank(k, "role") is not None), key=lambda k: name_rank(k, "role")):
        values = [d.get(name) for d in dicts if isinstance(d.get(name), str)]
        distinct = list(dict.fromkeys(values))
        if 2 <= len(distinct) <= 4:
            why = (
                f"{name} takes {', '.join(map(repr, distinct))}, none a user role ({', '.join(sorted(chat.USER_ROLES))}): "
                f"give role={name}:VALUE naming the user side"
            )
            return f"{name}:{distinct[0]}", why
    return None, ""


def entries(table: Table, column: str, given_role: str | None = None) -> Entries:
    """The entries of a list column, profiled once per table (several rules ask)."""
    key = ("entries", column, given_role)
    if key not in table.memo:
        table.memo[key] = _entries(table, column, given_role)
    return table.memo[key]


def _entries(table: Table, column: str, given_role: str | None) -> Entries:
    values = table.column_values(column) or []
    items = [i for row in values if is_list(row) for i in row][:SAMPLE_ENTRIES]
    out = Entries(column, items)
    if not out.structs:
        return out
    dicts = [i for i in items if isinstance(i, dict)]
    out.role, out.role_note = role_field(dicts, given_role)
    if out.role is None and given_role is None:
        out.role, out.role_undecided = role_guess(dicts)
        out.role_note = out.role_undecided
    if given_role not in (None, NONE) and out.role is None:
        keys = sorted(dict.fromkeys(k for d in dicts for k in d))
        out.role_note = (
            f"no entry has a user role (FIELD uses {sorted(chat.USER_ROLES)}; FIELD:VALUE names the user value); fields: {keys}"
        )
    field_name, is_user = chat.user_test(out.role)
    users = [d for d in dicts if is_user(d.get(field_name))] if out.role else dicts
    keys = dict.fromkeys(k for d in users for k in d if k != field_name)
    out.fields = {k: Profile.of(k, [d.get(k) for d in users]) for k in keys}
    out.audio_fields = [k for k, p in out.fields.items() if p.audio_share >= 0.8]
    return out


def describe(found: Entries) -> str:
    fields = ", ".join(sorted(found.fields) + ([found.role] if found.role else []))
    if not found.structs:
        return f"list of audio references (e.g. {short(found.items[0])})" if found.items else "empty lists"
    role = f"; {found.role} marks user turns ({found.role_note})" if found.role else ""
    parts = any(found.fields[f].kind == "parts" for f in found.audio_fields)
    holds = f"field {', '.join(sorted(found.audio_fields))} holds audio" + (" (content parts)" if parts else "")
    who = " in every user turn" if found.role else ""
    return f"list of structs{{{fields}}}{role}; {holds}{who}"


def list_columns(table: Table) -> list[tuple[str, str]]:
    """(column, why) for list columns whose entries hold audio."""
    found = []
    for name, profile in table.top.items():
        if profile.kind not in ("list", "parts"):
            continue
        seen = entries(table, name, table.spec.role if table.spec.turns in (None, name) else None)
        if not seen.items:
            continue
        if seen.structs and seen.audio_fields:
            found.append((name, describe(seen)))
        elif not seen.structs and Profile.of(name, seen.items).audio_share >= 0.8:
            found.append((name, "list of audio structs" if isinstance(seen.items[0], dict) else describe(seen)))
    return found


def chat_like(table: Table) -> list[str]:
    """List-of-struct columns that look like turns by name or by a role field, though no field shows audio."""
    out = []
    for name, profile in table.top.items():
        if profile.kind in ("list", "parts"):
            seen = entries(table, name)
            if seen.structs and (seen.role or name_rank(name, "turns") is not None):
                out.append(name)
    return out


def user_side(lists: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The audio lists of the user side, and the answer side ones passed over (answer_audios, ...)."""
    users = [item for item in lists if not NOT_USER_SIDE.search(item[0])]
    if not users:
        return lists, []
    return users, [name for name, _ in lists if not any(name == u for u, _ in users)]


def choose(table: Table) -> str:
    """The layout, with its evidence line; undecided when both a list and a top-level column hold audio."""
    spec, d = table.spec, table.decision
    if spec.layout != "auto":
        d.evidence["layout"] = "given"
        return spec.layout
    if spec.turns not in (None, NONE):
        d.evidence["layout"] = f"given turns={spec.turns}"
        return "conversation"
    lists, _ = user_side(list_columns(table))
    flat = [p for p in table.top.values() if p.audio_share >= 0.8 and p.kind not in ("list", "parts")]
    if spec.audio and spec.audio != NONE:
        parts = split_path(spec.audio, table.names)
        if parts is not None and table.top[parts[0]].kind not in ("list", "parts"):
            d.evidence["layout"] = f"turn: the given audio {spec.audio!r} is a top-level column"
            return "turn"
        if parts is not None:
            d.evidence["layout"] = f"conversation: the given audio {spec.audio!r} is in the list column {parts[0]!r}"
            return "conversation"
        if lists:
            d.evidence["layout"] = f"conversation: the given audio {spec.audio!r} is a field of the turns"
            return "conversation"
    if lists and not flat:
        d.evidence["layout"] = f"conversation: one row per conversation, its turns in the list column {lists[0][0]}"
        return "conversation"
    if flat and not lists:
        d.evidence["layout"] = f"turn: one row per turn ({flat[0].name} holds audio, no list column does)"
        return "turn"
    if flat and lists:
        d.candidates["layout"] = list(LAYOUT_CHOICES)
        d.undecided(
            "layout",
            "conversation",
            f"both a list column ({lists[0][0]}) and a top-level audio column ({flat[0].name}) hold audio",
        )
        return "conversation"
    chats = chat_like(table)
    if chats:
        d.candidates["layout"] = list(LAYOUT_CHOICES)
        d.undecided(
            "layout",
            "conversation",
            f"no values look like audio; {chats[0]} is a list of turns (give its audio field: turns={chats[0]} audio=<field>)",
        )
        return "conversation"
    named = [p for _, p in by_name("audio", table.top, set()) if p.scalar]
    if named:
        d.evidence["layout"] = f"turn: no values look like audio; {named[0].name} is named like audio"
        return "turn"
    d.candidates["layout"] = list(LAYOUT_CHOICES)
    d.undecided("layout", "turn", "no column holds audio references (paths ending .wav/.flac/..., or audio structs)")
    return "turn"


def top_role(table: Table) -> tuple[str | None, str]:
    """One row per turn with a role column: (the column, why); only rows with a user role are turns."""
    given = table.spec.role
    if given == NONE:
        return None, ""
    field_name, users = chat.parse_role(given)
    if given is not None and field_name not in table.names:
        return None, ""  # a field of the turn entries (conversation layout)
    candidates = [field_name] if given else [p.name for _, p in by_name("role", table.top, set()) if p.kind == "str"]
    for name in candidates:
        values = [str(v).strip().lower() for v in table.top[name].values if isinstance(v, str)]
        note = _role_by_values(name, values, table.rows, "given" if given else "named like a role", users)
        if note:
            return (given if given else name), note.replace(" entries ", " rows ")
    if given:
        shown = sorted({str(v) for v in table.top[field_name].values})[:6]
        raise SchemaError(
            f"{table.source}: dataset.columns.role={given!r}: no row has a user role ({sorted(chat.USER_ROLES)}); values: {shown}"
        )
    return None, ""


def top_role_guess(table: Table) -> tuple[str | None, str]:
    """A column named like a role whose values name no user role (caller/agent): (``COLUMN:first value``, why)."""
    if table.spec.role is not None:
        return None, ""
    rows = [
        {p.name: v} for p in table.top.values() if p.kind == "str" and name_rank(p.name, "role") is not None for v in p.values
    ]
    guess, why = role_guess(rows)
    return guess, why.replace("give role=", "rows of other values are not turns; give role=") if guess else ""
