"""`stepeval arena` end to end: real runs of control systems on the bundled sample (offline Whisper base), pairwise
judges of our own on 127.0.0.1, both orders, Bradley-Terry with intervals, controls and the verdict cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stepeval.arena import command
from tests import arena_judges
from tests.http_fake import FakeServer

pytestmark = pytest.mark.slow  # three real runs with Whisper

SYSTEMS = ("parrot", "canned", "noise")
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def arena_runs(tmp_path_factory: pytest.TempPathFactory, isolated_cache: Path) -> dict[str, Path]:
    from stepeval.data import loader, sources

    loader.load(sources.bundled_sample())  # extract the sample audio once, before the runs race to do it
    results = tmp_path_factory.mktemp("arena-runs")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "STEPEVAL_CACHE": str(isolated_cache)}
    procs = {}
    for model in SYSTEMS:
        command_line = [sys.executable, "-m", "stepeval.cli", "run", "dataset=sample", f"model={model}"]
        command_line += ["asr=whisper_base_offline", f"results_dir={results / model}", "progress=false"]
        procs[model] = subprocess.Popen(command_line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    runs = {}
    for model, proc in procs.items():
        output, _ = proc.communicate(timeout=1800)
        assert proc.returncode == 0, output[-3000:]
        runs[model] = next((results / model).glob("*/manifest.json")).parent
    return runs


def arena(server: FakeServer, out: Path, *args: str) -> tuple[int, dict]:
    judge = ["judge=openai_compatible", f"judge.base_url={server.url}/v1", "judge.model=pair-judge"]
    code = command.main([*args, "--out", str(out), "--resamples", "400", *judge])
    return code, json.loads((out / "arena.json").read_text())


def ranked(result: dict) -> dict[str, dict]:
    return {row["system"]: row for row in result["overall"]["systems"]}


def test_a_content_aware_judge_ranks_parrot_over_canned_over_noise(arena_runs, tmp_path):
    with FakeServer() as server:
        server.fallback = arena_judges.content_aware
        code, result = arena(server, tmp_path, *(str(arena_runs[s]) for s in SYSTEMS), "--controls", "truncated,swapped,copy")
    rows = ranked(result)
    assert rows["parrot"]["rank"] < rows["canned"]["rank"] < rows["noise"]["rank"], rows  # controls rank among them
    # non-overlapping intervals: parrot above canned above noise
    assert rows["parrot"]["low"] > rows["canned"]["high"] and rows["canned"]["low"] > rows["noise"]["high"], rows
    controls = {c["kind"]: c for c in result["controls"]}
    assert controls["truncated"]["result"] == "pass" and controls["swapped"]["result"] == "pass", controls
    assert controls["copy"]["result"] == "pass" and controls["copy"]["origin_win_rate"] == pytest.approx(0.5)
    assert result["position_bias_rate"] == 0.0 and result["missing"] == 0
    assert code == 0
    table = (tmp_path / "arena.md").read_text()
    assert "| parrot+truncated | loses significantly" in table and "| 1 | parrot |" in table
    assert "by_category" in result and len(result["by_category"]) >= 2
    page = (tmp_path / "arena.html").read_text()  # the page beside them: both figures and the controls table
    assert 'id="arena-heatmap"' in page and 'id="arena-forest"' in page and page.count('src="data:image/png;base64,') == 2
    assert page.count("<tr data-control=") == len(result["controls"]) == 3


def test_a_judge_that_always_answers_a_is_all_position_bias_and_only_ties(arena_runs, tmp_path):
    with FakeServer() as server:
        server.fallback = arena_judges.always_a
        _, result = arena(server, tmp_path, str(arena_runs["parrot"]), str(arena_runs["canned"]), "--controls", "copy")
    assert result["position_bias_rate"] == pytest.approx(1.0)
    met = [cell for row in result["overall"]["win_rate"].values() for cell in row.values() if cell["comparisons"]]
    assert len(met) == 4 and all(cell["rate"] == pytest.approx(0.5) for cell in met)  # parrot-canned, parrot-copy
    assert {c["result"] for c in result["controls"]} == {"pass"}  # self against copy: even
    assert all(abs(r["strength"]) < 1e-6 for r in result["overall"]["systems"])


def test_adding_a_system_asks_only_the_new_pairs(arena_runs, tmp_path):
    with FakeServer() as server:
        server.fallback = arena_judges.content_aware
        arena(server, tmp_path, str(arena_runs["parrot"]), str(arena_runs["canned"]))
        first = len(server.requests_to(CHAT))
        _, result = arena(server, tmp_path, *(str(arena_runs[s]) for s in SYSTEMS))
        added = len(server.requests_to(CHAT)) - first
    shared = result["overall"]["win_rate"]["parrot"]["canned"]["comparisons"]
    assert first == 2 * shared  # both orders of every shared turn
    assert added == result["requests"]["asked"] == 2 * (result["comparisons_planned"] - shared)
    assert result["requests"]["reused"] == first


def test_a_listening_judge_prefers_the_whole_reply_to_its_truncated_copy(arena_runs, tmp_path):
    with FakeServer() as server:
        server.fallback = arena_judges.listening
        judge = ["judge=openai_compatible", f"judge.audio_base_url={server.url}/v1", "judge.audio_model=pair-judge"]
        code = command.main(
            [str(arena_runs["canned"]), "--controls", "truncated", "--rubric", "pairwise_speech.v1", "--out", str(tmp_path)]
            + ["--resamples", "300", *judge]
        )
        bodies = [r.json for r in server.requests_to(CHAT)]
    result = json.loads((tmp_path / "arena.json").read_text())
    assert code == 0 and result["controls"][0]["result"] == "pass"
    parts = [p["type"] for p in bodies[0]["messages"][-1]["content"]]
    assert parts.count("input_audio") == 3  # the request, reply A, reply B


def test_arguments_that_are_not_judge_overrides_are_refused(tmp_path, capsys):
    assert command.main([str(tmp_path), str(tmp_path), "model=parrot"]) == 2
    assert "judge overrides only" in capsys.readouterr().err
