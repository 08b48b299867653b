"""A run made before typed records and views (stepeval 0.1.0 at dc82beb, kept in tests/data/legacy_run) reopens
under today's code: the same command finds the same folder, its replies are reused, and its records read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from stepeval import pipeline
from stepeval.config import conf_dir, register_schemas
from stepeval.reporting.tables import load_run

LEGACY = Path(__file__).parent / "data" / "legacy_run"


def test_a_legacy_run_reads_and_resumes_without_replaying(tmp_path: Path, capsys: pytest.CaptureFixture):
    results = shutil.copytree(LEGACY, tmp_path / "results")
    (old,) = results.iterdir()
    legacy = load_run(old)  # no views yet: read the old way
    assert legacy.view is None and set(legacy.scores["conversation_id"]) == {"sample-singing-en"}
    assert legacy.scores.loc[legacy.scores["metric"] == "duration_s", "value"].tolist() == [2.0, 2.0]

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=sample", "model=silence", "asr=none", "limit=1", "progress=false"])
    cfg.results_dir = str(results)
    outcome = pipeline.run(cfg)
    assert outcome.root == old  # the run name did not change
    printed = capsys.readouterr().out
    assert "replay: 2 records: 2 reused, 0 computed" in printed
    # the scores are recomputed once: signals-v4 corrected the error-rate normalisation (a fingerprint change)
    assert "score: 2 records: 0 reused, 2 computed" in printed
    again = pipeline.run(cfg)
    assert "score: 2 records: 2 reused, 0 computed" in capsys.readouterr().out
    assert load_run(again.view_dir).scores["value"].notna().any()
