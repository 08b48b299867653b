"""Careless and hostile inputs to `stepeval run`: keys validated by name, damaged user audio failing only its
conversation, and a run that dies mid-judging saying so in its manifest."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from stepeval import pipeline
from stepeval.config import conf_dir, register_schemas
from stepeval.data import sources
from stepeval.store import RecordLog
from tests import judge_fake
from tests.http_fake import FakeServer, Scripted
from tests.run_helpers import stepeval_run

CHAT = "/v1/chat/completions"


def config(results: Path, *overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["progress=false", f"results_dir={results}", *overrides])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("limit=0", "limit=0"),
        ("limit=-2", "limit=-2"),
        ("concurrency=0", "concurrency=0"),
        ("concurrency=-1", "concurrency=-1"),
        ("model.concurrency=0", "model.concurrency=0"),
    ],
)
def test_counts_that_make_no_sense_are_refused_naming_the_key(tmp_path: Path, override: str, named: str):
    with pytest.raises(ValueError, match=f"^{named}: must be"):
        pipeline.run(config(tmp_path, "dataset=sample", "model=silence", "asr=none", override))
    assert not any(tmp_path.iterdir())  # refused before any work


def test_a_served_model_with_zero_concurrency_names_the_key_the_user_set(tmp_path: Path):
    overrides = ["dataset=sample", "model=served", "model.base_url=http://127.0.0.1:9/v1", "model.name=x", "concurrency=0"]
    with pytest.raises(ValueError, match=r"^concurrency=0: must be >= 1") as caught:
        pipeline.run(config(tmp_path, *overrides))
    assert "base_url.concurrency" not in str(caught.value)


def _damaged_dataset(tmp_path: Path) -> tuple[Path, str, str]:
    """The bundled sample as a local clone with one garbage user WAV and one WAV holding NaN samples."""
    files = sources.bundled_sample()
    folder, unpacked = tmp_path / "dataset", tmp_path / "unpacked"
    (folder / "data").mkdir(parents=True)
    shutil.copy(files.parquet[0], folder / "data" / "train.parquet")
    with tarfile.open(files.archive) as tar:
        tar.extractall(unpacked, filter="data")
    frame = pd.read_parquet(files.parquet[0])
    garbage_conv, nan_conv = frame["conversation_id"][1], frame["conversation_id"][2]
    garbage = unpacked / frame["turns"][1][0]["audio"]
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    nan = unpacked / frame["turns"][2][0]["audio"]
    samples, rate = sf.read(nan, dtype="float32")
    samples[len(samples) // 2] = np.nan
    sf.write(nan, samples, rate, subtype="FLOAT")
    with tarfile.open(folder / "audios.tar.gz", "w:gz") as tar:
        for member in sorted(unpacked.rglob("*")):
            tar.add(member, arcname=str(member.relative_to(unpacked)), recursive=False)
    return folder, garbage_conv, nan_conv


@pytest.mark.slow
def test_damaged_user_audio_fails_its_conversation_and_the_rest_of_the_run_goes_on(tmp_path: Path):
    folder, garbage_conv, nan_conv = _damaged_dataset(tmp_path)
    local = ["dataset=stepeval360", "dataset.source=local", f"dataset.local_dir={folder}", "model=parrot", "asr=none"]
    result = stepeval_run(tmp_path / "results", *local, "limit=4")
    assert result.returncode == 1
    (run,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    records = RecordLog(run / "records" / "replay.jsonl").load()
    assert records[(garbage_conv, 0)]["status"] == "failed" and "user audio unusable" in records[(garbage_conv, 0)]["error"]
    assert "non-finite" in records[(nan_conv, 0)]["error"] or "NaN" in records[(nan_conv, 0)]["error"]
    for conv in (garbage_conv, nan_conv):
        later = [r for key, r in records.items() if key[0] == conv and key[1] > 0]
        assert all(r["status"] == "skipped" for r in later)
        assert not (run / "audio" / conv).exists()  # nothing was sent, so the parrot said nothing back
    ok = [r for key, r in records.items() if key[0] not in (garbage_conv, nan_conv)]
    assert ok and all(r["status"] == "ok" for r in ok)
    again = stepeval_run(tmp_path / "results", *local, "limit=4")  # a rerun retries them, and goes on past them
    assert again.returncode == 1 and "replay: " in again.stdout


@pytest.mark.slow
def test_a_judge_that_starts_refusing_mid_run_stops_and_the_run_keeps_its_work(tmp_path: Path):
    calls = {"n": 0}

    def answer(request):
        calls["n"] += 1
        if calls["n"] > 2:
            return Scripted(status=401, json={"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
        return judge_fake.judge(request)

    with FakeServer() as server:
        server.fallback = judge_fake.serving(answer, "fake-judge")
        overrides = [
            "dataset=sample",
            "model=canned",
            "asr=none",
            "limit=2",
            "judge=openai_compatible",
            f"judge.base_url={server.url}/v1",
            "judge.model=fake-judge",
            "judge.reads=text",
            "judge.concurrency=1",
            "judge.metrics=[relevance.v1]",
        ]
        outcome = pipeline.run(config(tmp_path, *overrides))
        asked = len(server.requests_to(CHAT))
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete_with_failures" and outcome.problems  # exit status 1
    assert asked == 3  # two verdicts, one 401, then nothing more is sent
    records = RecordLog(run / "records" / "judge-relevance.jsonl").load_all()
    statuses = sorted(r["status"] for r in records)
    assert statuses == ["failed", "ok", "ok", "skipped"]  # what was judged is kept; the rest is asked on a rerun
    assert any("HTTP 401" in r["error"] for r in records if r["status"] == "skipped")
    assert "not judged: the judge stopped" in (outcome.view_dir / "table.md").read_text()


@pytest.mark.parametrize("http", ["sdk", "fast"])
def test_a_served_model_runs_through_either_request_path(tmp_path: Path, http: str):
    from tests import openai_audio

    spoken = openai_audio.b64(openai_audio.encoded(openai_audio.tone(0.5), 24000))
    reply = Scripted(json=openai_audio.completion(spoken, transcript="a spoken reply"))
    with FakeServer() as server:
        server.fallback = judge_fake.serving(lambda request: reply, "voicey")
        served = ["model=served", f"model.base_url={server.url}/v1", "model.name=voicey", f"model.http={http}"]
        outcome = pipeline.run(config(tmp_path, "dataset=sample", *served, "asr=none", "limit=2"))
        bodies = [r.json for r in server.requests_to(CHAT)]
    records = RecordLog(outcome.root / "records" / "replay.jsonl").load()
    assert len(records) == 4 and all(r["status"] == "ok" and r["audio"] for r in records.values()), [
        r["error"] for r in records.values()
    ]
    second_turns = [b for b in bodies if sum(m["role"] == "user" for m in b["messages"]) == 2]
    assert second_turns  # the earlier user clip went out again as audio, as the SDK path sends it
    assert all(isinstance(part, dict) for b in second_turns for part in b["messages"][0]["content"])
