"""An objective metric added with its module and a config entry alone, scored, tabulated and fingerprinted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf
from hydra import compose, initialize_config_dir

from stepeval import pipeline
from stepeval.config import conf_dir, register_schemas
from stepeval.store import RecordLog

PLUGINS = "metrics.signals.extra=[{_target_:tests.signal_plugins.PeakLevel},{_target_:tests.signal_plugins.Broken}]"


def config(results: Path, *overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        base = ["dataset=sample", "model=parrot", "asr=none", "limit=1", "progress=false", f"results_dir={results}"]
        return compose("config", overrides=[*base, *overrides])


def test_a_configured_plugin_metric_is_scored_and_tabulated(tmp_path: Path):
    outcome = pipeline.run(config(tmp_path, PLUGINS, "metrics.signals.dnsmos=false", "metrics.signals.speaker=false"))
    records = RecordLog(outcome.root / "records" / "score.jsonl").load()
    replays = RecordLog(outcome.root / "records" / "replay.jsonl").load()
    assert records
    for key, record in records.items():
        samples, _ = sf.read(outcome.root / replays[key]["audio"], dtype="float32")
        want = 20 * math.log10(float(np.max(np.abs(samples))))
        assert record["metrics"]["peak_dbfs"] == round(want, 6) or abs(record["metrics"]["peak_dbfs"] - want) < 1e-4
        assert record["metrics"]["broken_metric"] is None
        assert "Broken failed: RuntimeError: this plugin always fails" in record["missing"]["broken_metric"]
    assert "peak_dbfs" in (outcome.view_dir / "table.md").read_text().splitlines()[2]
    summary = json.loads((outcome.view_dir / "summary.json").read_text())
    assert summary["metrics"]["broken_metric"]["overall"]["scored"] == 0  # missing, never 0


def test_changing_a_plugin_setting_recomputes_the_scores(tmp_path: Path):
    off = ["metrics.signals.dnsmos=false", "metrics.signals.speaker=false", "metrics.signals.pitch=false"]
    first = pipeline.run(config(tmp_path, "metrics.signals.extra=[{_target_:tests.signal_plugins.PeakLevel}]", *off))
    again = pipeline.run(config(tmp_path, "metrics.signals.extra=[{_target_:tests.signal_plugins.PeakLevel}]", *off))
    changed = pipeline.run(
        config(tmp_path, "metrics.signals.extra=[{_target_:tests.signal_plugins.PeakLevel,floor_db:-90}]", *off)
    )
    assert first.view_dir == again.view_dir and changed.view_dir != first.view_dir
    lines = RecordLog(first.root / "records" / "score.jsonl").load_all()
    turns = len(RecordLog(first.root / "records" / "replay.jsonl").load())
    assert len(lines) == 2 * turns  # the first setting once (reused the second time), the changed one once
