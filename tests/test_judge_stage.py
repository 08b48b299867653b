"""The judge stage in the pipeline, against a local OpenAI-compatible fake judge over real HTTP:
judge columns in the table, per-metric caching by rubric hash, unscored items, no leaked keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from stepeval import pipeline
from stepeval.config import conf_dir, register_schemas
from stepeval.data import loader, sources
from stepeval.judging import rubric
from stepeval.reporting.records import turn_scores
from stepeval.store import iter_records
from tests import judge_fake
from tests.http_fake import FakeServer, Scripted
from tests.run_helpers import latest_view

CHAT = "/v1/chat/completions"  # judge calls (the pre-flight GET /v1/models is not one)

pytestmark = pytest.mark.slow  # full pipeline runs with DNSMOS and speaker models

TEXT_METRICS = ["factuality", "relevance", "chat_score", "instruction_following"]
BASE = ["dataset=sample", "model=canned", "asr=none", "limit=2", "progress=false"]


def config(results: Path, *overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[*BASE, f"results_dir={results}", *overrides])


def judged(server: FakeServer, *extra: str) -> list[str]:
    return ["judge=openai_compatible", f"judge.base_url={server.url}/v1", "judge.model=fake-judge", *extra]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """One replayed and scored run (judge=none); tests copy it so only the judge stage runs."""
    results = tmp_path_factory.mktemp("base")
    pipeline.run(config(results, "judge=none"))
    return results


@pytest.fixture
def results(base_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_run, tmp_path / "results")
    return tmp_path / "results"


def records(run: Path, metric: str) -> list[dict]:
    return list(iter_records(run / "records" / f"judge-{metric}.jsonl"))


def test_judge_none_says_the_judge_was_not_run(base_run: Path):
    (run,) = base_run.iterdir()
    table = (latest_view(run) / "table.md").read_text()
    assert "LLM judge not run (judge=none)" in table
    assert not list((run / "records").glob("judge-*.jsonl"))
    assert not set(TEXT_METRICS) & set(json.loads((latest_view(run) / "summary.json").read_text())["metrics"])


def test_cli_run_adds_judge_columns_and_never_leaks_the_key(base_run: Path, tmp_path: Path):
    secret = "sk-test-SECRET-4711"
    results = tmp_path / "results"
    shutil.copytree(base_run, results)
    with FakeServer() as server:
        server.fallback = judge_fake.judge
        args = [*BASE, f"results_dir={results}", *judged(server, "judge.reads=text", f"judge.api_key={secret}")]
        done = subprocess.run(
            [sys.executable, "-m", "stepeval.cli", "run", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    assert done.returncode == 0, done.stderr
    assert len(server.requests_to(CHAT)) == 4 * len(TEXT_METRICS)
    assert all(r.headers.get("Authorization", r.headers.get("authorization")) == f"Bearer {secret}" for r in server.requests)
    (run,) = results.iterdir()
    summary = json.loads((latest_view(run) / "summary.json").read_text())
    # canned always says "The city library is open...": the fake judge answers yes/no by "library", and scores
    # 1 + the earlier replies it was shown: turn 0 -> 1, turn 1 -> 2 in every conversation
    assert summary["metrics"]["factuality"]["overall"] == {"mean": 1.0, "scored": 4, "missing": 0}
    assert summary["metrics"]["chat_score"]["overall"] == {"mean": 1.5, "scored": 4, "missing": 0}
    table = (latest_view(run) / "table.md").read_text()
    header = table.splitlines()[2]
    assert all(f" {m} " in header for m in TEXT_METRICS)
    assert "LLM judge not run" not in table and "reads the text channel" in table
    manifest = json.loads((run / "manifest.json").read_text())
    rubrics = manifest["judge"]["rubrics"]
    assert rubrics["relevance"]["sha256"] == rubric.load(rubric.PACKAGED, "relevance.v1").sha256
    assert manifest["judge"]["usage"]["this_session"]["requests"] == 16
    assert manifest["config"]["judge"]["api_key"] == "<redacted>"
    leaked = [p for p in run.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == [] and secret not in done.stdout + done.stderr
    record = records(run, "factuality")[0]
    assert record["judge"]["rubric_sha256"] == rubrics["factuality"]["sha256"]
    assert (record["reads"], record["reply_source"], record["user_source"]) == ("text", "text", "dataset")
    assert record["metrics"] == {"factuality": 1.0} and record["samples"][0]["raw"]


def test_editing_one_rubric_recomputes_only_its_metric(results: Path, tmp_path: Path):
    folder = tmp_path / "rubrics"
    shutil.copytree(rubric.PACKAGED, folder)
    with FakeServer() as server:
        server.fallback = judge_fake.judge
        cfg = config(results, *judged(server, "judge.reads=text", f"judge.rubrics_dir={folder}"))
        pipeline.run(cfg)
        assert len(server.requests_to(CHAT)) == 16
        (run,) = results.iterdir()
        before = {m: (run / "records" / f"judge-{m}.jsonl").read_bytes() for m in TEXT_METRICS}
        path = folder / "relevance.v1.md"
        path.write_text(path.read_text().replace("Do not grade truth", "Never grade truth"))
        pipeline.run(cfg)
        again = server.requests_to(CHAT)[16:]
    assert len(again) == 4  # the four relevance items, nothing else
    assert all("Never grade truth" in r.json["messages"][0]["content"] for r in again)
    for metric in ("factuality", "chat_score", "instruction_following"):
        assert (run / "records" / f"judge-{metric}.jsonl").read_bytes() == before[metric]
    new_sha = rubric.load(folder, "relevance.v1").sha256
    assert {r["judge"]["rubric_sha256"] for r in records(run, "relevance")} == {new_sha}
    assert json.loads((run / "manifest.json").read_text())["judge"]["rubrics"]["relevance"]["sha256"] == new_sha


def test_unparseable_replies_stay_unscored_and_counted(results: Path):
    def answer(request):
        if judge_fake.metric_of(request.json) == "chat_score":
            return judge_fake.reply_with("A solid reply, I'd give it four out of five.")
        return judge_fake.judge(request)

    with FakeServer() as server:
        server.fallback = judge_fake.serving(answer, "fake-judge")
        cfg = config(results, *judged(server, "judge.reads=text", "judge.metrics=[chat_score.v1,relevance.v1]"))
        root = pipeline.run(cfg).root
        pipeline.run(cfg)  # unparseable grades are kept, not asked again
    assert len(server.requests_to(CHAT)) == 8
    chat = records(root, "chat_score")
    assert [r["metrics"] for r in chat] == [{"chat_score": None}] * 4
    assert {r["missing"]["chat_score"] for r in chat} == {"unparseable judge reply"}
    assert chat[0]["samples"][0]["raw"].startswith("A solid reply") and chat[0]["status"] == "unparseable"
    summary = json.loads((latest_view(root) / "summary.json").read_text())
    assert summary["metrics"]["chat_score"]["overall"] == {"mean": None, "scored": 0, "missing": 4}
    assert summary["metrics"]["relevance"]["overall"]["scored"] == 4
    assert any("4 judge item(s) left unscored: unparseable judge reply" in n for n in summary["notes"])


def test_failed_requests_are_retried_on_the_next_run(results: Path):
    with FakeServer() as server:
        server.script(judge_fake.CHAT, *[Scripted(status=500, json={"error": {"message": "boom"}})] * 2)
        server.fallback = judge_fake.judge
        cfg = config(results, *judged(server, "judge.reads=text", "judge.metrics=[factuality.v1]", "judge.max_retries=0"))
        root = pipeline.run(cfg).root
        first = records(root, "factuality")
        pipeline.run(cfg)
    assert sorted(r["status"] for r in first) == ["failed", "failed", "ok", "ok"]
    assert all(r["metrics"]["factuality"] is None for r in first if r["status"] == "failed")
    assert len(server.requests_to(CHAT)) == 6  # 4, then only the 2 failed ones again
    assert [r["metrics"]["factuality"] for r in records(root, "factuality")] == [1.0] * 4


def test_no_transcript_to_read_is_missing_with_a_reason(results: Path):
    with FakeServer() as server:
        server.fallback = judge_fake.judge
        root = pipeline.run(config(results, *judged(server, "judge.reads=asr"))).root  # asr=none: nothing to read
    assert server.requests_to(CHAT) == []
    recs = records(root, "relevance")
    assert {r["missing"]["relevance"] for r in recs} == {"no ASR transcript of the reply: asr=none (judge.reads=asr)"}
    assert all(r["metrics"]["relevance"] is None and r["status"] == "no_input" for r in recs)


def test_listening_judge_hears_request_and_reply(results: Path):
    with FakeServer() as server:
        server.fallback = judge_fake.judge
        cfg = config(
            results,
            "judge=gpt4o_audio",
            f"judge.base_url={server.url}/v1",
            "judge.model=fake-omni",
            "judge.price_input_per_mtok=1",
            "judge.price_output_per_mtok=1",
            "judge.price_audio_input_per_mtok=1",
        )
        root = pipeline.run(cfg).root
    # audio quality applies to every turn, voice control only to the voice categories (conf/metrics/default.yaml)
    voice = {"speech emotion control", "voice instruction following", "singing", "role-playing"}
    turns = [c for c in loader.load(sources.bundled_sample()).conversations[:2] for _ in c.turns]
    expected = len(turns) + sum(c.category in voice for c in turns)
    assert expected < 2 * len(turns)  # the first two sample conversations include a category voice control skips
    assert len(server.requests_to(CHAT)) == expected
    assert len(records(root, "voice_control")) == expected - len(turns)
    replays = {(r["conversation_id"], r["turn"]): r for r in iter_records(root / "records" / "replay.jsonl")}
    for request in server.requests_to(CHAT):
        (user_rate, _), (reply_rate, reply_s) = judge_fake.audio_parts(request.json)
        assert user_rate == reply_rate == 16000
        assert "<request>" in judge_fake.user_text(request.json)  # audio_user=both: transcript too
    for rec in records(root, "voice_control"):
        seconds = replays[(rec["conversation_id"], rec["turn"])]["duration_s"]
        assert rec["metrics"]["voice_control"] == min(5, 1 + int(seconds))
        assert (rec["reads"], rec["user_source"]) == ("audio", "dataset+audio")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["judge"]["endpoints"]["audio"]["model"] == "fake-omni"
    assert manifest["judge"]["usage"]["current_records"]["cost_usd"] == pytest.approx(expected * 150 / 1e6)


def test_bad_judge_config_fails_before_replay(tmp_path: Path):
    with pytest.raises(ValueError, match=r"judge\.reads='speech'; expected one of"):
        pipeline.run(
            config(
                tmp_path, "judge=openai_compatible", "judge.base_url=http://127.0.0.1:9/v1", "judge.model=m", "judge.reads=speech"
            )
        )
    with pytest.raises(ValueError, match="needs an API key: set OPENAI_API_KEY"):
        pipeline.run(config(tmp_path, "judge=gpt4o", "judge.api_key=null"))
    assert not list(tmp_path.rglob("replay.jsonl"))


def test_judge_columns_leave_the_table_when_the_judge_is_turned_off(results: Path):
    with FakeServer() as server:
        server.fallback = judge_fake.judge
        pipeline.run(config(results, *judged(server, "judge.reads=text")))
    (run,) = results.iterdir()
    assert set(TEXT_METRICS) <= set(json.loads((latest_view(run) / "summary.json").read_text())["metrics"])
    pipeline.run(config(results, "judge=none"))
    summary = json.loads((latest_view(run) / "summary.json").read_text())
    assert not set(TEXT_METRICS) & set(summary["metrics"])  # the old verdicts stay on disk, not in the table
    assert len(records(run, "factuality")) == 4
    assert "LLM judge not run (judge=none)" in (latest_view(run) / "table.md").read_text()
    # leaderboard, report and compare read the same filtered scores
    assert not set(TEXT_METRICS) & set(turn_scores(run)["metric"])
