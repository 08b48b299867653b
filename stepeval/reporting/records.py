"""Reading a run's per-turn scores from its record logs: the one contract every table,
statistic and report builds on.

Every scoring stage writes ``records/<stage>.jsonl`` whose records carry
``conversation_id``, ``turn``, ``category`` and ``metrics`` ({name: number or null}) with
``missing`` ({name: reason}). The objective-signal stage writes ``score.jsonl``; LLM/audio
judges write ``judge-<metric>.jsonl``. A null is a missing score and stays missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stepeval.applicability import Applicability
from stepeval.store import Key, RecordLog, load_manifest

SCORE_LOG_PATTERNS = ("score.jsonl", "judge-*.jsonl")
COLUMNS = ["conversation_id", "turn", "category", "language", "metric", "value", "missing_reason", "stage"]


def score_logs(run_dir: Path) -> list[Path]:
    """The run's score logs. Judge logs count only for the metrics the run's manifest says its judge
    scores now: verdicts of an earlier judge configuration stay on disk (and cached), out of tables."""
    records = Path(run_dir) / "records"
    logs = sorted({p for pattern in SCORE_LOG_PATTERNS for p in records.glob(pattern)})
    manifest = load_manifest(run_dir)
    if not manifest:
        return logs
    judged = set((manifest.get("judge") or {}).get("rubrics", {}))
    return [p for p in logs if not p.stem.startswith("judge-") or p.stem.removeprefix("judge-") in judged]


def turn_scores(run_dir: Path, keys: set[Key] | None = None, applicability: Applicability | None = None) -> pd.DataFrame:
    """Long table: one row per (conversation, turn, metric); ``value`` is NaN when missing.

    ``keys`` restricts to the given (conversation id, turn) pairs (the current dataset selection).
    Rows of a metric for a category it does not apply to are dropped (``applicability``, else the
    run manifest's ``config.metrics``); ``frame.attrs['not_applicable']`` says which.
    """
    rows = []
    for path in score_logs(run_dir):
        for key, record in RecordLog(path).load().items():
            if keys is not None and key not in keys:
                continue
            missing = record.get("missing", {})
            for metric, value in record.get("metrics", {}).items():
                rows.append(
                    {
                        "conversation_id": record["conversation_id"],
                        "turn": int(record["turn"]),
                        "category": record.get("category", "unknown"),
                        "language": record.get("language"),
                        "metric": metric,
                        "value": float("nan") if value is None else float(value),
                        "missing_reason": missing.get(metric),
                        "stage": path.stem,
                    }
                )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return (applicability or Applicability.from_run(run_dir)).filter(frame)
