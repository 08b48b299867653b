"""Published rows beside measured ones in the leaderboard, and arena strengths in columns of their own.

For a StepEval-Audio-360 view the paper's Table 5 rows (GLM-4-Voice, Qwen2-Audio, Moshi, Step-Audio-Chat) are shown
beside the measured rows, each marked *reported, not reproduced*, with its source and the judge it was scored with
(GPT-4o with StepFun's unpublished prompts). They are listed apart from the measured rows in every format and never
ranked with them: different judge prompts give different numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from stepeval.reporting import paper
from stepeval.reporting.tables import Run

PUBLISHED_JUDGE = "GPT-4o (StepFun's judge prompts, unpublished)"


def is_stepeval360(run: Run) -> bool:
    dataset = (run.manifest.get("config") or {}).get("dataset") or {}
    return dataset.get("benchmark", paper.BENCHMARK) == paper.BENCHMARK


def published_rows(runs: list[Run], metrics: list[str]) -> list[dict]:
    """The paper's rows (fractions where our metric is a fraction) when a run is on StepEval-Audio-360 and the board
    shows at least one of the paper's metrics; [] otherwise."""
    if not any(is_stepeval360(run) for run in runs):
        return []
    if not any(alias in metrics for column in paper.TABLE5_COLUMNS for alias in column.aliases):
        return []  # the board shows none of the paper's columns: nothing to set beside
    rows = []
    for reference in paper.TABLE5:
        values: dict[str, float] = {}
        for column in paper.TABLE5_COLUMNS:
            metric = next((alias for alias in column.aliases if alias in metrics), column.aliases[0])
            published = reference.values[column.title]
            values[metric] = round(published / 100.0, 6) if column.percent else published
        rows.append(
            {
                "run": f"{reference.model} (published)",
                "model": reference.model,
                "status": paper.STATUS,
                "source": reference.provenance,
                "judge": PUBLISHED_JUDGE,
                "note": reference.note,
                "values": values,
            }
        )
    return rows


def published_markdown(rows: list[dict], metrics: list[str]) -> str:
    if not rows:
        return ""
    shown = [m for m in metrics if any(m in r["values"] for r in rows)] or sorted({m for r in rows for m in r["values"]})
    lines = [
        "",
        f"Published rows ({paper.STATUS}; scored by {PUBLISHED_JUDGE}, not by this harness's judge; not ranked with the "
        "measured rows above):",
        "",
        "| model | " + " | ".join(shown) + " | source |",
        "|---" * (len(shown) + 2) + "|",
    ]
    for row in rows:
        cells = [("-" if m not in row["values"] else f"{row['values'][m]:.3f}") for m in shown]
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(f"| {row['model']}{note} | " + " | ".join(cells) + f" | {row['source']} |")
    return "\n".join(lines) + "\n"


def arena_columns(path: Path | None) -> dict[str, dict]:
    """{system: {strength, low, high, rank, rank_probability}} from an ``arena.json`` (``stepeval arena``)."""
    if path is None:
        return {}
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        return {row["system"]: row for row in result["overall"]["systems"]}
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"--arena {path}: not an arena.json written by stepeval arena ({err})") from err
