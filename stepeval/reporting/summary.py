"""Aggregate per-turn scores into a machine-readable summary and a category x metric table.

Every cell carries the count of scored and missing items, so a missing score is visible,
never averaged in as 0.
"""

from __future__ import annotations

import pandas as pd

OVERALL = "overall"


def _cell(values: pd.Series) -> dict:
    scored = values.dropna()
    return {
        "mean": round(float(scored.mean()), 4) if len(scored) else None,
        "scored": int(len(scored)),
        "missing": int(values.isna().sum()),
    }


def summarise(frame: pd.DataFrame, metrics: list[str] | None = None) -> dict:
    """Per metric: overall and per-category cells. ``frame`` is ``records.turn_scores`` output."""
    metrics = metrics or list(dict.fromkeys(frame["metric"]))
    out: dict = {"metrics": {}, "categories": sorted(frame["category"].unique().tolist()) if len(frame) else []}
    for metric in metrics:
        part = frame[frame["metric"] == metric]
        by_category = {cat: _cell(group["value"]) for cat, group in part.groupby("category", sort=True)}
        out["metrics"][metric] = {OVERALL: _cell(part["value"]), "by_category": by_category}
    return out


def format_cell(cell: dict | None) -> str:
    if cell is None:
        return "-"
    mean = "n/a" if cell["mean"] is None else f"{cell['mean']:.3f}"
    return f"{mean} ({cell['scored']}/{cell['scored'] + cell['missing']})"


def markdown_table(summary: dict, notes: list[str] | None = None) -> str:
    """Category rows x metric columns; each cell 'mean (scored/total)'."""
    metrics = list(summary["metrics"])
    header = "| category | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    for category in [*summary["categories"], OVERALL]:
        cells = []
        for metric in metrics:
            entry = summary["metrics"][metric]
            cells.append(format_cell(entry[OVERALL] if category == OVERALL else entry["by_category"].get(category)))
        name = f"**{category}**" if category == OVERALL else category
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nEach cell: mean (scored/total turns); n/a means no turn could be scored.\n"
    for note in notes or []:
        text += f"\n- {note}"
    return text + ("\n" if notes else "")
