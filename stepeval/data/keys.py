"""Per-key rules: which column (or turn field) fills audio, text, conversation_id, turn_index, category, language.

Each rule settles its key on what the values show (``Decision.settle`` with one line of evidence) or
leaves it undecided with its candidates; names alone never settle a key whose values contradict them.
"""

from __future__ import annotations

from stepeval.data.columns import NONE
from stepeval.data.evidence import (
    ID_WORD,
    NOT_USER_SIDE,
    PLACEHOLDER,
    Profile,
    Table,
    as_int,
    by_name,
    consistent_index,
    groups_of,
    name_rank,
    partition,
    top_values,
    varies,
)


def pick_audio(table: Table, profiles: dict[str, Profile], where: str) -> None:
    d = table.decision
    content = [p for p in profiles.values() if p.audio_share >= 0.8]
    user_side = [p for p in content if not NOT_USER_SIDE.search(p.name)] or content
    named = [p for _, p in by_name("audio", profiles, set()) if p.kind in ("str", "audio", "bytes")]
    d.candidates["audio"] = [p.name for p in content] or [p.name for p in named]
    if len(user_side) == 1:
        p = user_side[0]
        others = [c.name for c in content if c is not p]
        extra = f"; not {', '.join(others)} (answer side)" if others else ""
        parts = " (the audio part of each content list)" if p.kind == "parts" else ""
        d.settle("audio", p.name, f"{where}: {p.audio_share:.0%} of values are audio{parts} (e.g. {p.example}){extra}")
    elif len(user_side) > 1:
        ranked = sorted(user_side, key=lambda p: name_rank(p.name.split(".")[-1], "audio") or 999)
        d.undecided("audio", ranked[0].name, f"several {where} hold audio: {', '.join(p.name for p in user_side)}")
    elif len(named) == 1:
        p = named[0]
        d.settle("audio", p.name, f"{where}: named like audio; values (e.g. {p.example}) are matched to files by path or name")
    else:
        texts = [p for p in profiles.values() if p.kind in ("str", "parts")]
        guess = named[0].name if named else texts[0].name if len(texts) == 1 else PLACEHOLDER
        d.undecided(
            "audio",
            guess,
            f"no {where} holds audio references" + (f"; named like audio: {d.candidates['audio']}" if named else ""),
        )


def pick_text(table: Table, profiles: dict[str, Profile], taken: set[str], where: str, content_fallback: bool) -> None:
    d = table.decision
    usable = {
        n: p
        for n, p in profiles.items()
        if p.kind == "str" and p.audio_share < 0.5 and n not in taken and not ID_WORD.search(n.split(".")[-1])
    }
    named = [p for r, p in by_name("text", usable, taken) if not NOT_USER_SIDE.search(p.name)]
    d.candidates["text"] = [p.name for p in named] or list(usable)
    audio = profiles.get(str(d.columns.get("audio")))
    if named:
        best = named[0]
        same = [p for p in named[1:] if name_rank(p.name, "text") == name_rank(best.name, "text")]
        if same:
            d.undecided("text", best.name, f"several {where} are named like a transcript: {[best.name, *[p.name for p in same]]}")
        else:
            d.settle("text", best.name, f"{where}: named like a transcript (e.g. {best.example})")
    elif content_fallback and len(usable) == 1:
        best = next(iter(usable.values()))
        d.settle("text", best.name, f"{where}: the only text field (e.g. {best.example})")
    elif content_fallback and len(usable) > 1:
        d.undecided("text", NONE, f"several {where} hold text and none is named like a transcript: {list(usable)}")
    elif audio is not None and audio.kind == "parts":
        d.candidates["text"] = [audio.name]
        d.settle(
            "text",
            None,
            f"none: the text parts of {audio.name} may be instructions, not a transcript of the audio; "
            f"text={audio.name} takes them as the transcript",
        )
    else:
        d.settle("text", None, "none: no transcript column (history=transcript needs one)")


def pick_optional(table: Table, key: str, taken: set[str], groups: list[list[int]] | None) -> None:
    """category / language: a name match whose values are not all empty; for category also low-cardinality columns."""
    d, rows = table.decision, table.rows
    profiles = {n: p for n, p in table.all_scalar_paths().items() if n not in taken}
    named = [(r, p) for r, p in by_name(key, profiles, taken) if p.kind in ("str", "null")]
    too_many = key == "category" and rows > 20
    rejected = [f"{p.name} (every value empty: it would yield only 'unknown')" for _, p in named if p.nonnull == 0]
    rejected += [f"{p.name} (unique per row: {p.unique} values)" for _, p in named if too_many and p.nonnull and p.unique == rows]
    good = [p for _, p in named if p.nonnull and not (too_many and p.unique == rows)]
    content = []
    if key == "category":
        limit = max(2, min(60, rows // 2))
        content = [
            p
            for p in profiles.values()
            if p.kind == "str" and p not in good and 2 <= p.unique <= limit and p.audio_share == 0 and not varies(p, groups)
            and (groups is None or p.unique < len(groups))
            and name_rank(p.name.split(".")[-1], "language") is None
            and name_rank(p.name.split(".")[-1], "role") is None
        ]  # fmt: skip
    d.candidates[key] = [p.name for p in good] + [p.name for p in content]
    note = f"; rejected: {', '.join(rejected)}" if rejected else ""
    if good:
        p = good[0]
        d.settle(key, p.name, f"named like a {key}; {p.unique} values ({top_values(p)}){note}")
    elif content:
        shown = ", ".join(f"{p.name} ({p.unique} values: {top_values(p)})" for p in content[:4])
        d.undecided(key, content[0].name, f"no column is named like a {key}; columns that could be: {shown}{note}")
    elif key == "category":
        d.settle(key, None, f"none: no category column, every conversation is 'unknown'{note}")
    else:
        d.settle(key, None, f"none: detected from each conversation's transcript{note}")


def conversation_id_per_row(table: Table, taken: set[str]) -> None:
    """One row per conversation: a column named like an id, unique per row.

    A column named exactly like a conversation id (``id``, ``conversation_id``, ...) that repeats is taken
    anyway, so that loading refuses the duplicate ids by name instead of numbering rows silently.
    """
    d, rows = table.decision, table.rows
    if table.given_or("conversation_id", taken):
        return
    named = [(r, p) for r, p in by_name("conversation_id", table.top, taken) if p.scalar]
    unique = [p for _, p in named if p.unique == rows == p.nonnull]
    d.candidates["conversation_id"] = [p.name for _, p in named]
    if unique:
        p = unique[0]
        d.settle("conversation_id", p.name, f"named like an id, unique per row ({rows} values, e.g. {p.example})")
        taken.add(p.name)
        return
    exact = [p for r, p in named if r < 100 and (ID_WORD.search(p.name) or p.name.lower().endswith("id"))]
    if exact:
        p = exact[0]
        d.settle("conversation_id", p.name, f"named like a conversation id, but {p.unique} values for {rows} rows: duplicates")
        taken.add(p.name)
        return
    why = "; ".join(f"{p.name} repeats ({p.unique} values for {rows} rows)" for _, p in named)
    d.settle(
        "conversation_id", None, "none: conversations are numbered by row (row0000, ...)" + (f"; rejected {why}" if why else "")
    )


def turn_index_candidates(table: Table, taken: set[str]) -> list[Profile]:
    given = table.given("turn_index")
    if given is not None:
        return [] if given == NONE else [table.check_given("turn_index", given)]
    return [p for _, p in by_name("turn_index", table.top, taken) if p.scalar and p.integer and p.nonnull == table.rows]


def conversation_id_grouping(table: Table, taken: set[str], indices: list[Profile]) -> None:
    """One row per turn: a column named like an id that groups rows into conversations whose turn index never repeats."""
    d, rows = table.decision, table.rows
    if table.given("conversation_id") is not None:
        table.given_or("conversation_id", taken)
        pick_turn_index(table, indices, d.columns["conversation_id"], taken)
        return
    scalars = {n: p for n, p in table.top.items() if p.scalar and n not in taken and p.nonnull == rows}
    index_names = {p.name for p in indices}
    named = [p for _, p in by_name("conversation_id", scalars, index_names)]
    strong, weak, notes = [], [], []
    for p in named:
        groups = groups_of(p.values)
        if len(groups) == rows:
            weak.append(p)
            notes.append(f"{p.name} is unique per row ({rows} values): every conversation would have one turn")
            continue
        index = consistent_index(groups, indices)
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
        and 1 < p.unique < rows
        and consistent_index(groups_of(p.values), indices) is not None
        and name_rank(p.name, "category") is None
        and name_rank(p.name, "language") is None
    ]  # fmt: skip  (without a turn index, any low-cardinality column "groups" rows: no evidence)
    d.candidates["conversation_id"] = [p.name for p, _, _ in strong] + [p.name for p in content] + [p.name for p in weak]
    note = f"; rejected: {'; '.join(notes)}" if notes else ""
    if strong and len({partition(g) for _, g, _ in strong}) == 1:
        p, groups, _ = strong[0]
        sizes = [len(g) for g in groups]
        d.settle(
            "conversation_id",
            p.name,
            f"named like a conversation id; groups {rows} rows into {len(groups)} conversations of "
            f"{min(sizes)}-{max(sizes)} turns{note}",
        )
        taken.add(p.name)
        pick_turn_index(table, indices, p.name, taken)
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
        d.undecided("conversation_id", name, why)
        d.columns["turn_index"] = NONE if not spread else spread[0].name
        return
    else:
        d.undecided("conversation_id", NONE, "no column groups rows into conversations")
    first = d.columns.get("conversation_id")
    pick_turn_index(table, indices, first if first not in (None, NONE) else None, taken)


def pick_turn_index(table: Table, indices: list[Profile], conv_col: str | None, taken: set[str]) -> None:
    d = table.decision
    if table.given("turn_index") is not None:
        table.given_or("turn_index", taken)
        return
    d.candidates["turn_index"] = [p.name for p in indices]
    groups = groups_of(table.column_values(conv_col)) if conv_col else None
    if groups is not None and all(len(g) == 1 for g in groups):
        d.settle("turn_index", None, "none: every conversation has one turn")
        return
    index = consistent_index(groups, indices) if groups is not None else None
    if index is not None:
        values = [as_int(v) for v in index.values]
        d.settle("turn_index", index.name, f"integers {min(values)}..{max(values)}, none repeated within a conversation")
        taken.add(index.name)
    else:
        d.settle("turn_index", None, "none: rows keep their file order within a conversation")
