"""Numbers a reviewer can trust: views that never overwrite each other, judge verdicts that never mix,
a judge cache that is a cache, failed scoring retried, not-applicable kept apart from missing,
categories named in Chinese, and exit statuses CI can gate on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from stepeval import pipeline
from stepeval.config import conf_dir, register_schemas
from stepeval.data import sources
from stepeval.reporting import compare, leaderboard
from stepeval.reporting.tables import load_run
from stepeval.store import RecordLog
from tests import judge_fake
from tests.http_fake import FakeServer, Scripted
from tests.run_helpers import stepeval_run

CHAT = "/v1/chat/completions"  # judge calls (the pre-flight GET /v1/models is not one)

pytestmark = pytest.mark.slow


def config(results: Path, *overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["dataset=sample", "progress=false", f"results_dir={results}", *overrides])


def judged(server: FakeServer, model: str = "judge-a", *extra: str) -> list[str]:
    return [
        "judge=openai_compatible",
        f"judge.base_url={server.url}/v1",
        f"judge.model={model}",
        "judge.reads=text",
        "judge.metrics=[relevance.v1]",
        *extra,
    ]


def fixed_score(value: str):
    """A judge that answers every item with the same verdict (so which judge was read shows in the mean)."""

    def answer(request):
        return judge_fake.reply_with(json.dumps({"verdict": value, "rationale": "fixed"}))

    return judge_fake.serving(answer, "judge-a", "judge-b")


def _view_summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_a_limit_run_beside_a_full_run_leaves_both_tables_intact(tmp_path: Path):
    small = pipeline.run(config(tmp_path, "model=silence", "asr=none", "limit=2"))
    full = pipeline.run(config(tmp_path, "model=silence", "asr=none"))
    assert small.root == full.root  # the replies are shared
    assert small.view_dir != full.view_dir
    assert _view_summary(small.view_dir)["turns"]["total"] == 4  # the first two sample conversations have 2 turns each
    assert _view_summary(full.view_dir)["turns"]["total"] == 22
    assert "SUBSET" in (small.view_dir / "table.md").read_text()
    assert "SUBSET" not in (full.view_dir / "table.md").read_text()
    listed = json.loads((full.root / "manifest.json").read_text())["views"]
    assert {name: entry["subset"] for name, entry in listed.items()} == {small.view_dir.name: True, full.view_dir.name: False}
    # a reader must be told which view; the subset is labelled wherever it appears
    with pytest.raises(ValueError, match="holds 2 views"):
        load_run(full.root)
    board = leaderboard.build([load_run(small.view_dir), load_run(full.view_dir)], ["duration_s"])
    assert board["rows"][0]["run"].endswith("[subset: 2 of 10 conversations]")
    assert any(note.startswith("SUBSET views") for note in board["notes"])


def test_a_rejudged_run_reads_only_the_current_judges_verdicts(tmp_path: Path):
    with FakeServer() as server:
        server.fallback = fixed_score("yes")
        first = pipeline.run(config(tmp_path, "model=canned", "asr=none", "limit=2", *judged(server, "judge-a")))
        server.fallback = fixed_score("no")
        second = pipeline.run(config(tmp_path, "model=canned", "asr=none", "limit=2", *judged(server, "judge-b")))
    log = RecordLog(first.root / "records" / "judge-relevance.jsonl").load_all()
    assert len(log) == 8  # both judges' verdicts are kept on disk
    a, b = load_run(first.view_dir), load_run(second.view_dir)
    for run, expected in ((a, 1.0), (b, 0.0)):
        values = run.scores.loc[run.scores["metric"] == "relevance", "value"]
        assert len(values) == 4 and set(values) == {expected}
    assert _view_summary(second.view_dir)["metrics"]["relevance"]["overall"] == {"mean": 0.0, "scored": 4, "missing": 0}


def test_compare_refuses_runs_scored_by_different_judges_unless_told(tmp_path: Path):
    with FakeServer() as server:
        server.fallback = fixed_score("yes")
        first = pipeline.run(config(tmp_path, "model=canned", "asr=none", "limit=2", *judged(server, "judge-a")))
        second = pipeline.run(config(tmp_path, "model=canned", "asr=none", "limit=2", *judged(server, "judge-b")))
    args = ["--baseline", str(first.view_dir), "--candidate", str(second.view_dir), "--metric", "relevance:0.1"]
    assert compare.main(args) == 2
    out = tmp_path / "summary.md"
    assert compare.main([*args, "--allow-mismatch", "--summary-out", str(out)]) == 0
    text = out.read_text()
    assert "MISMATCH: judge endpoints differ" in text and "judge-a" in text and "judge-b" in text


def test_compare_error_names_the_difference(tmp_path: Path, capsys: pytest.CaptureFixture):
    with FakeServer() as server:
        server.fallback = fixed_score("yes")
        first = pipeline.run(config(tmp_path, "model=canned", "asr=none", "limit=2", *judged(server, "judge-a")))
        warmer = judged(server, "judge-a", "judge.temperature=0.7")
        second = pipeline.run(config(tmp_path, "model=canned", "asr=none", "limit=2", *warmer))
    capsys.readouterr()
    assert compare.main(["--baseline", str(first.view_dir), "--candidate", str(second.view_dir)]) == 2
    err = capsys.readouterr().err
    assert "judge settings" in err and "0.7" in err


def test_editing_a_rubric_and_reverting_it_costs_no_calls(tmp_path: Path):
    from stepeval.judging.rubric import PACKAGED

    rubrics = shutil.copytree(PACKAGED, tmp_path / "rubrics")
    path = rubrics / "relevance.v1.md"
    original = path.read_text()
    with FakeServer() as server:
        server.fallback = judge_fake.serving(judge_fake.judge, "judge-a")
        cfg = config(tmp_path, "model=canned", "asr=none", "limit=2", *judged(server), f"judge.rubrics_dir={rubrics}")
        pipeline.run(cfg)
        assert len(server.requests_to(CHAT)) == 4
        path.write_text(original + "\nBe strict.\n")
        pipeline.run(cfg)
        assert len(server.requests_to(CHAT)) == 8
        path.write_text(original)
        pipeline.run(cfg)
        assert len(server.requests_to(CHAT)) == 8  # the first version's verdicts are found again: no call


def test_a_failed_score_record_is_retried_on_the_next_run(tmp_path: Path):
    cfg = config(tmp_path, "model=parrot", "asr=none", "limit=1")
    first = pipeline.run(cfg)
    audio = sorted((first.root / "audio").rglob("*.wav"))[0]
    saved = audio.read_bytes()
    (first.root / "records" / "score.jsonl").unlink()
    audio.write_bytes(b"RIFF....not audio at all")  # the reply exists but cannot be decoded: scoring it fails
    broken = pipeline.run(cfg)
    records = RecordLog(first.root / "records" / "score.jsonl").load()
    failed = [r for r in records.values() if r["status"] == "failed"]
    assert len(failed) == 1 and "scoring failed" in failed[0]["error"]
    assert any(p.startswith("score: 1 failed") for p in broken.problems)
    audio.write_bytes(saved)
    again = pipeline.run(cfg)
    assert again.problems == []
    assert all(r["status"] == "ok" for r in RecordLog(first.root / "records" / "score.jsonl").load().values())


def _chinese_dataset(tmp_path: Path, names: dict[str, str]) -> Path:
    """The bundled sample laid out as a local clone, its categories renamed."""
    files = sources.bundled_sample()
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    frame = pd.read_parquet(files.parquet[0])
    frame["category"] = [names.get(c, c) for c in frame["category"]]
    frame.to_parquet(folder / "data" / "train.parquet")
    shutil.copy(files.archive, folder / "audios.tar.gz")
    return folder


def test_chinese_category_names_keep_their_metrics_and_unknown_ones_are_named(tmp_path: Path):
    names = {"singing": "歌唱", "role-playing": "角色扮演", "creativity": "创作", "gaming": "神秘类别"}
    folder = _chinese_dataset(tmp_path, names)
    local = ["dataset=stepeval360", "dataset.source=local", f"dataset.local_dir={folder}", "model=parrot", "asr=none"]
    result = stepeval_run(tmp_path / "results", *local)
    assert "category '神秘类别' matches no category in the metrics config" in result.stderr
    folder_view = next((tmp_path / "results").glob("*/views/*"))
    summary = _view_summary(folder_view)
    # pitch applies to singing and role-playing: found through the aliases, not silently dropped
    assert "歌唱" in summary["metrics"]["f0_median_hz"]["by_category"]
    assert "角色扮演" in summary["metrics"]["f0_median_hz"]["by_category"]
    assert "神秘类别" not in summary["metrics"]["language_match"]["by_category"]
    assert any("神秘类别" in note and "language_match" in note for note in summary["notes"])


def _exit(result) -> int:
    return result.returncode


def test_exit_status_when_every_asr_record_failed(tmp_path: Path):
    broken = ["dataset=sample", "model=parrot", "limit=2", "asr=none", "asr.engine={_target_:tests.broken_parts.NoNetworkASR}"]
    result = stepeval_run(tmp_path, *broken)
    assert _exit(result) == 1, result.stderr
    assert "asr: 4 failed and 0 skipped of 4 records" in result.stderr
    summary = _view_summary(next(tmp_path.glob("*/views/*")))
    assert summary["metrics"]["speech_detected"]["overall"]["missing"] == 4
    accepted = stepeval_run(tmp_path, *broken, "allow_failures=true")
    assert _exit(accepted) == 0 and "accepted (allow_failures=true)" in accepted.stderr


def test_exit_status_for_an_empty_dataset(tmp_path: Path):
    folder = _chinese_dataset(tmp_path, {})
    frame = pd.read_parquet(folder / "data" / "train.parquet")
    frame.iloc[0:0].to_parquet(folder / "data" / "train.parquet")
    local = ["dataset=stepeval360", "dataset.source=local", f"dataset.local_dir={folder}"]
    result = stepeval_run(tmp_path / "results", *local, "model=silence", "asr=none")
    assert _exit(result) == 1
    assert "empty" in result.stderr and str(folder) in result.stderr


def test_exit_status_for_a_judge_that_fails_every_item(tmp_path: Path):
    with FakeServer() as server:
        server.fallback = judge_fake.serving(
            lambda request: Scripted(status=500, json={"error": {"message": "overloaded"}}), "judge-a"
        )
        result = stepeval_run(
            tmp_path, "dataset=sample", "model=canned", "asr=none", "limit=2", *judged(server), "judge.max_retries=0"
        )
    assert _exit(result) == 1
    assert "judge-relevance: 4 failed" in result.stderr


def test_a_text_only_model_has_speech_metrics_not_applicable_in_process_and_over_the_wire(tmp_path: Path):
    from tests import openai_audio

    text_only = ["model.backend._target_=tests.broken_parts.TextOnly"]
    in_process = pipeline.run(config(tmp_path / "a", "model=canned", *text_only, "asr=none", "limit=1"))
    with FakeServer() as server:
        reply = Scripted(json=openai_audio.completion(content="a text reply"))
        server.fallback = judge_fake.serving(lambda request: reply, "texty")
        served = ["model=served", f"model.base_url={server.url}/v1", "model.name=texty", "model.modalities=[text]"]
        wire = pipeline.run(config(tmp_path / "b", *served, "asr=none", "limit=1"))
    for outcome in (in_process, wire):
        table = (outcome.view_dir / "table.md").read_text()
        overall = next(line for line in table.splitlines() if line.startswith("| **overall**"))
        assert "n/a" not in overall and "not applicable" in overall
        summary = _view_summary(outcome.view_dir)
        assert "duration_s" in summary["not_applicable"] and "dnsmos_ovrl" in summary["not_applicable"]
