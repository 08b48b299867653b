"""`stepeval validate-judge` on a real run (the sample replayed through recorded replies, judged over real
HTTP): a content-aware judge passes the controls, content-blind judges fail them, and the leaderboard and
the report say which. Verdicts are cached, so a rerun sends no request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stepeval.reporting import leaderboard, report, validity
from stepeval.reporting.tables import load_run
from stepeval.store import RecordLog
from stepeval.validation import validate
from stepeval.validation.runner import read_lines
from tests import validation_helpers as vh
from tests.http_fake import FakeServer

CHECKS = {"shuffle/relevance", "shuffle/factuality", "truncate/chat_score", "truncate/instruction_following"}
FAST = ["--wer-rates", "0.2", "--resamples", "300"]


@pytest.fixture(scope="module")
def server():
    with FakeServer() as fake:
        fake.fallback = vh.judge
        yield fake


@pytest.fixture(scope="module")
def judged_run(server, tmp_path_factory) -> Path:
    return vh.build_run(tmp_path_factory.mktemp("validation"), server)


@pytest.fixture
def run(judged_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / judged_run.name
    shutil.copytree(judged_run, copy)
    return copy


def result(run: Path) -> dict:
    return json.loads((run / "validation.json").read_text())


def board_text(run: Path) -> str:
    return leaderboard.to_markdown(leaderboard.build([load_run(run)], resamples=100))


def report_html(run: Path, tmp_path: Path) -> str:
    out = tmp_path / "report.html"
    report.render(load_run(run), out, embed_audio=False, resamples=100)
    return out.read_text()


def test_a_run_without_validation_says_the_judge_is_not_validated(run: Path, tmp_path: Path):
    assert "judge not validated" in board_text(run)
    assert "judge not validated" in report_html(run, tmp_path)


def test_content_aware_judge_passes_every_control_and_a_rerun_costs_nothing(run: Path, server: FakeServer, tmp_path: Path):
    before = len(server.requests)
    assert validate.main([str(run), *FAST]) == 0
    found = result(run)
    assert {c["name"] for c in found["checks"]} == CHECKS
    for check in found["checks"]:
        assert check["status"] == "passed", check
        assert check["difference"] < 0 and check["p_value"] < 0.05
        assert check["conversations"] == 10 and check["turns"] == 22
    # the originals were judged by this very judge in the run: reused from records/judge-*.jsonl, never re-asked
    cached = [r for path in (run / "records").glob("validation-*.jsonl") for r in read_lines(path)]
    assert not [r for r in cached if r["variant"] == "original" and r["role"] == "primary"]
    assert len(server.requests) - before == len(cached)
    assert {r["variant"] for r in cached} == {"original", "shuffle", "truncate", "wer-0.2"}  # originals: the seed repeat
    # each check's figures are the paired comparison of the cached verdicts with the run's own
    records = RecordLog(run / "records" / "judge-relevance.jsonl").load()
    shuffled = {
        (r["conversation_id"], r["turn"]): r["value"] for r in cached if r["metric"] == "relevance" and r["variant"] == "shuffle"
    }
    by_hand = sum(shuffled[k] - records[k]["metrics"]["relevance"] for k in shuffled) / len(shuffled)
    relevance = next(c for c in found["checks"] if c["name"] == "shuffle/relevance")
    assert relevance["difference"] == pytest.approx(by_hand)

    before = len(server.requests)
    assert validate.main([str(run), *FAST]) == 0
    assert len(server.requests) == before  # everything from the cache
    assert [c["difference"] for c in result(run)["checks"]] == [c["difference"] for c in found["checks"]]

    assert "judge validated: 4/4 checks passed (" in board_text(run)
    html = report_html(run, tmp_path)
    assert "judge validated: 4/4 checks passed" in html and html.count('<span class="badge ok">passed</span>') == 4


@pytest.mark.parametrize("model", ["blind-index", "random"])
def test_content_blind_judges_fail_and_the_report_says_so(model: str, run: Path, server: FakeServer, tmp_path: Path):
    judge_file = tmp_path / "blind.yaml"
    judge_file.write_text(
        f"name: {model}\nmodel: {model}\nbase_url: {server.url}/v1\n"
        "metrics: [factuality.v1, relevance.v1, chat_score.v1, instruction_following.v1]\nreads: text\n"
    )
    assert validate.main([str(run), f"judge={judge_file}", "--controls", "shuffle", "truncate", "--no-repeat", *FAST]) == 1
    found = result(run)
    assert found["judge"]["model"] == model
    assert {c["name"] for c in found["checks"]} == CHECKS
    assert all(c["status"] == "failed" for c in found["checks"])
    if model == "blind-index":  # the same turn index gives the same verdict: nothing moves at all
        assert all(c["difference"] == 0 for c in found["checks"])
    line = validity.line(run, load_run(run).manifest)
    assert line.startswith("judge validation FAILED: 0/4 checks passed")
    assert f"validated judge model {model}, the run's judge is aware" in line
    assert "judge validation FAILED" in board_text(run)
    html = report_html(run, tmp_path)
    assert "judge validation FAILED" in html and html.count('<span class="badge bad">failed</span>') == 4


def test_self_consistency_and_inter_judge_agreement(run: Path, server: FakeServer):
    second = ["--second", "judge=openai_compatible", f"judge.base_url={server.url}/v1", "judge.model=random"]
    assert validate.main([str(run), "--controls", "shuffle", *FAST, *second]) == 0
    found = result(run)
    entries = {(a["kind"], a["metric"]): a for a in found["agreement"]}
    metrics = ["factuality", "relevance", "chat_score", "instruction_following"]
    assert set(entries) == {(k, m) for k in ("self-consistency", "inter-judge") for m in metrics}
    # the aware judge ignores the seed: its repeat agrees on every item
    for m in metrics:
        agree = next(c for c in entries[("self-consistency", m)]["coefficients"] if c["name"] == "percent_agreement")
        assert agree["value"] == 1.0
    # inter-judge: the share of items where the random judge's cached verdict equals the run's verdict
    second_verdicts = {
        (r["conversation_id"], r["turn"]): r["value"]
        for r in read_lines(run / "records" / "validation-chat_score.jsonl")
        if r["role"] == "second"
    }
    run_verdicts = RecordLog(run / "records" / "judge-chat_score.jsonl").load()
    same = sum(second_verdicts[k] == run_verdicts[k]["metrics"]["chat_score"] for k in second_verdicts)
    inter = entries[("inter-judge", "chat_score")]
    assert inter["items"] == 22 and inter["raters"] == ["judge", "second judge"]
    agree = next(c for c in inter["coefficients"] if c["name"] == "percent_agreement")
    assert agree["value"] == pytest.approx(same / 22)
    assert {c["name"] for c in inter["coefficients"]} >= {"weighted_kappa_quadratic", "spearman", "krippendorff_alpha_ordinal"}
    assert found["second_judge"]["model"] == "random"


def test_an_edited_rubric_makes_the_validation_stale(run: Path):
    assert validate.main([str(run), "--controls", "truncate", "--no-repeat", *FAST]) == 0
    data = result(run)
    data["rubrics"]["chat_score"]["sha256"] = "0" * 64
    (run / "validation.json").write_text(json.dumps(data))
    assert "rubric chat_score changed since the validation" in validity.line(run, load_run(run).manifest)


def test_bad_input_is_one_clear_line(run: Path, tmp_path: Path, capsys):
    from stepeval import cli

    assert cli.main(["validate-judge", str(tmp_path / "nowhere")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert validate.main([str(run), "model=parrot"]) == 2
    assert "'model=parrot': expected judge=<name or file.yaml> or judge.<key>=<value>" in capsys.readouterr().err
    assert validate.main([str(run), "--controls", "bogus"]) == 2
    assert "--controls: unknown ['bogus']" in capsys.readouterr().err
    assert validate.main([str(run), "judge=none"]) == 2
    assert "lists no rubrics" in capsys.readouterr().err
    assert not (run / "validation.json").exists()


def test_human_ratings_join_the_agreement(run: Path):
    from stepeval.validation import ratings

    rubrics = ratings.rubrics_of(run)
    store = ratings.Store(run, ratings.load_items(run, rubrics), rubrics, seed=0)
    keys = [("sample-gaming-en", 0), ("sample-logic-zh", 1), ("sample-emotion-en", 1)]
    for cid, turn in keys:
        store.save({"rater": "ann", "item": f"{cid}#{turn}", "metric": "relevance", "grade": "yes"})
    assert validate.main([str(run), "--controls", "truncate", "--no-repeat", *FAST]) == 0
    (entry,) = [a for a in result(run)["agreement"] if a["kind"] == "judge-human"]
    assert (entry["metric"], entry["raters"], entry["items"], entry["conversations"]) == ("relevance", ["judge", "ann"], 3, 3)
    run_verdicts = RecordLog(run / "records" / "judge-relevance.jsonl").load()
    same = sum(run_verdicts[k]["metrics"]["relevance"] == 1.0 for k in keys)
    assert next(c["value"] for c in entry["coefficients"] if c["name"] == "percent_agreement") == pytest.approx(same / 3)
