"""Evidence-based column detection: every key is settled by what its values show, or the mapping fails.

Names alone are weak (``id`` may be per row, ``type`` may be free text), so each candidate is checked
against its values: audio columns hold audio references, a conversation id groups rows into
conversations whose turn indices do not repeat, a category column yields categories, a role field
marks the user turns of a chat. When a key cannot be settled the error lists the candidates for every
key and the full mapping as one line that both ``stepeval data inspect`` and ``stepeval run`` take.

The rules live by what they decide: ``layout`` (which layout, which list holds turns), ``keys`` (one
rule per key), ``evidence`` (what values show), ``chat`` (roles and content parts).
"""

from __future__ import annotations

import pandas as pd

from stepeval.data import chat, keys, layout
from stepeval.data.columns import (
    CONFIG_KEYS,
    NONE,
    ColumnSpec,
    DatasetEmpty,
    Mapping,
    SchemaError,
    describe_columns,
    is_list,
    overrides_line,
    split_path,
    text_value,
)
from stepeval.data.evidence import (  # the names detect exported before the split stay importable from here
    AUDIO_MAGIC,
    AUDIO_SUFFIXES,
    NAMES,
    NOT_USER_SIDE,
    PLACEHOLDER,
    Decision,
    Profile,
    Table,
    evidence_line,
    groups_of,
    looks_like_audio,
    name_rank,
)
from stepeval.data.layout import LAYOUT_CHOICES

REQUIRED = ("audio",)


class Detector:
    def __init__(self, df: pd.DataFrame, spec: ColumnSpec, source: str):
        self.table = Table(df, spec, source)

    @property
    def decision(self):
        return self.table.decision

    def conversation(self) -> None:
        t, d, spec = self.table, self.decision, self.table.spec
        taken: set[str] = set()
        implied = split_path(spec.audio, t.names) if spec.audio and spec.audio != NONE else None
        if spec.turns not in (None, NONE):
            t.check_given("turns", spec.turns)
            d.settle("turns", spec.turns, "given")
        elif implied is not None and t.top[implied[0]].kind in ("list", "parts"):
            d.settle("turns", implied[0], f"given audio={spec.audio} is a field of its entries")
        else:
            found = layout.list_columns(t)
            lists, answers = layout.user_side(found)
            d.candidates["turns"] = [name for name, _ in lists] + [n for n in layout.chat_like(t) if n not in dict(found)]
            if not lists:
                chats = layout.chat_like(t)
                guess = chats[0] if chats else PLACEHOLDER
                d.undecided(
                    "turns", guess, "no list column holds turns with audio" + (f" ({guess} holds turns)" if chats else "")
                )
            elif len(lists) > 1:
                ranked = sorted(lists, key=lambda item: name_rank(item[0], "turns") or 999)
                d.undecided("turns", ranked[0][0], f"several list columns hold audio: {[n for n, _ in lists]}")
            else:
                extra = f"; not {', '.join(answers)} (answer side)" if answers else ""
                d.settle("turns", lists[0][0], lists[0][1] + extra)
        turns_col = d.columns["turns"]
        taken.add(str(turns_col))
        seen = layout.entries(t, turns_col, spec.role) if turns_col in t.names else None
        if seen is not None and seen.structs:
            self.turn_fields(seen, turns_col)
        else:
            self.entries_are_audio(turns_col, taken)
        values = t.column_values(turns_col) if turns_col in t.names else None
        counts = [len(r) for r in values or [] if is_list(r)]
        if counts:
            d.evidence["turns"] = d.evidence.get("turns", "") + f"; {min(counts)}-{max(counts)} entries per row"
        keys.conversation_id_per_row(t, taken)
        d.settle("turn_index", None, "none: turns are in list order")
        self.optional_keys(taken, None)

    def entries_are_audio(self, turns_col: str, taken: set[str]) -> None:
        """Parallel lists: each entry of the turns column is one user turn's audio, a list column may hold its text."""
        t, d, spec = self.table, self.decision, self.table.spec
        if spec.audio not in (None, turns_col):
            raise SchemaError(
                f"{t.source}: dataset.columns.audio={spec.audio!r}: the entries of {turns_col!r} are audio references "
                f"themselves, not structs with fields; give audio={turns_col}"
            )
        if spec.role not in (None, NONE):
            raise SchemaError(
                f"{t.source}: dataset.columns.role={spec.role!r}: the entries of {turns_col!r} are audio references "
                "without fields, every one a user turn; give role=none"
            )
        d.settle("audio", turns_col, f"the entries of {turns_col} are the audio references")
        d.settle("role", None, "none: every entry is a user turn")
        d.candidates["audio"] = [turns_col]
        if t.given_or("text", taken):
            return
        rows = t.column_values(turns_col) or []
        lengths = [len(r) if is_list(r) else -1 for r in rows]
        lists = [p for n, p in t.top.items() if p.kind == "list" and n != turns_col]
        same = [p for p in lists if [len(v) if is_list(v) else -1 for v in p.values] == lengths]
        texts = [p for p in same if all(isinstance(i, str) and not looks_like_audio(i) for v in p.values for i in v)]
        named = [p for p in texts if name_rank(p.name, "text") is not None and not NOT_USER_SIDE.search(p.name)]
        d.candidates["text"] = [p.name for p in texts]
        if len(named) == 1:
            d.settle("text", named[0].name, "a list column named like transcripts, as many entries as the turns in every row")
        elif named:
            d.undecided("text", named[0].name, f"several list columns are named like transcripts: {[p.name for p in named]}")
        else:
            d.settle("text", None, "none: no list column of transcripts as long as the turns")

    def turn_fields(self, seen: layout.Entries, turns_col: str) -> None:
        t, d, spec = self.table, self.decision, self.table.spec
        prefix = f"{turns_col}."
        if seen.role_undecided:
            d.candidates["role"] = [seen.role]
            d.undecided("role", seen.role, seen.role_undecided)
        elif seen.role:
            d.settle("role", seen.role, f"turn field: {seen.role_note}")
        elif spec.role not in (None, NONE):
            raise SchemaError(f"{t.source}: dataset.columns.role={spec.role!r}: {seen.role_note}")
        else:
            d.settle("role", None, "given: none" if spec.role == NONE else "none: no turn field names a user role")
        fields = seen.fields
        for key in ("audio", "text"):
            value = getattr(spec, key)
            if value is None:
                continue
            name = value[len(prefix) :] if value.startswith(prefix) else value
            if value == NONE:
                d.settle(key, None, "given: none")
            elif name in fields or name.split(".")[0] in fields:
                d.settle(key, name, f"given (a field of {turns_col})")
            elif value in t.names and key == "text":
                d.settle(key, value, "given (a list column, one transcript per turn)")
            else:
                raise SchemaError(
                    f"{t.source}: dataset.columns.{key}={value!r} is neither a field of the turns in {turns_col!r} "
                    f"(fields: {sorted(fields)}) nor a column ({t.names})"
                )
        if spec.audio is None:
            keys.pick_audio(t, fields, f"fields of {turns_col}" + (" (user turns)" if seen.role else ""))
        taken = {f for f in (d.columns.get("audio"),) if f}
        if spec.text is None:
            keys.pick_text(t, fields, taken, f"fields of {turns_col}", content_fallback=True)

    def turn(self, role: str | None, role_note: str, role_guessed: bool = False) -> None:
        t, d = self.table, self.decision
        taken: set[str] = set()
        if role and role_guessed:
            d.candidates["role"] = [role]
            d.undecided("role", role, role_note)
            taken.add(chat.parse_role(role)[0] or role)
        elif role:
            d.settle("role", role, f"column: {role_note}")
            taken.add(chat.parse_role(role)[0] or role)
        elif t.spec.role == NONE:
            d.settle("role", None, "given: none")
        else:
            d.settle("role", None, "none: every row is a user turn")
        if not t.given_or("audio", taken):
            keys.pick_audio(t, {n: p for n, p in t.top.items() if n not in taken}, "columns")
        if d.columns.get("audio"):
            taken.add(str(d.columns["audio"]))
        if not t.given_or("text", taken):
            keys.pick_text(t, t.top, taken, "columns", content_fallback=False)
        if d.columns.get("text"):
            taken.add(str(d.columns["text"]))
        d.settle("turns", None, "none: one row per turn")
        indices = keys.turn_index_candidates(t, taken)
        keys.conversation_id_grouping(t, taken, indices)
        taken.update(str(d.columns[k]) for k in ("conversation_id", "turn_index") if d.columns.get(k) not in (None, NONE))
        groups = groups_of(t.column_values(d.columns["conversation_id"])) if d.columns.get("conversation_id") else None
        self.optional_keys(taken, groups)

    def optional_keys(self, taken: set[str], groups: list[list[int]] | None) -> None:
        for key in ("language", "category"):
            if not self.table.given_or(key, taken):
                keys.pick_optional(self.table, key, taken, groups)
            if self.decision.columns.get(key):
                taken.add(str(self.decision.columns[key]))

    def run(self, role: str | None = None, role_note: str = "", role_guessed: bool = False) -> Mapping:
        d = self.decision
        chosen = layout.choose(self.table)
        if chosen == "conversation":
            self.conversation()
        else:
            self.turn(role, role_note, role_guessed)
        if d.problems:
            raise SchemaError(self.failure(chosen))
        evidence = dict(d.evidence)
        columns = {k: d.columns.get(k) for k in CONFIG_KEYS if k != "layout"}
        return Mapping(layout=chosen, columns=columns, evidence=evidence, candidates=d.candidates)

    def failure(self, chosen: str) -> str:
        t, d = self.table, self.decision
        line = overrides_line({"layout": chosen, **{k: d.columns.get(k) for k in CONFIG_KEYS if k != "layout"}})
        lines = [f"{t.source}: cannot settle the column mapping:"]
        lines += [f"  - {problem}" for problem in d.problems]
        lines.append(f"  columns found: {describe_columns(t.df)}")
        lines.append("  evidence and candidates per key:")
        for key in CONFIG_KEYS:
            value = chosen if key == "layout" else d.columns.get(key)
            cands = d.candidates.get(key)
            shown = f" | candidates: {', '.join(cands)}" if cands else ""
            lines.append(f"    {evidence_line(key, value, d.evidence.get(key, ''))}{shown}")
        blank = [k for k in CONFIG_KEYS if d.columns.get(k) == PLACEHOLDER]
        if blank:  # no candidate at all: the line is not ready, and says which keys to fill in
            lines.append(f"  no column could be {', '.join(blank)}: replace {PLACEHOLDER} in the mapping with the column to use:")
        else:
            lines.append("  the full mapping, for `stepeval data inspect <source> ...` and `stepeval run ...` (edit any guess):")
        lines.append(f"  {line}")
        return "\n".join(lines)


def detect(df: pd.DataFrame, spec: ColumnSpec, source: str) -> Mapping:
    """Choose a layout and the column that fills each key, with evidence; or fail listing candidates and the line to paste.

    One row per turn with a role column (user and assistant rows): only the user rows are profiled.
    """
    if len(df) == 0:
        raise DatasetEmpty(f"dataset is empty: 0 rows in {source}")
    probe = Detector(df, spec, source)
    role, note = layout.top_role(probe.table)
    guessed = role is None and layout.choose(Table(df, spec, source)) == "turn"
    if guessed:
        role, note = layout.top_role_guess(probe.table)
    if role is None:
        return probe.run()
    column, is_user = chat.user_test(role)
    users = df[[is_user(v) for v in df[column]]].reset_index(drop=True)
    return Detector(users, spec, source).run(role, note, role_guessed=guessed)


__all__ = [
    "AUDIO_MAGIC",
    "AUDIO_SUFFIXES",
    "LAYOUT_CHOICES",
    "NAMES",
    "NOT_USER_SIDE",
    "REQUIRED",
    "Decision",
    "Detector",
    "Profile",
    "detect",
    "evidence_line",
    "looks_like_audio",
    "name_rank",
    "text_value",
]
