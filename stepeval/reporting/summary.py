"""Aggregate per-turn scores into a machine-readable summary and a category x metric table.

Every cell carries the count of scored and missing items, so a missing score is visible, never
averaged in as 0. A metric that does not apply to a category shows as "not applicable". Error rates
that carry their raw counts also get a corpus-level column, ``<metric>_corpus``: total edits over total
reference units (as the Whisper paper and VoiceBench report WER), beside the mean of per-turn rates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OVERALL = "overall"
CORPUS_SUFFIX = "_corpus"
NOT_APPLICABLE = "not applicable"


def _cell(values: np.ndarray) -> dict:
    scored = values[~np.isnan(values)]
    return {
        "mean": round(float(scored.sum() / len(scored)), 4) if len(scored) else None,  # what Series.mean() computes
        "scored": int(len(scored)),
        "missing": int(len(values) - len(scored)),
    }


def _corpus_cell(units: np.ndarray, edits: np.ndarray) -> dict:
    """Total edits / total units over the turns whose counts are known; the others count as missing."""
    known = ~np.isnan(units)
    total_units = float(units[known].sum())
    known_edits = edits[known]
    total_edits = float(np.where(np.isnan(known_edits), 0.0, known_edits).sum())  # as Series.sum() skips NaN
    return {
        "mean": round(total_edits / total_units, 4) if total_units > 0 else None,
        "scored": int(known.sum()),
        "missing": int(len(units) - known.sum()),
    }


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return frame[name].to_numpy(dtype=float, na_value=np.nan)


def summarise(frame: pd.DataFrame, metrics: list[str] | None = None) -> dict:
    """Per metric: overall and per-category cells. ``frame`` is ``records.turn_scores`` output.

    Rows are grouped once (by metric, and by metric and category) and each cell reads its rows' values as a
    numpy array, in the frame's order: the same sums as pandas' per-group ``mean()``, without a Series per cell.
    """
    not_applicable: dict[str, list[str]] = dict(frame.attrs.get("not_applicable") or {})
    metrics = metrics or list(dict.fromkeys([*frame["metric"], *not_applicable]))
    categories = set(frame["category"].unique().tolist()) if len(frame) else set()
    categories |= {c for cats in not_applicable.values() for c in cats}
    out: dict = {"metrics": {}, "categories": sorted(categories), "not_applicable": not_applicable}
    values, units, edits = _column(frame, "value"), _column(frame, "units"), _column(frame, "edits")
    rows_of_metric = frame.groupby("metric", sort=False).indices if len(frame) else {}
    rows_of_cell: dict[str, dict] = {}
    if len(frame):
        for (metric, category), rows in frame.groupby(["metric", "category"], sort=False).indices.items():
            rows_of_cell.setdefault(metric, {})[category] = rows
    for metric in metrics:
        rows = rows_of_metric.get(metric)
        cells = {category: rows_of_cell[metric][category] for category in sorted(rows_of_cell.get(metric, {}))}
        by_category = {category: _cell(values[r]) for category, r in cells.items()}
        out["metrics"][metric] = {OVERALL: _cell(values[rows]) if rows is not None else None, "by_category": by_category}
        if rows is not None and "units" in frame and not np.isnan(units[rows]).all():
            corpus = {category: _corpus_cell(units[r], edits[r]) for category, r in cells.items()}
            out["metrics"][metric + CORPUS_SUFFIX] = {OVERALL: _corpus_cell(units[rows], edits[rows]), "by_category": corpus}
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
