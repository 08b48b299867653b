"""A kill at any moment loses at most the turns in flight; rerunning finishes the work and
ends with the same records and summary as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.run_helpers import only_run, run_command, stable_records, stepeval_run, summary

pytestmark = pytest.mark.slow  # SIGKILL of real subprocess runs


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _run_and_kill(results: Path, overrides: list[str], log_name: str, after: int) -> None:
    """Start a run, SIGKILL it once ``log_name`` holds ``after`` records (and before it finishes)."""
    process = subprocess.Popen(
        run_command(results, *overrides), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ}
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            logs = list(results.glob(f"*/records/{log_name}"))
            if logs and _lines(logs[0]) >= after:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed: slow it down"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


SCENARIOS = {
    # killed mid-replay: noise is seeded per (seed, conversation, turn), so reruns must reproduce it exactly
    "during-replay": (
        ["dataset=sample", "model=noise", "model.backend.delay_s=0.25", "asr=none", "concurrency=3"],
        "replay.jsonl",
        7,
    ),
    # killed mid-transcription: real ASR on the parrot's speech
    "during-asr": (["dataset=sample", "model=parrot", "asr=whisper_base_offline", "limit=4"], "asr.jsonl", 3),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sigkill_then_rerun_matches_uninterrupted_run(tmp_path: Path, scenario: str):
    overrides, log_name, after = SCENARIOS[scenario]
    interrupted, clean = tmp_path / "interrupted", tmp_path / "clean"

    _run_and_kill(interrupted, overrides, log_name, after)
    run_dir = only_run(interrupted)
    kept = _lines(run_dir / "records" / log_name)
    assert kept >= after
    assert not (run_dir / "views").exists()

    resumed = stepeval_run(interrupted, *overrides)
    assert resumed.returncode == 0, resumed.stderr
    stage = "replay" if log_name == "replay.jsonl" else "asr"
    reused = int(next(line for line in resumed.stdout.splitlines() if line.startswith(f"{stage}:")).split()[3])
    assert reused >= kept - 1  # at most the record being written when killed is lost

    reference = stepeval_run(clean, *overrides)
    assert reference.returncode == 0, reference.stderr
    clean_dir = only_run(clean)
    assert run_dir.name == clean_dir.name  # the run name comes from the config, not the clock
    for stage_log in ("replay", "asr", "score"):
        assert stable_records(run_dir, stage_log) == stable_records(clean_dir, stage_log), stage_log
    for audio in sorted((clean_dir / "audio").rglob("*.wav")):
        assert (run_dir / audio.relative_to(clean_dir)).read_bytes() == audio.read_bytes()
    assert summary(run_dir) == summary(clean_dir)


def test_second_run_reuses_everything_and_repeats_the_summary(tmp_path: Path):
    overrides = ["dataset=sample", "model=canned", "asr=whisper_base_offline", "limit=3"]
    first = stepeval_run(tmp_path, *overrides)
    assert first.returncode == 0, first.stderr
    run_dir = only_run(tmp_path)
    before = summary(run_dir)
    second = stepeval_run(tmp_path, *overrides)
    assert second.returncode == 0, second.stderr
    turns = before["turns"]["total"]
    for stage in ("replay", "asr", "score"):
        assert f"{stage}: {turns} records: {turns} reused, 0 computed" in second.stdout
    assert summary(run_dir) == before
    manifest = (run_dir / "manifest.json").read_text()
    assert '"status": "complete"' in manifest and manifest.count('"argv"') == 2
