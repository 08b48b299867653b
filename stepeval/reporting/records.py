"""Reading a view's per-turn scores from the run's record logs: the one contract every table,
statistic and report builds on.

A view (``stepeval.views``) names, for every score log, the fingerprint of the record it uses for each
(conversation, turn): the objective signals (``score.jsonl``) and each judge metric
(``judge-<metric>.jsonl``). Exactly those records are read, so verdicts of another judge, rubric or
ASR kept in the same logs (they are a cache) never mix in. A null is a missing score and stays missing.
Runs made before views existed are read the old way (the latest record per key, judge logs of the
rubrics the manifest names).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stepeval.applicability import Applicability
from stepeval.store import Key, RecordLog, load_manifest
from stepeval.views import View

SCORE_LOG_PATTERNS = ("score.jsonl", "judge-*.jsonl")
COLUMNS = ["conversation_id", "turn", "category", "language", "metric", "value", "missing_reason", "stage", "edits", "units"]


def _legacy_records(run_dir: Path, keys: set[Key] | None) -> list[tuple[str, dict]]:
    records_dir = Path(run_dir) / "records"
    logs = sorted({p for pattern in SCORE_LOG_PATTERNS for p in records_dir.glob(pattern)})
    manifest = load_manifest(run_dir)
    if manifest:
        judged = set((manifest.get("judge") or {}).get("rubrics", {}))
        logs = [p for p in logs if not p.stem.startswith("judge-") or p.stem.removeprefix("judge-") in judged]
    out = []
    for path in logs:
        for key, record in RecordLog(path).load().items():
            if keys is None or key in keys:
                out.append((path.stem, record))
    return out


def view_records(run_dir: Path, view: View) -> list[tuple[str, dict]]:
    """(log name, record) for exactly the records the view selected; a selected record that is gone
    from its log is an error naming the log (the view's numbers could not be reproduced)."""
    out = []
    for log, chosen in view.selection.items():
        path = Path(run_dir) / "records" / f"{log}.jsonl"
        index = RecordLog(path).index()
        for key, fp in chosen.items():
            record = index.get(key, fp)
            if record is None:
                raise ValueError(f"{path}: the record of {key[0]} turn {key[1]} that view {view.name} uses is missing")
            out.append((log, record))
    return out


def turn_scores(
    run_dir: Path,
    keys: set[Key] | None = None,
    applicability: Applicability | None = None,
    view: View | None = None,
) -> pd.DataFrame:
    """Long table: one row per (conversation, turn, metric); ``value`` is NaN when missing.

    ``view`` selects the records (else the legacy reading, restricted to ``keys``). Rows of a metric for
    a category it does not apply to are dropped (``applicability``, else the view's or the manifest's
    metrics config), and so are metrics a record marks not applicable (a text-only model's speech);
    ``frame.attrs['not_applicable']`` says which ({metric: [categories]}).
    """
    pairs = view_records(run_dir, view) if view is not None else _legacy_records(run_dir, keys)
    rows = []
    inapplicable: dict[str, set[str]] = {}
    for stage, record in pairs:
        missing = record.get("missing") or {}
        counts = record.get("counts") or {}
        category = record.get("category", "unknown")
        for metric in record.get("not_applicable") or {}:
            inapplicable.setdefault(metric, set()).add(category)
        for metric, value in (record.get("metrics") or {}).items():
            count = counts.get(metric) or {}
            rows.append(
                {
                    "conversation_id": record["conversation_id"],
                    "turn": int(record["turn"]),
                    "category": category,
                    "language": record.get("language"),
                    "metric": metric,
                    "value": float("nan") if value is None else float(value),
                    "missing_reason": missing.get(metric),
                    "stage": stage,
                    "edits": count.get("edits", float("nan")),
                    "units": count.get("units", float("nan")),
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if applicability is None:
        applicability = (
            Applicability.from_config(view.description.get("metrics")) if view is not None else Applicability.from_run(run_dir)
        )
    kept = applicability.filter(frame)
    dropped = {m: set(c) for m, c in (kept.attrs.get("not_applicable") or {}).items()}
    for metric, categories in inapplicable.items():
        scored = set(kept.loc[kept["metric"] == metric, "category"])
        dropped.setdefault(metric, set()).update(categories - scored)
    kept.attrs["not_applicable"] = {m: sorted(c) for m, c in dropped.items() if c}
    return kept
