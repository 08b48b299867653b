"""Running `stepeval run` as a real subprocess, and reading what it left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stepeval.store import RecordLog

VOLATILE = {"timings", "usage", "latency"}  # wall-clock fields and the load they were measured under


def run_command(results: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "stepeval.cli", "run", *overrides, f"results_dir={results}", "progress=false"]


def stepeval_run(results: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(run_command(results, *overrides), capture_output=True, text=True, timeout=timeout, env=env)


def only_run(results: Path) -> Path:
    runs = [p for p in results.iterdir() if p.is_dir() and p.name != "sweeps"]
    assert len(runs) == 1, runs
    return runs[0]


def stable_records(run_dir: Path, stage: str) -> dict:
    """A stage's records without their wall-clock fields, keyed by (conversation, turn)."""
    records = RecordLog(run_dir / "records" / f"{stage}.jsonl").load()
    return {key: {k: v for k, v in record.items() if k not in VOLATILE} for key, record in records.items()}


def view_dir(run_dir: Path) -> Path:
    """The run's one view folder (a test that makes several views names the one it wants)."""
    found = sorted((run_dir / "views").glob("*/view.json"))
    assert len(found) == 1, found
    return found[0].parent


def latest_view(run_dir: Path) -> Path:
    """The view folder the run's last session wrote."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return run_dir / "views" / manifest["sessions"][-1]["view"]


def summary(run_dir: Path) -> dict:
    return json.loads((view_dir(run_dir) / "summary.json").read_text())


def raw_metric_values(run_dir: Path) -> dict[str, list[float | None]]:
    """Per metric, every value of the run's score records that the packaged metrics config applies to the
    record's category, read from the JSON lines and the YAML by hand (independently of stepeval's readers).
    For a run scored once, with one view: every record in the log is current."""
    import yaml

    from stepeval.config import conf_dir

    rules = yaml.safe_load((conf_dir() / "metrics" / "default.yaml").read_text())["rules"]
    values: dict[str, list[float | None]] = {}
    for line in (run_dir / "records" / "score.jsonl").read_text().splitlines():
        record = json.loads(line)
        for metric, value in record["metrics"].items():
            where = rules.get(metric, {}).get("applies_to", ["all"])
            if "all" in where or record["category"] in where:
                values.setdefault(metric, []).append(value)
    return values
