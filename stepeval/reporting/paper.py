"""The paper's layout (Step-Audio, arXiv 2502.11946) with its published numbers as reference rows.

Published numbers are *reported, not reproduced*: they were produced with StepFun's unpublished
GPT-4o judge prompts, so they sit beside our rows for orientation only, each with its exact
source. Table 7 is on a separate audio instruction-following set (paper section 6.3), not on
StepEval-Audio-360; its rows are never presented as results on this benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, Interval
from stepeval.reporting.tables import NOT_RUN, OVERALL, Run, category_table, escape_markdown, fmt

PAPER = "Step-Audio, arXiv 2502.11946"
STATUS = "reported, not reproduced"


@dataclass(frozen=True)
class Column:
    """A paper column and the metric names our judges may record it under."""

    title: str
    aliases: tuple[str, ...]
    percent: bool = False  # shown x100 when the per-turn scores are fractions in [0, 1]


@dataclass(frozen=True)
class Reference:
    model: str
    values: dict[str, float]  # column title -> published value
    provenance: str
    note: str = ""
    category: str | None = None  # Table 7 rows are per category


BENCHMARK = "stepeval360"  # the dataset configs' `benchmark` value these reference tables belong to
TABLE5_COLUMNS = (
    Column("Factuality %", ("factuality",), percent=True),
    Column("Relevance %", ("relevance",), percent=True),
    Column("Chat Score", ("chat_score", "chat")),
)
TABLE5_SOURCE = f"{PAPER}, Table 5 (StepEval-Audio-360; GPT-4o judge on the text of input and output, prompts unpublished)"
TABLE5 = (
    Reference("GLM4-Voice", {"Factuality %": 54.7, "Relevance %": 66.4, "Chat Score": 3.49}, TABLE5_SOURCE),
    Reference("Qwen2-Audio", {"Factuality %": 22.6, "Relevance %": 26.3, "Chat Score": 2.27}, TABLE5_SOURCE),
    Reference(
        "Moshi",
        {"Factuality %": 1.0, "Relevance %": 0.0, "Chat Score": 1.49},
        TABLE5_SOURCE,
        note="reference only: the set is mostly Chinese",
    ),
    Reference("Step-Audio-Chat", {"Factuality %": 66.4, "Relevance %": 75.2, "Chat Score": 4.11}, TABLE5_SOURCE),
)

TABLE7_COLUMNS = (
    Column("Instruction following", ("instruction_following",)),
    Column("Audio quality", ("audio_quality",)),
)
TABLE7_SOURCE = (
    f"{PAPER}, Table 7 (a separate audio instruction-following set, section 6.3, NOT StepEval-Audio-360; MOS-style 1-5)"
)
_TABLE7 = {  # category -> {model: (instruction following, audio quality)}
    "Languages": {"GLM-4-Voice": (1.9, 2.9), "Step-Audio": (3.8, 3.3)},
    "Role-playing": {"GLM-4-Voice": (3.8, 3.2), "Step-Audio": (4.2, 3.6)},
    "Singing/RAP": {"GLM-4-Voice": (2.1, 2.4), "Step-Audio": (2.4, 4.0)},
    "Voice control": {"GLM-4-Voice": (3.6, 3.3), "Step-Audio": (4.4, 4.1)},
}
TABLE7 = tuple(
    Reference(model, {"Instruction following": inst, "Audio quality": quality}, TABLE7_SOURCE, category=category)
    for category, models in _TABLE7.items()
    for model, (inst, quality) in models.items()
)


def find_metric(run: Run, column: Column) -> str | None:
    """The run's metric for a paper column: the first of the column's aliases the run scored."""
    present = set(run.metrics())
    return next((alias for alias in column.aliases if alias in present), None)


def _scale(run: Run, metric: str, column: Column) -> float:
    if not column.percent:
        return 1.0
    values = run.scores.loc[run.scores["metric"] == metric, "value"].dropna()
    return 100.0 if len(values) and values.between(0.0, 1.0).all() else 1.0


def _scaled(cell: Interval | None, factor: float) -> str:
    if cell is None:
        return NOT_RUN
    counts = f"({cell.scored}/{cell.scored + cell.missing})"
    if cell.mean is None:
        return f"n/a {counts}"
    digits = 1 if factor == 100.0 else 2
    mean = fmt(cell.mean * factor, digits)
    if cell.low is None:
        return f"{mean} {counts}"
    return f"{mean} [{fmt(cell.low * factor, digits)}, {fmt(cell.high * factor, digits)}] {counts}"


def _column_cells(run: Run, columns: tuple[Column, ...], seed: int, resamples: int) -> dict[str, dict]:
    """Per column: {"metric": name or None, "table": category_table entry or None, "factor": scale}."""
    out = {}
    for column in columns:
        metric = find_metric(run, column)
        if metric is None:
            out[column.title] = {"metric": None, "entry": None, "factor": 1.0}
            continue
        entry = category_table(run.scores, [metric], seed=seed, resamples=resamples)["metrics"][metric]
        out[column.title] = {"metric": metric, "entry": entry, "factor": _scale(run, metric, column)}
    return out


def table5_rows(runs: list[Run], seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> pd.DataFrame:
    """Table 5 layout: our runs (overall, with intervals) then the published rows with their provenance."""
    rows = []
    for run in runs:
        cells = _column_cells(run, TABLE5_COLUMNS, seed, resamples)
        row = {"model": f"{run.model} ({run.name})", "status": "this run", "source": "measured here"}
        for title, info in cells.items():
            row[title] = _scaled(info["entry"][OVERALL] if info["entry"] else None, info["factor"])
        rows.append(row)
    for ref in TABLE5:
        model = f"{ref.model} ({ref.note})" if ref.note else ref.model
        row = {"model": model, "status": STATUS, "source": ref.provenance}
        row.update({c.title: _published(ref.values[c.title], c) for c in TABLE5_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *(c.title for c in TABLE5_COLUMNS), "status", "source"])


def table7_rows(run: Run, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> pd.DataFrame:
    """Table 7 layout: instruction following and audio quality per category for this run, then the
    published Table 7 cells (another data set) with their provenance."""
    cells = _column_cells(run, TABLE7_COLUMNS, seed, resamples)
    categories = sorted(run.scores["category"].dropna().unique().tolist())
    rows = []
    if all(info["entry"] is None for info in cells.values()):
        categories = []  # nothing measured: one "not run" row instead of one per category
    for category in [*categories, OVERALL]:
        row = {"category": category, "model": run.model, "status": "this run", "source": "measured here"}
        for title, info in cells.items():
            entry = info["entry"]
            cell = None if entry is None else (entry[OVERALL] if category == OVERALL else entry["by_category"].get(category))
            row[title] = NOT_RUN if entry is None else (_scaled(cell, info["factor"]) if cell else "n/a (0/0)")
        rows.append(row)
    for ref in TABLE7:
        row = {"category": ref.category, "model": ref.model, "status": STATUS, "source": ref.provenance}
        row.update({c.title: _published(ref.values[c.title], c) for c in TABLE7_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["category", "model", *(c.title for c in TABLE7_COLUMNS), "status", "source"])


def _published(value: float, column: Column) -> str:
    return f"{value:.1f}" if column.percent or column.title != "Chat Score" else f"{value:.2f}"


def markdown(frame: pd.DataFrame) -> str:
    """A reference-row table as Markdown; the long provenance goes below the table, once per source."""
    sources = list(dict.fromkeys(frame["source"]))
    marks = {s: f"[{i}]" for i, s in enumerate(sources, start=1)}
    shown = frame.drop(columns=["source"]).copy()
    shown["status"] = [f"{st} {marks[src]}" for st, src in zip(frame["status"], frame["source"], strict=True)]
    header = list(shown.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in shown.iterrows():
        lines.append("| " + " | ".join(escape_markdown(row[c]) for c in header) + " |")
    notes = "\n".join(f"{marks[s]} {s}" for s in sources)
    return "\n".join(lines) + "\n\n" + notes + "\n"
