"""Aggregate per-turn scores into a machine-readable summary and a category x metric table.

Every cell carries the count of scored and missing items, so a missing score is visible, never
averaged in as 0. A metric that does not apply to a category shows as "not applicable". Error rates
that carry their raw counts also get a corpus-level column, ``<metric>_corpus``: total edits over total
reference units (as the Whisper paper and VoiceBench report WER), beside the mean of per-turn rates.
"""

from __future__ import annotations

import pandas as pd

OVERALL = "overall"
CORPUS_SUFFIX = "_corpus"
NOT_APPLICABLE = "not applicable"


def _cell(values: pd.Series) -> dict:
    scored = values.dropna()
    return {
        "mean": round(float(scored.mean()), 4) if len(scored) else None,
        "scored": int(len(scored)),
        "missing": int(values.isna().sum()),
    }


def _corpus_cell(part: pd.DataFrame) -> dict:
    """Total edits / total units over the turns whose counts are known; the others count as missing."""
    known = part.dropna(subset=["units"])
    units = float(known["units"].sum())
    return {
        "mean": round(float(known["edits"].sum()) / units, 4) if units > 0 else None,
        "scored": int(len(known)),
        "missing": int(len(part) - len(known)),
    }


def summarise(frame: pd.DataFrame, metrics: list[str] | None = None) -> dict:
    """Per metric: overall and per-category cells. ``frame`` is ``records.turn_scores`` output."""
    not_applicable: dict[str, list[str]] = dict(frame.attrs.get("not_applicable") or {})
    metrics = metrics or list(dict.fromkeys([*frame["metric"], *not_applicable]))
    categories = set(frame["category"].unique().tolist()) if len(frame) else set()
    categories |= {c for cats in not_applicable.values() for c in cats}
    out: dict = {"metrics": {}, "categories": sorted(categories), "not_applicable": not_applicable}
    for metric in metrics:
        part = frame[frame["metric"] == metric]
        by_category = {cat: _cell(group["value"]) for cat, group in part.groupby("category", sort=True)}
        out["metrics"][metric] = {OVERALL: _cell(part["value"]) if len(part) else None, "by_category": by_category}
        if "units" in part and part["units"].notna().any():
            corpus = {cat: _corpus_cell(group) for cat, group in part.groupby("category", sort=True)}
            out["metrics"][metric + CORPUS_SUFFIX] = {OVERALL: _corpus_cell(part), "by_category": corpus}
    return out


def format_cell(cell: dict | None, absent: str = "-") -> str:
    if cell is None:
        return absent
    mean = "n/a" if cell["mean"] is None else f"{cell['mean']:.3f}"
    return f"{mean} ({cell['scored']}/{cell['scored'] + cell['missing']})"


def _absent(summary: dict, metric: str, category: str) -> str:
    base = metric.removesuffix(CORPUS_SUFFIX)
    applicable = summary.get("not_applicable", {}).get(base, [])
    if category == OVERALL:
        return NOT_APPLICABLE if applicable else "-"
    return NOT_APPLICABLE if category in applicable else "-"


def markdown_table(summary: dict, notes: list[str] | None = None) -> str:
    """Category rows x metric columns; each cell 'mean (scored/total)'."""
    metrics = list(summary["metrics"])
    header = "| category | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    for category in [*summary["categories"], OVERALL]:
        cells = []
        for metric in metrics:
            entry = summary["metrics"][metric]
            cell = entry[OVERALL] if category == OVERALL else entry["by_category"].get(category)
            cells.append(format_cell(cell, _absent(summary, metric, category)))
        name = f"**{category}**" if category == OVERALL else category
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + (
        "\n\nEach cell: mean (scored/total turns); n/a means no turn could be scored; not applicable: the metric has no"
        " meaning there (metrics config, or a model without speech). Error rates: `<metric>` is the mean of per-turn rates,"
        " `<metric>_corpus` total edits / total reference words or characters.\n"
    )
    for note in notes or []:
        text += f"\n- {note}"
    return text + ("\n" if notes else "")
