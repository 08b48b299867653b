"""`stepeval validate-judge` on a real run (the sample replayed through recorded replies, judged over real
HTTP by fake judges of our own): a content-aware judge passes every control (text and listening), the
random, constant and error-loving judges fail, each validation is stored under its judge's identity, and
the leaderboard and report show under each row its own judge's validation. Verdicts are cached, so a
rerun sends no request."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

from stepeval import views
from stepeval.judging import identity as judge_identity
from stepeval.reporting import leaderboard, report, validity
from stepeval.reporting.tables import load_run
from stepeval.store import RecordLog
from stepeval.validation import validate
from stepeval.validation.runner import read_lines
from tests import validation_helpers as vh
from tests.http_fake import FakeServer

pytestmark = pytest.mark.slow  # replays and judges the sample (real HTTP, score worker processes)

TEXT_CHECKS = {"shuffle/relevance", "shuffle/factuality", "truncate/chat_score", "truncate/instruction_following"}
WER_CHECKS = {f"wer/{m}" for m in ("factuality", "relevance", "chat_score", "instruction_following")}
LISTENING_CHECKS = {
    "audio_swap/voice_control",
    "audio_truncate/voice_control",
    "flat_voice/voice_control",
    "audio_truncate/audio_quality",
    "audio_noise/audio_quality",
    "audio_clip/audio_quality",
}
CONTROL_CHECKS = TEXT_CHECKS | WER_CHECKS | LISTENING_CHECKS
FAST = ["--wer-rates", "0.2", "0.4", "--resamples", "300"]


JUDGES = ("aware", "random", "constant", "contrarian")


@pytest.fixture(scope="module")
def servers():
    """One judge server of our own per judge, each on its own 127.0.0.1 port."""
    with contextlib.ExitStack() as stack:
        found = {}
        for name in JUDGES:
            fake = stack.enter_context(FakeServer())
            fake.fallback = vh.judge_as(name)
            found[name] = fake
        yield found


@pytest.fixture(scope="module")
def server(servers) -> FakeServer:
    return servers["aware"]


def at(servers: dict, model: str) -> list[str]:
    """Overrides that point the judge (text and listening) at another judge server."""
    url = f"{servers[model].url}/v1"
    return [f"judge.model={model}", f"judge.base_url={url}", f"judge.audio_model={model}", f"judge.audio_base_url={url}"]


@pytest.fixture(scope="module")
def judged_root(server, tmp_path_factory) -> Path:
    """A folder holding the replies and a run judged (text and listening) by the aware judge."""
    root = tmp_path_factory.mktemp("validation")
    vh.build_run(root, server, listening=True)
    return root


@pytest.fixture
def root(judged_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(judged_root, copy)
    return copy


def run_of(root: Path) -> Path:
    (run,) = (root / "results").iterdir()
    return run


def view_of(root: Path, slug: str) -> Path:
    (found,) = [p for p in (run_of(root) / "views").iterdir() if f"-judge_{slug}-" in p.name]
    return found


def stored(view: Path) -> dict:
    """The validation stored under the identity of the view's judge."""
    run = load_run(view)
    identity = judge_identity.of(run.provenance()["judge"])
    return json.loads(validity.path_for(run.root, identity).read_text())


def board(*paths: Path) -> dict:
    return leaderboard.build([load_run(p) for p in paths], resamples=100)


def report_html(view: Path, tmp_path: Path) -> str:
    out = tmp_path / f"report-{view.name}.html"
    report.render(load_run(view), out, embed_audio=False, resamples=100)
    return out.read_text()


def checks(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def test_a_view_without_validation_says_its_judge_is_not_validated(root: Path, tmp_path: Path):
    view = view_of(root, "aware")
    assert "-judge_aware-" in view.name  # the judge model, not the config group (openai_compatible)
    text = leaderboard.to_markdown(board(view))
    assert "judge aware-" in text and "not validated" in text
    assert (view / "table.md").read_text().rstrip().splitlines()[-1].startswith(f"{validity.TABLE_PREFIX}judge aware-")
    assert "not validated" in report_html(view, tmp_path)


def test_content_aware_judge_passes_every_control_and_a_rerun_costs_nothing(root: Path, server: FakeServer, tmp_path: Path):
    run = run_of(root)
    before = len(server.requests)
    assert validate.main([str(run), *FAST]) == 0  # a run folder: its one judged view
    view = view_of(root, "aware")
    found = stored(view)
    assert not (run / "validation.json").exists()  # per judge, not per run
    by_name = checks(found)
    assert CONTROL_CHECKS <= set(by_name)
    for check in found["checks"]:
        assert check["status"] == "passed", check
    for name in CONTROL_CHECKS - WER_CHECKS:
        assert by_name[name]["difference"] < 0 and by_name[name]["p_value"] < 0.05
        assert by_name[name]["conversations"] == 10 and by_name[name]["turns"] == 22
    for name in WER_CHECKS:
        assert by_name[name]["high"] < 0  # scores fall with word errors, the whole interval below 0
    assert found["judge_key"] == found["view_judge_key"] and found["view"] == view.name
    # the originals were judged by this very judge in the run: reused from records/judge-*.jsonl, never re-asked
    cached = [r for path in (run / "records").glob("validation-*.jsonl") for r in read_lines(path)]
    assert not [r for r in cached if r["variant"] == "original" and r["role"] == "primary"]
    assert len(server.requests) - before == len(cached) + 2  # + the pre-flight GET /models of the text and audio judge
    # each check's figures are the paired comparison of the cached verdicts with the run's own
    records = RecordLog(run / "records" / "judge-audio_quality.jsonl").load()
    noisy = {(r["conversation_id"], r["turn"]): r["value"] for r in cached if r["variant"] == "audio_noise"}
    by_hand = sum(noisy[k] - records[k]["metrics"]["audio_quality"] for k in noisy) / len(noisy)
    assert by_name["audio_noise/audio_quality"]["difference"] == pytest.approx(by_hand)

    before = len(server.requests)
    assert validate.main([str(view), *FAST]) == 0
    assert len(server.requests) - before == 2  # the pre-flights alone: every verdict from the cache
    line = leaderboard.to_markdown(board(view))
    assert f"judge {found['judge_key']} validated: {len(by_name)}/{len(by_name)} checks passed (" in line
    html = report_html(view, tmp_path)
    assert "validated:" in html and html.count('<span class="badge ok">passed</span>') == len(by_name)


@pytest.mark.parametrize("model", ["random", "constant"])
def test_content_blind_judges_fail_under_their_own_rows(model: str, root: Path, servers: dict, tmp_path: Path):
    blind = vh.judge_view(root, servers[model], model, listening=True)  # the same run, judged again by the blind judge
    aware = view_of(root, "aware")
    assert validate.main([str(blind), *FAST]) == 1  # the view's own judge: no override
    found = stored(blind)
    assert found["identity"]["models"] == {"text": model, "audio": model}
    assert CONTROL_CHECKS <= set(checks(found))
    for name in CONTROL_CHECKS:
        assert checks(found)[name]["status"] == "failed", checks(found)[name]
    if model == "constant":  # the best grade whatever it reads: nothing moves at all
        assert all(checks(found)[n]["difference"] == 0 for n in CONTROL_CHECKS - WER_CHECKS)
    lines = {row["judge"]: row["judge_validity"] for row in board(aware, blind)["rows"]}
    assert "validation FAILED" in lines[model]
    assert lines["aware"].startswith("judge aware-") and "not validated" in lines["aware"]  # never the other judge's
    assert "validation FAILED" in report_html(blind, tmp_path)
    assert "validation FAILED" not in report_html(aware, tmp_path)


def test_a_judge_that_rewards_word_errors_fails_loudly(root: Path, servers: dict, capsys):
    view = view_of(root, "aware")
    code = validate.main([str(view), *at(servers, "contrarian"), "--controls", "wer", "--no-repeat", *FAST])
    assert code == 1
    found = stored_for(view, "contrarian")
    for name in WER_CHECKS:
        check = checks(found)[name]
        assert check["status"] == "failed" and check["low"] > 0
        assert "ROSE WITH WORD ERRORS" in check["why"]
    assert "ROSE WITH WORD ERRORS" in capsys.readouterr().out


def stored_for(view: Path, model: str) -> dict:
    (path,) = (view.parent.parent / validity.FOLDER).glob(f"{model}*/{validity.FILE}")
    return json.loads(path.read_text())


def test_the_random_judge_never_passes_error_sensitivity(root: Path, servers: dict):
    view = view_of(root, "aware")
    assert validate.main([str(view), *at(servers, "random"), "--controls", "wer", "--no-repeat", *FAST]) == 1
    for name in WER_CHECKS:
        assert checks(stored_for(view, "random"))[name]["status"] == "failed"


def test_two_judges_on_one_run_each_row_shows_its_own_validation(root: Path, servers: dict, tmp_path: Path):
    aware = view_of(root, "aware")
    random = vh.judge_view(root, servers["random"], "random", listening=True)
    assert validate.main([str(aware), "--no-repeat", *FAST]) == 0
    assert validate.main([str(random), "--no-repeat", *FAST]) == 1
    out = tmp_path / "board"
    from stepeval.cli import main as cli

    assert cli(["leaderboard", str(aware), str(random), "--out", str(out)]) == 0
    markdown = (out / "leaderboard.md").read_text()
    assert f"{aware.name}: judge aware-" in markdown and f"{random.name}: judge random-" in markdown
    aware_line = next(line for line in markdown.splitlines() if line.startswith(f"{run_of(root).name} / {aware.name}:"))
    random_line = next(line for line in markdown.splitlines() if line.startswith(f"{run_of(root).name} / {random.name}:"))
    assert " validated: " in aware_line and "FAILED" not in aware_line
    assert "validation FAILED" in random_line
    table = pd.read_csv(out / "leaderboard.csv")
    table = table[table["status"] == "measured"]  # the paper's published rows (sample: StepEval-360) stand apart
    assert sorted(table["judge"]) == ["aware", "random"] and set(table["view"]) == {aware.name, random.name}
    assert set(table["asr"]) == {"none"}
    rows = {r["judge"]: r for r in json.loads((out / "leaderboard.json").read_text())["rows"]}
    assert "validation FAILED" in rows["random"]["judge_validity"] and "FAILED" not in rows["aware"]["judge_validity"]
    assert rows["aware"]["judge_key"] != rows["random"]["judge_key"]
    latex = (out / "leaderboard.tex").read_text()
    assert "aware" in latex and "random" in latex and "judge" in latex
    assert "validation FAILED" in report_html(random, tmp_path)
    html = report_html(aware, tmp_path)
    assert " validated: " in html and "FAILED" not in html
    manifest = json.loads((run_of(root) / "manifest.json").read_text())
    assert {e["judge"] for e in manifest["views"].values()} == {"aware", "random"}
    # the line under each view's table: its own judge's validation
    aware_table = (aware / "table.md").read_text().rstrip().splitlines()[-1]
    random_table = (random / "table.md").read_text().rstrip().splitlines()[-1]
    assert aware_table.startswith(f"{validity.TABLE_PREFIX}judge aware-") and " validated: " in aware_table
    assert random_table.startswith(f"{validity.TABLE_PREFIX}judge random-") and "validation FAILED" in random_table


def test_a_validation_of_the_same_model_otherwise_configured_is_stale_and_names_what_changed(root: Path):
    view = view_of(root, "aware")
    assert validate.main([str(view), "judge.seed=7", "--controls", "truncate", "--no-repeat", *FAST]) == 0
    line = validity.line(load_run(view).root, judge=load_run(view).provenance()["judge"])
    assert "not validated (stale" in line and "settings.seed 7 -> 0" in line
    assert "checks passed" not in line


def test_an_edited_rubric_makes_the_validation_stale(root: Path):
    view = view_of(root, "aware")
    assert validate.main([str(view), "--controls", "truncate", "--no-repeat", *FAST]) == 0
    path = next((run_of(root) / validity.FOLDER).glob(f"*/{validity.FILE}"))
    data = json.loads(path.read_text())
    data["identity"]["rubrics"]["chat_score"] = "0" * 64  # as if validated before the rubric was edited
    key = judge_identity.key(data["identity"])
    (path.parent.parent / key).mkdir()
    (path.parent.parent / key / validity.FILE).write_text(json.dumps(data))
    shutil.rmtree(path.parent)
    line = validity.line(run_of(root), judge=load_run(view).provenance()["judge"])
    assert "stale" in line and "rubric chat_score sha256 000000000000 -> " in line


def test_a_run_with_two_judged_views_is_refused_naming_them(root: Path, servers: dict, capsys):
    other = vh.judge_view(root, servers["constant"], "constant")
    assert validate.main([str(run_of(root)), *FAST]) == 2
    err = capsys.readouterr().err
    assert "holds 2 judged views" in err and other.name in err and view_of(root, "aware").name in err


def test_a_judge_that_is_down_is_one_clear_line_before_any_work(root: Path, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    view = view_of(root, "aware")
    assert validate.main([str(view), f"judge.base_url=http://127.0.0.1:{port}/v1", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be reached" in err[0] and str(port) in err[0]
    assert not (run_of(root) / validity.FOLDER).exists()
    assert not list((run_of(root) / "records").glob("validation-*.jsonl"))


def test_self_consistency_and_inter_judge_agreement(root: Path, servers: dict):
    view = view_of(root, "aware")
    second = ["--second", "judge=openai_compatible", f"judge.base_url={servers['random'].url}/v1", "judge.model=random"]
    assert validate.main([str(view), "--controls", "shuffle", *FAST, *second]) == 1  # the random second judge disagrees
    found = stored(view)
    entries = {(a["kind"], a["metric"]): a for a in found["agreement"]}
    metrics = ["factuality", "relevance", "chat_score", "instruction_following"]
    assert set(entries) == {(k, m) for k in ("self-consistency", "inter-judge") for m in metrics}
    for m in metrics:  # the aware judge ignores the seed: its repeat agrees on every item
        agree = next(c for c in entries[("self-consistency", m)]["coefficients"] if c["name"] == "percent_agreement")
        assert agree["value"] == 1.0
        assert checks(found)[f"agreement/self-consistency/{m}"]["status"] == "passed"
        assert checks(found)[f"agreement/inter-judge/{m}"]["status"] in ("failed", "inconclusive")
    assert any(checks(found)[f"agreement/inter-judge/{m}"]["status"] == "failed" for m in metrics)
    second_verdicts = {
        (r["conversation_id"], r["turn"]): r["value"]
        for r in read_lines(run_of(root) / "records" / "validation-chat_score.jsonl")
        if r["role"] == "second"
    }
    run_verdicts = RecordLog(run_of(root) / "records" / "judge-chat_score.jsonl").load()
    same = sum(second_verdicts[k] == run_verdicts[k]["metrics"]["chat_score"] for k in second_verdicts)
    inter = entries[("inter-judge", "chat_score")]
    assert inter["items"] == 22 and inter["raters"] == ["judge", "second judge"]
    agree = next(c for c in inter["coefficients"] if c["name"] == "percent_agreement")
    assert agree["value"] == pytest.approx(same / 22)
    assert found["second_judge"]["model"] == "random"


def test_agreement_thresholds_are_configurable(root: Path, servers: dict):
    view = view_of(root, "aware")
    second = ["--second", "judge=openai_compatible", f"judge.base_url={servers['random'].url}/v1", "judge.model=random"]
    lax = ["--agreement-threshold", "inter-judge=-1", "--min-items", "2"]
    assert validate.main([str(view), "--controls", "truncate", "--no-repeat", *lax, *FAST, *second]) == 0
    found = stored(view)
    assert found["settings"]["thresholds"]["agreement"]["inter-judge"] == -1
    assert checks(found)["agreement/inter-judge/chat_score"]["status"] == "passed"


def test_bad_input_is_one_clear_line(root: Path, tmp_path: Path, capsys):
    from stepeval import cli

    view = view_of(root, "aware")
    assert cli.main(["validate-judge", str(tmp_path / "nowhere")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert validate.main([str(view), "model=parrot"]) == 2
    assert "'model=parrot': expected judge=<name or file.yaml> or judge.<key>=<value>" in capsys.readouterr().err
    assert validate.main([str(view), "--controls", "bogus"]) == 2
    assert "--controls: unknown ['bogus']" in capsys.readouterr().err
    assert validate.main([str(view), "judge=none"]) == 2
    assert "lists no rubrics" in capsys.readouterr().err
    assert validate.main([str(view), "--agreement-threshold", "nonsense=1"]) == 2
    assert "--agreement-threshold 'nonsense=1'" in capsys.readouterr().err
    assert not (run_of(root) / validity.FOLDER).exists()


def test_human_ratings_join_the_agreement_and_too_few_are_inconclusive(root: Path):
    from stepeval.validation import ratings

    run = run_of(root)
    view = view_of(root, "aware")
    rubrics = ratings.rubrics_of(run)
    store = ratings.Store(run, ratings.load_items(run, rubrics), rubrics, seed=0)
    keys = [("sample-gaming-en", 0), ("sample-logic-zh", 1), ("sample-emotion-en", 1)]
    for cid, turn in keys:
        store.save({"rater": "ann", "item": f"{cid}#{turn}", "metric": "relevance", "grade": "yes"})
    assert validate.main([str(view), "--controls", "truncate", "--no-repeat", *FAST]) == 3  # inconclusive, none failed
    found = stored(view)
    (entry,) = [a for a in found["agreement"] if a["kind"] == "judge-human"]
    assert (entry["metric"], entry["raters"], entry["items"], entry["conversations"]) == ("relevance", ["judge", "ann"], 3, 3)
    run_verdicts = RecordLog(run / "records" / "judge-relevance.jsonl").load()
    same = sum(run_verdicts[k]["metrics"]["relevance"] == 1.0 for k in keys)
    assert next(c["value"] for c in entry["coefficients"] if c["name"] == "percent_agreement") == pytest.approx(same / 3)
    check = checks(found)["agreement/judge-human/relevance/ann"]
    assert check["status"] == "inconclusive" and "too little signal" in check["why"]
    assert "validation INCONCLUSIVE" in validity.line(run, judge=load_run(view).provenance()["judge"])


def test_a_validation_json_of_an_earlier_version_is_still_read_for_its_judge(root: Path):
    view = view_of(root, "aware")
    assert validate.main([str(view), "--controls", "truncate", "--no-repeat", *FAST]) == 0
    current = stored(view)
    endpoint = load_run(view).provenance()["judge"]["endpoints"]["text"]
    legacy = {
        "format": validity.LEGACY_FORMAT,
        "judge": {"name": "openai_compatible", "model": "aware", "base_url": endpoint["base_url"], "seed": 0},
        "rubrics": current["rubrics"],
        "checks": current["checks"],
    }
    shutil.rmtree(run_of(root) / validity.FOLDER)
    (run_of(root) / validity.FILE).write_text(json.dumps(legacy))
    judge = load_run(view).provenance()["judge"]
    assert " validated: " in validity.line(run_of(root), judge=judge)
    legacy["judge"]["model"] = "random"  # an old file of another judge is not this judge's
    (run_of(root) / validity.FILE).write_text(json.dumps(legacy))
    assert "not validated" in validity.line(run_of(root), judge=judge)


def test_a_view_named_after_the_judge_config_group_still_opens_and_a_rerun_renames_it(root: Path, server: FakeServer):
    run = run_of(root)
    view = view_of(root, "aware")
    old_name = view.name.replace("-judge_aware-", "-judge_openai_compatible-")
    data = json.loads((view / views.VIEW_FILE).read_text())
    data["name"] = old_name
    (view / views.VIEW_FILE).write_text(json.dumps(data))
    view.rename(view.parent / old_name)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["views"] = {old_name: {**manifest["views"].pop(view.name), "judge": "openai_compatible"}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    opened = load_run(view.parent / old_name)  # the old folder opens as before
    assert opened.view is not None and opened.view.name == old_name
    assert vh.judge_view(root, server, "aware", listening=True) == view  # rerun: the folder gets the new name
    assert not (view.parent / old_name).exists()
    assert set(json.loads((run / "manifest.json").read_text())["views"]) == {view.name}
