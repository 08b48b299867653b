"""Latency tables, the HTML report's latency section and the compare gate, on runs replayed against a server of our
own with known timings (tests/timed_server.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stepeval.cli import main as cli
from stepeval.reporting import latency
from tests.test_latency import TOL, replay, wire
from tests.timed_server import TimedServer, Timeline

QUICK = Timeline(first_byte=0.02, first_text=0.03, first_audio=0.05, gap=0.01, chunks=3)
SLOW = Timeline(first_byte=0.3, first_text=0.35, first_audio=0.45, gap=0.01, chunks=3)


def run_folder(tmp_path: Path, name: str, timeline: Timeline, n: int = 6, **latency_settings) -> Path:
    with TimedServer(timeline) as server:
        _, run_dir = replay(tmp_path, wire(server, stream=True), n=n, name=name, **latency_settings)
    manifest = {"run_name": name, "config": {"model": {"name": "timed"}}, "dataset": {"files_sha256": "same"}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def test_table_quantiles_intervals_protocols_and_missing_reasons():
    rows = []
    for c in range(5):
        for t, value in enumerate((0.1 * (c + 1), 0.1 * (c + 1) + 0.05)):
            rows.append({"conversation_id": f"c{c}", "turn": t, "category": "qa", "language": "en", "metric": "first_audio_s"})
            rows[-1].update({"value": value, "missing_reason": None, "protocol": "A", "in_flight": 1, "endpoint": "e"})
    rows.append({**rows[0], "turn": 9, "value": float("nan"), "missing_reason": "the reply has no audio"})
    rows.append({**rows[0], "protocol": "B", "value": 9.0})
    table = latency.table(pd.DataFrame(rows), resamples=200)
    overall = {r["protocol"]: r for r in table if r["category"] == "overall"}
    a = overall["A"]["cell"]
    values = sorted(r["value"] for r in rows[:10])
    assert a.estimates["p50"] == values[4] and a.estimates["p95"] == values[9]  # measured turns, lower quantile
    assert a.estimates["mean"] == pytest.approx(np.mean(values)) and a.n == 10 and a.missing == 1
    assert a.low["p50"] <= a.estimates["p50"] <= a.high["p50"] and a.low["mean"] < a.high["mean"]
    assert overall["A"]["why_missing"] == {"the reply has no audio": 1}
    assert overall["B"]["cell"].estimates["p50"] == 9.0  # another protocol: never pooled with A
    assert f"| first_audio_s | overall | A | e | {values[4] * 1000:.0f} ms [" in latency.markdown(table)


def test_compare_gates_a_latency_regression_paired_over_turns(tmp_path, capsys):
    base = run_folder(tmp_path, "base", QUICK)
    same = run_folder(tmp_path, "same", QUICK)
    slow = run_folder(tmp_path, "slow", SLOW)
    code = cli(["compare", "--baseline", str(base), "--candidate", str(same)])
    out = capsys.readouterr().out
    assert code == 0 and "| latency.first_audio_s | lower is better | 0.1 |" in out
    code = cli(["compare", "--baseline", str(base), "--candidate", str(slow)])
    out = capsys.readouterr().out
    assert code == 1 and "`latency.first_speech_s`: difference +" in out
    shift = float(re.search(r"`latency.first_audio_s`: difference ([-+.\d]+)", out).group(1))
    assert abs(shift - (SLOW.first_audio - QUICK.first_audio)) <= TOL  # the injected shift, paired over the same turns
    faster = cli(["compare", "--baseline", str(slow), "--candidate", str(base)])
    capsys.readouterr()
    assert faster == 0  # lower is better: getting faster is no regression


def test_compare_does_not_gate_latency_measured_under_another_protocol(tmp_path, capsys):
    base = run_folder(tmp_path, "base", QUICK, hardware="box A", mode="load")
    other = run_folder(tmp_path, "other", SLOW, hardware="box B", mode="load")
    code = cli(["compare", "--baseline", str(base), "--candidate", str(other)])
    out = capsys.readouterr()
    assert "skipped: latency measured under different protocols" in out.out and "hardware box A" in out.out
    assert code == 2  # nothing comparable was gated: a gate that checks nothing does not pass


def test_report_has_the_latency_table_cdf_and_sweep_curve(tmp_path):
    from stepeval.reporting.report import main as report

    run_dir = run_folder(tmp_path, "run", SLOW, n=3)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    point = {"p50": 0.2, "p95": 0.3, "p50_interval": [0.19, 0.21], "p95_interval": [0.28, 0.33], "mean": 0.22, "n": 8}
    points = [{"concurrency": c, "turns_per_s": 2.0 * c, "first_audio_s": point} for c in (1, 2)]
    (sweep / "sweep.json").write_text(
        json.dumps({"server": "parrot", "protocols": ["p"], "metric": "first_audio_s", "points": points})
    )
    assert report([str(run_dir), "--no-audio", "--latency-sweep", str(sweep)]) == 0
    page = (run_dir / "report.html").read_text()
    assert '<h2 id="latency">Latency</h2>' in page and "<td>first_audio_s</td><td>overall</td>" in page
    assert "sk-test" not in page and "127.0.0.1" in page  # the endpoint each figure came from, never its key
    assert 'alt="latency CDF"' in page and 'alt="latency-throughput curve"' in page
    assert (run_dir / "report_latency_cdf.png").stat().st_size > 0 and (run_dir / "report_latency_sweep.png").is_file()
    (sweep / "sweep.json").write_text("{}")
    assert report([str(run_dir), "--no-audio", "--latency-sweep", str(sweep)]) == 2


def test_leaderboard_has_latency_columns_marked_with_their_protocol(tmp_path, capsys):
    from stepeval.reporting.leaderboard import main as leaderboard

    quick = run_folder(tmp_path, "quick", QUICK, n=3, hardware="box A", mode="load")
    slow = run_folder(tmp_path, "slow", SLOW, n=3, hardware="box B", mode="load")
    assert leaderboard([str(quick), str(slow), "--out", str(tmp_path / "board"), "--resamples", "50"]) == 0
    text = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "p50 first audio" in text and "latency protocol" in text and "hardware box A" in text
    assert "latency measured under different protocols" in text  # not ranked together without a note
    numbers = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["rows"]
    by_run = {row["run"]: row for row in numbers}
    assert by_run["slow"]["latency_first_audio_s_p50"] > by_run["quick"]["latency_first_audio_s_p50"]
    capsys.readouterr()
