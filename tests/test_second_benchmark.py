"""A second benchmark (spoken_qa_mini: single-turn spoken QA, audio embedded the way `datasets` writes it) runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stepeval.data import loader


def test_packaged_spoken_qa_loads_through_datasets(tmp_path: Path):
    ds = loader.load_configured(
        {
            "source": "packaged",
            "repo_id": "spoken_qa_mini",
            "split": "test",
            "cache_dir": str(tmp_path),
            "columns": {"layout": "turn", "conversation_id": "question_id", "turn_index": "none", "category": "subject"},
        }
    )
    assert ds.files.provenance["loader"].startswith("datasets ")
    assert [len(c.turns) for c in ds.conversations] == [1, 1, 1, 1]
    assert dict(ds.counts("language")) == {"en": 2, "zh": 2}
    assert {p.suffix for p in (c.turns[0].audio_path for c in ds.conversations)} == {".flac", ".wav"}


@pytest.mark.slow
def test_run_second_benchmark_end_to_end(tmp_path: Path):
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "stepeval.cli",
        "run",
        "dataset=spoken_qa_mini",
        "model=parrot",
        "asr=none",
        f"results_dir={tmp_path / 'results'}",
        "progress=false",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 conversations" in result.stdout and "replay: 4 records: 0 reused, 4 computed" in result.stdout
    (run,) = (tmp_path / "results").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["provenance"]["name"] == "spoken_qa_mini"
    assert manifest["dataset"]["turns"] == 4
    for category in ("arithmetic", "translation", "word games"):
        assert f"| {category} |" in result.stdout
    # StepEval-Audio-360's rules and reference rows are that benchmark's, not every run's
    assert manifest["config"]["metrics"]["name"] == "all" and manifest["config"]["dataset"]["benchmark"] is None
    assert "matches no category" not in result.stderr
    page = tmp_path / "report.html"
    report = subprocess.run(
        [sys.executable, "-m", "stepeval.cli", "report", str(run), "--out", str(page), "--no-audio"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert report.returncode == 0, report.stderr
    html = page.read_text()
    assert "reported, not reproduced" not in html and "Table 5 layout" not in html
