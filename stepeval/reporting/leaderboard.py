"""``stepeval leaderboard <runs...>``: one table over many runs, as Markdown, CSV, LaTeX and JSON.

Rows are runs (models), columns are metrics; every cell carries the mean, a 95% interval that
resamples conversations, and the scored/missing counts. The CSV and JSON hold the numbers
unformatted, for plotting or further analysis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from stepeval.judging import identity as judge_identity
from stepeval.reporting import latency, validity
from stepeval.reporting import published as published_mod
from stepeval.reporting.mismatch import mismatches
from stepeval.reporting.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED
from stepeval.reporting.tables import (
    CELL_LEGEND,
    NOT_RUN,
    Run,
    direction,
    direction_word,
    expand_run_dirs,
    format_interval,
    interval,
    load_run,
)

FORMATS = ("md", "csv", "tex", "json")
FIELDS = ("mean", "low", "high", "scored", "missing", "conversations")
IDENTITY_COLUMNS = ("run", "view", "model", "judge", "asr")  # what makes two rows two rows
# latency columns (docs/latency.md), each read with the run's "latency protocol" column
LATENCY_COLUMNS = {
    "p50 first audio": ("first_audio_s", "p50"),
    "p95 first audio": ("first_audio_s", "p95"),
    "p50 first speech": ("first_speech_s", "p50"),
}


def _describe(run: Run) -> dict:
    """The row's identity: run, view, model, judge (the slug of its model and the key of its whole
    identity) and ASR, so two rows that differ only by judge read as two judges."""
    config = run.manifest.get("config", {})
    judged = run.provenance()["judge"]
    identity = judge_identity.of(judged)
    names = run.view.description.get("names", {}) if run.view is not None else {}
    asr = (run.view.description.get("asr") if run.view is not None else run.manifest.get("asr")) or {}
    return {
        "run": run.label,
        "view": run.view.name if run.view is not None else None,
        "subset": run.subset or None,
        "model": run.model,
        "dataset": (config.get("dataset") or {}).get("name"),
        "asr": names.get("asr") or asr.get("name") or asr.get("model") or (config.get("asr") or {}).get("name"),
        "judge": judge_identity.slug(identity),
        "judge_key": judge_identity.key(identity),
        "judge_config": names.get("judge_config") or (run.manifest.get("judge") or {}).get("name"),
        "history": run.manifest.get("history"),
        "path": str(run.root),
        "judge_validity": validity.line(run.root, run.manifest, judge=judged),
    }


def build(
    runs: list[Run],
    metrics: list[str] | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    arena: dict[str, dict] | None = None,
) -> dict:
    """The leaderboard as data: {"metrics": [...], "rows": [{run..., "cells": {metric: Interval | None}}], ...};
    "published": the paper's rows for a StepEval-Audio-360 view (reported, not reproduced), apart from the rows;
    ``arena``: {system: strength row} of an ``arena.json``, shown in columns of their own."""
    if metrics is None:
        metrics = list(dict.fromkeys(m for run in runs for m in run.metrics()))
    rows = []
    for run in runs:
        present = set(run.metrics())
        cells = {m: (interval(run.scores, m, seed=seed, resamples=resamples) if m in present else None) for m in metrics}
        row = {**_describe(run), **latency.board_entry(run.root, seed, min(resamples, latency.RESAMPLES)), "cells": cells}
        if arena:
            row["arena"] = arena.get(row["model"])
        rows.append(row)
    directions = {m: direction(m, runs[0] if runs else None) for m in metrics}
    datasets = {json.dumps(run.manifest.get("dataset", {}).get("files_sha256"), sort_keys=True) for run in runs}
    notes = []
    if len(datasets) > 1:
        notes.append("the runs are on different dataset files (files_sha256 differ): their scores are not comparable")
    subsets = [run.label for run in runs if run.subset]
    if subsets:
        notes.append(f"SUBSET views (not the whole dataset): {', '.join(subsets)}")
    if len(runs) > 1:
        differ = sorted({m.aspect for run in runs[1:] for m in mismatches(runs[0], run)})
        if differ:
            notes.append(f"the runs were scored differently ({', '.join(differ)} differ): compare their numbers with care")
    latency_note = latency.board_note(rows)
    if latency_note:
        notes.append(latency_note)
    absent = [m for m in metrics if all(row["cells"][m] is None for row in rows)]
    if absent:
        notes.append(f"not run in any of these runs: {', '.join(absent)}")
    return {
        "metrics": metrics,
        "directions": directions,
        "rows": rows,
        "seed": seed,
        "resamples": resamples,
        "level": DEFAULT_LEVEL,
        "notes": notes,
        "published": published_mod.published_rows(runs, metrics),
        "arena": bool(arena),
    }


def arena_cell(row: dict) -> str:
    """'strength [low, high] (rank r, P=p)' of the row's system in the arena, or '-' when it was not in it."""
    entry = row.get("arena")
    if not entry or entry.get("strength") is None:
        return "-"
    ci = "" if entry.get("low") is None else f" [{entry['low']:.3f}, {entry['high']:.3f}]"
    prob = "" if entry.get("rank_probability") is None else f", P={entry['rank_probability']:.2f}"
    return f"{entry['strength']:.3f}{ci} (rank {entry['rank']}{prob})"


def numbers_frame(board: dict) -> pd.DataFrame:
    """Flat numbers: one row per run, ``<metric>_<field>`` columns (empty where not run), ``<metric>_status``."""
    rows = []
    for row in board["rows"]:
        flat = {k: v for k, v in row.items() if k not in ("cells", "arena")}
        flat["status"] = "measured"
        if board.get("arena"):
            entry = row.get("arena") or {}
            for name in ("strength", "low", "high", "rank", "rank_probability"):
                flat[f"arena_{name}"] = entry.get(name)
        for metric in board["metrics"]:
            cell = row["cells"][metric]
            flat[f"{metric}_status"] = NOT_RUN if cell is None else ("ok" if cell.mean is not None else "no scored turn")
            for name in FIELDS:
                flat[f"{metric}_{name}"] = None if cell is None else getattr(cell, name)
        rows.append(flat)
    for ref in board.get("published") or []:  # marked, never ranked with the measured rows
        flat = {"run": ref["run"], "model": ref["model"], "judge": ref["judge"], "status": ref["status"], "source": ref["source"]}
        for metric in board["metrics"]:
            value = ref["values"].get(metric)
            flat[f"{metric}_status"] = ref["status"] if value is not None else NOT_RUN
            flat[f"{metric}_mean"] = value
        rows.append(flat)
    return pd.DataFrame(rows)


def display_frame(board: dict) -> pd.DataFrame:
    """Formatted cells for Markdown and LaTeX: 'mean [low, high] (scored/total)'."""
    rows = []
    for row in board["rows"]:
        shown = {k: row[k] or "" for k in IDENTITY_COLUMNS}
        shown["judge"] = row["judge_key"] if row["judge"] != judge_identity.NO_JUDGE else row["judge"]  # exact: slug + hash
        shown.update({m: format_interval(row["cells"][m]) for m in board["metrics"]})
        shown.update({title: latency.board_cell(row, m, k) for title, (m, k) in LATENCY_COLUMNS.items()})
        shown["latency protocol"] = row.get("latency_protocol") or "-"
        if board.get("arena"):
            shown["arena strength"] = arena_cell(row)
        rows.append(shown)
    timed = any(row.get("latency_protocol") for row in board["rows"])
    columns = [
        *IDENTITY_COLUMNS,
        *board["metrics"],
        *((*LATENCY_COLUMNS, "latency protocol") if timed else ()),
        *(["arena strength"] if board.get("arena") else []),
    ]
    return pd.DataFrame(rows, columns=columns)


def to_json(board: dict) -> str:
    rows = []
    for row in board["rows"]:
        cells = {m: ({"status": NOT_RUN} if c is None else {"status": "ok", **c.to_dict()}) for m, c in row["cells"].items()}
        rows.append({**{k: v for k, v in row.items() if k != "cells"}, "metrics": cells})
    payload = {
        "metrics": board["metrics"],
        "directions": {m: direction_word(d) for m, d in board["directions"].items()},
        "interval": {
            "level": board["level"],
            "method": "cluster bootstrap over conversations",
            "resamples": board["resamples"],
            "seed": board["seed"],
        },
        "rows": rows,
        "published": board.get("published") or [],
        "notes": board["notes"],
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def to_markdown(board: dict) -> str:
    frame = display_frame(board)
    header = ", ".join(f"{m}: {direction_word(d)}" for m, d in board["directions"].items())
    text = frame.to_markdown(index=False) + f"\n\n{CELL_LEGEND}\n\nDirections: {header}.\n"
    text += "".join(f"\n{_row_name(row)}: {row['judge_validity']}" for row in board["rows"]) + "\n"
    text += published_mod.published_markdown(board.get("published") or [], board["metrics"])
    if board.get("arena"):
        text += "\narena strength: Bradley-Terry strength from `stepeval arena` (pairwise, both orders) with its 95% interval.\n"
    return text + "".join(f"\n- {n}" for n in board["notes"]) + ("\n" if board["notes"] else "")


def _row_name(row: dict) -> str:
    return f"{row['run']} / {row['view']}" if row.get("view") else row["run"]


def to_latex(board: dict) -> str:
    frame = display_frame(board)
    caption = "Overall scores: mean [95\\% cluster-bootstrap interval] (scored/total turns)."
    text = frame.to_latex(index=False, escape=True, caption=caption, label="tab:stepeval-leaderboard")
    refs = board.get("published") or []
    if refs:
        shown = [m for m in board["metrics"] if any(m in r["values"] for r in refs)]
        published = pd.DataFrame(
            [{"model": r["model"], **{m: r["values"].get(m, "-") for m in shown}, "source": r["source"]} for r in refs]
        )
        caption = f"Published, {published_mod.paper.STATUS} ({published_mod.PUBLISHED_JUDGE}); not ranked with the rows above."
        text += published.to_latex(index=False, escape=True, caption=caption, label="tab:stepeval-published")
    return text


def write(board: dict, out: Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    writers = {
        "md": to_markdown,
        "csv": lambda b: numbers_frame(b).to_csv(index=False),
        "tex": to_latex,
        "json": to_json,
    }
    paths = {}
    for fmt_name in formats:
        path = out / f"leaderboard.{fmt_name}"
        path.write_text(writers[fmt_name](board), encoding="utf-8")
        paths[fmt_name] = path
    return paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepeval leaderboard", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (results/<run>), or folders holding runs (a sweep)")
    p.add_argument("--out", type=Path, default=Path("leaderboard"), help="output folder (default: ./leaderboard)")
    p.add_argument("--metrics", nargs="+", help="metrics to show, in this order (default: every metric of the runs)")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (recorded in the JSON)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    p.add_argument("--arena", type=Path, help="an arena.json of `stepeval arena`: its strengths in columns of their own")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        runs = [load_run(path) for path in expand_run_dirs(args.runs)]
        arena = published_mod.arena_columns(args.arena)
    except (FileNotFoundError, ValueError) as err:
        print(f"stepeval leaderboard: error: {err}", file=sys.stderr)
        return 2
    metrics = [m for item in args.metrics for m in item.split(",") if m] if args.metrics else None
    board = build(runs, metrics, seed=args.seed, resamples=args.resamples, arena=arena)
    paths = write(board, args.out, tuple(args.formats))
    print(to_markdown(board))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
