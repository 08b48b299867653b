"""`stepeval compare`, the CI regression gate, on the real silence and parrot demo runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stepeval.cli import main as cli
from tests.run_helpers import raw_metric_values

pytestmark = pytest.mark.slow  # real demo runs (subprocess, whisper base)


def compare(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = cli(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_run_against_its_copy_passes(demo_runs: dict[str, Path], tmp_path: Path, capsys, monkeypatch):
    copy = shutil.copytree(demo_runs["parrot"], tmp_path / "copy")
    summary_file = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    code, out = compare(capsys, "--baseline", str(demo_runs["parrot"]), "--candidate", str(copy))
    assert code == 0, out
    assert "stepeval compare: PASS" in out and "FAIL" not in out
    assert "+0.000 [+0.000, +0.000] | 1 |" in out  # difference 0, CI [0, 0], p = 1
    assert summary_file.read_text().startswith("## stepeval compare: PASS")


def test_silence_against_parrot_fails_and_names_the_metrics(demo_runs: dict[str, Path], tmp_path: Path, capsys, monkeypatch):
    summary_file = tmp_path / "step-summary.md"
    summary_file.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    out_file = tmp_path / "gate.md"
    code, out = compare(
        capsys, "--baseline", str(demo_runs["parrot"]), "--candidate", str(demo_runs["silence"]), "--summary-out", str(out_file)
    )
    assert code == 1, out
    assert "stepeval compare: FAIL" in out
    failing = out.split("**Failing metrics:**", 1)[1]
    # speech_detected: 1 -> 0 on all 22 turns of 10 conversations; the exact sign-flip p is 2/2**10
    assert "`speech_detected`: difference -1.0000, 95% CI [-1.000, -1.000], p = 0.00195" in failing
    assert "`silence_share`: difference +" in failing  # lower is better, and silence is all silence
    scored = sum(v is not None for v in raw_metric_values(demo_runs["parrot"])["language_match"])
    assert scored > 0 and f"`language_match`: candidate has no scored turn (baseline: {scored})" in failing  # lost, not skipped
    assert "text_speech_error" not in failing  # neither run scored it: nothing to compare
    assert out_file.read_text() in out
    assert summary_file.read_text() == "earlier step\n" + out_file.read_text() + "\n"  # appended, not overwritten


def test_a_threshold_above_the_drop_passes_that_metric(demo_runs: dict[str, Path], capsys):
    base, cand = str(demo_runs["parrot"]), str(demo_runs["silence"])
    code, out = compare(capsys, "--baseline", base, "--candidate", cand, "--only", "--metric", "silence_share:0.9")
    assert code == 0, out  # silence_share rose by ~0.7, under the 0.9 allowed
    assert "| silence_share | lower is better | 0.9 |" in out and "within threshold" in out
    code, out = compare(capsys, "--baseline", base, "--candidate", cand, "--only", "--metric", "silence_share:0.5")
    assert code == 1 and "`silence_share`" in out


def test_a_large_drop_in_one_conversation_is_not_significant(demo_runs: dict[str, Path], tmp_path: Path, capsys):
    worse = shutil.copytree(demo_runs["parrot"], tmp_path / "worse")
    log = worse / "records" / "score.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    target = records[0]["conversation_id"]
    for record in records:
        if record["conversation_id"] == target:
            record["metrics"]["speech_detected"] = 0.0
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out = compare(
        capsys, "--baseline", str(demo_runs["parrot"]), "--candidate", str(worse), "--only", "--metric", "speech_detected:0.05"
    )
    # the drop (>= 2/22) exceeds the threshold, but one conversation of ten cannot make it significant
    assert code == 0, out
    assert "but not significant" in out


def test_usage_errors_exit_2_with_the_reason(demo_runs: dict[str, Path], tmp_path: Path, capsys):
    base = str(demo_runs["parrot"])
    code, out = compare(capsys, "--baseline", base, "--candidate", base, "--metric", "no_such_metric:0.1")
    assert code == 2 and "no_such_metric" in out and "speech_detected" in out
    code, out = compare(capsys, "--baseline", base, "--candidate", base, "--metric", "speech_detected:abc")
    assert code == 2 and "'abc' is not a number" in out
    code, out = compare(capsys, "--baseline", base, "--candidate", str(tmp_path))
    assert code == 2 and str(tmp_path) in out and "manifest.json" in out


def test_a_gate_that_compares_nothing_does_not_pass(demo_runs: dict[str, Path], tmp_path: Path, capsys):
    # text_speech_error is missing on every turn of both runs (parrot has no text channel)
    base = str(demo_runs["parrot"])
    code, out = compare(capsys, "--baseline", base, "--candidate", base, "--only", "--metric", "text_speech_error:0.05")
    assert code == 2 and "nothing was compared" in out
