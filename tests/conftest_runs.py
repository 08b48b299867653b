"""Session fixture: two real demo runs (silence and parrot on the bundled sample, offline whisper base),
made once per test session by the real `stepeval run` and shared by the reporting tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMO_MODELS = ("silence", "parrot")


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory: pytest.TempPathFactory, isolated_cache: Path) -> dict[str, Path]:
    """{model: run folder}; both runs are started together (they are independent) and must succeed."""
    from stepeval.data import loader, sources

    loader.load(sources.bundled_sample())  # extract the sample audio once, before two processes race to do it
    results = tmp_path_factory.mktemp("demo-results")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "STEPEVAL_CACHE": str(isolated_cache)}
    procs = {}
    for model in DEMO_MODELS:
        command = [
            sys.executable,
            "-m",
            "stepeval.cli",
            "run",
            "dataset=sample",
            f"model={model}",
            "asr=whisper_base_offline",
            f"results_dir={results / model}",
            "progress=false",
        ]
        procs[model] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    runs = {}
    for model, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"stepeval run model={model} failed:\n{output[-4000:]}"
        folders = [p.parent for p in (results / model).glob("*/manifest.json")]
        assert len(folders) == 1, f"expected one run folder under {results / model}, found {folders}"
        runs[model] = folders[0]
    return runs
