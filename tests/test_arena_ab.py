"""People in the arena's loop: the pairs `stepeval arena` records (pairs.json), the A/B rating page over real HTTP
and in a real headless Chromium, and judge-human / human-human agreement checked against scikit-learn by hand.

The arena compares the recorded-replies run of the sample (tests/validation_helpers.py, text channel) with its
truncated and copy controls, judged by the content-aware pairwise judge (tests/arena_judges.py) on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score

from stepeval.arena import command, human
from stepeval.arena.systems import truncate_text
from stepeval.judging.rubric import PACKAGED, load
from stepeval.validation import ratings_ab
from stepeval.validation.runner import read_lines
from tests import arena_judges, cdp
from tests import validation_helpers as vh
from tests.http_fake import FakeServer
from tests.test_rating_page import get, post, served

READY = "!!document.body && document.body.dataset.ready === '1'"
RUBRIC = load(PACKAGED, "pairwise_chat.v1")


def arena(out: Path, run: Path) -> int:
    with FakeServer() as server:
        server.fallback = arena_judges.content_aware
        judge = ["judge=openai_compatible", f"judge.base_url={server.url}/v1", "judge.model=pair-judge", "judge.reads=text"]
        return command.main([str(run), "--controls", "truncated,copy", "--out", str(out), "--resamples", "200", *judge])


@pytest.fixture(scope="module")
def arena_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arena-ab")
    with FakeServer() as server:
        server.fallback = vh.judge
        run = vh.build_run(root, server)
    arena(root / "arena", run)
    return root / "arena"


@pytest.fixture
def out(arena_out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "arena"
    shutil.copytree(arena_out, copy)
    return copy


@pytest.fixture
def page(out: Path):
    server = ratings_ab.make_server(out, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def pairs_of(out: Path) -> list[dict]:
    return json.loads((out / human.PAIRS).read_text())["pairs"]


def as_shown(page: str, rater: str) -> dict[str, dict]:
    return {p["id"]: p for p in json.loads(get(f"{page}/api/pairs?rater={rater}"))}


def test_the_arena_records_every_judged_pair_with_what_the_judge_read_and_its_debiased_verdict(out: Path):
    data = json.loads((out / human.PAIRS).read_text())
    pairs = data["pairs"]
    result = json.loads((out / "arena.json").read_text())
    assert len(pairs) == result["comparisons_planned"] == 44  # 22 turns, against each of two controls
    assert len({p["id"] for p in pairs}) == 44 and data["rubric_sha256"] == RUBRIC.sha256
    assert {(p["rubric"], p["rubric_sha256"]) for p in pairs} == {("pairwise_chat.v1", RUBRIC.sha256)}
    # the debiased score, recomputed from the two cached answers (x as A, then y as A)
    answers = {(r["conversation_id"], r["turn"], r["first"], r["second"]): r["grade"] for r in read_lines(
        out / "records" / "arena-pairwise_chat.jsonl")}  # fmt: skip
    for p in pairs:
        forward = answers[(p["conversation_id"], p["turn"], p["x"], p["y"])]
        backward = answers[(p["conversation_id"], p["turn"], p["y"], p["x"])]
        by_hand = {("A", "B"): 1.0, ("B", "A"): 0.0}.get((forward, backward), 0.5)
        assert p["judge_score_x"] == by_hand, p
        assert Path(p["x_audio"]).is_file() and Path(p["y_audio"]).is_file() and Path(p["user_audio"]).is_file()
        assert p["user_turns"][-1] and len(p["user_turns"]) == p["turn"] + 1
    truncated = [p for p in pairs if p["y"].endswith("+truncated")]
    copies = [p for p in pairs if p["y"].endswith("+copy")]
    assert len(truncated) == len(copies) == 22
    assert all(p["y_text"] == truncate_text(p["x_text"]) and Path(p["y_audio"]).parent.name == "controls" for p in truncated)
    assert all(p["x_text"] == p["y_text"] and p["judge_score_x"] == 0.5 for p in copies)
    assert len({p["judge_score_x"] for p in truncated}) > 1  # decided verdicts, not all ties
    assert "human_agreement" not in result  # nobody has rated yet


def test_each_rater_has_an_order_of_their_own_and_the_answer_is_mapped_back_to_a_system(out: Path, page: str):
    pairs = {p["id"]: p for p in pairs_of(out)}
    ann, bob = as_shown(page, "ann"), as_shown(page, "bob")
    assert as_shown(page, "ann") == ann  # a reload shows the same order
    distinct = [pid for pid, p in pairs.items() if p["x_text"] != p["y_text"]]
    first_of = {
        name: {pid: "x" if shown[pid]["a"]["text"] == pairs[pid]["x_text"] else "y" for pid in distinct}
        for name, shown in (("ann", ann), ("bob", bob))
    }
    assert any(first_of["ann"][pid] != first_of["bob"][pid] for pid in distinct)  # two raters, different orders
    assert {first_of["ann"][pid] for pid in distinct} == {"x", "y"}  # and each sees both orders
    assert not any(key in json.dumps(list(ann.values())) for key in ("judge_score_x", "+truncated", "+copy", str(out)))
    for rater in ("ann", "bob"):
        pid = distinct[0]
        status, body = post(page + "/api/ratings", {"rater": rater, "pair": pid, "choice": "A"})
        assert status == 200
        saved = body["saved"]
        expected = first_of[rater][pid]  # what the rater saw as A, worked out from the texts shown
        assert (saved["shown_as_a"], saved["winner"], saved["winner_system"]) == (expected, expected, pairs[pid][expected])
        assert (saved["rubric"], saved["rubric_sha256"]) == ("pairwise_chat.v1", RUBRIC.sha256)
    status, body = post(page + "/api/ratings", {"rater": "ann", "pair": distinct[0], "choice": "tie"})
    assert status == 200 and body["saved"]["winner"] == "tie" and body["saved"]["winner_system"] is None
    assert json.loads(get(page + "/api/ratings?rater=ann")) == {distinct[0]: "tie"}  # the latest counts
    for bad, field in (({"choice": "C"}, "choice"), ({"pair": "nope"}, "pair"), ({"rater": ""}, "rater")):
        status, body = post(page + "/api/ratings", {"rater": "ann", "pair": distinct[0], "choice": "A", **bad})
        assert status == 400 and field in body["error"]
    assert len(read_lines(out / human.RATINGS)) == 3


def test_a_post_without_the_token_or_from_another_origin_is_refused_and_not_written(out: Path, page: str):
    pid = pairs_of(out)[0]["id"]
    vote = {"rater": "mallory", "pair": pid, "choice": "A"}
    for headers in ({"X-Stepeval-Token": None}, {"X-Stepeval-Token": "guessed"}, {"Origin": "http://evil.example"},
                    {"Host": "evil.example"}):  # fmt: skip
        status, body = post(page + "/api/ratings", vote, headers)
        assert status == 403, headers
    assert not (out / human.RATINGS).exists()
    status, _ = post(page + "/api/ratings", vote, {"Origin": page})  # the page's own origin and token
    assert status == 200 and len(read_lines(out / human.RATINGS)) == 1


def test_a_missing_pairs_file_is_a_clear_error(tmp_path: Path, capsys):
    from stepeval import cli

    assert cli.main(["rate", "--pairs", str(tmp_path)]) == 2
    assert "pairs.json: no pairs to rate" in capsys.readouterr().err
    assert cli.main(["rate"]) == 2
    capsys.readouterr()
    (tmp_path / human.PAIRS).write_text(json.dumps({"pairs": [{"id": "p1", "turn": 0}]}))
    assert cli.main(["rate", "--pairs", str(tmp_path)]) == 2
    assert "pairs.json: pairs[0] lacks conversation_id, category, x, y" in capsys.readouterr().err


def test_a_bad_rating_line_is_named_and_the_arena_still_writes_its_results(out: Path, capsys):
    from stepeval import cli

    (out / human.RATINGS).write_text(json.dumps({"rater": "ann", "pair": "p1", "winner": "A", "rubric_sha256": "x"}) + "\n")
    assert cli.main(["rate", "--pairs", str(out), "--agreement"]) == 2
    assert "ratings-ab.jsonl: rating 1 winner 'A' is not x, y or tie" in capsys.readouterr().err
    view = json.loads((out / "arena.json").read_text())["systems"][0]["source"]
    (out / "arena.json").unlink()
    arena(out, Path(view))
    assert "no judge-human agreement" in capsys.readouterr().err
    assert "human_agreement" not in json.loads((out / "arena.json").read_text())


def test_judge_human_and_human_human_agreement_match_scikit_learn_by_hand(out: Path, page: str, capsys):
    pairs = pairs_of(out)
    choices = ["A", "B", "tie"]
    for n, p in enumerate(pairs[:30]):  # ann rates 30 pairs, bob the last 24 of them and 10 more: 20 overlap
        post(page + "/api/ratings", {"rater": "ann", "pair": p["id"], "choice": choices[(n * 7) % 3]})
    post(page + "/api/ratings", {"rater": "ann", "pair": pairs[0]["id"], "choice": "B"})  # changed her mind
    for n, p in enumerate(pairs[10:40]):
        post(page + "/api/ratings", {"rater": "bob", "pair": p["id"], "choice": choices[(n * 5 + 1) % 3]})
    # a rating under another version of the rubric is left out
    with open(out / human.RATINGS, "a") as handle:
        stale = {**read_lines(out / human.RATINGS)[-1], "rater": "carl", "rubric_sha256": "0" * 64}
        handle.write(json.dumps(stale) + "\n")

    last = {}
    for r in read_lines(out / human.RATINGS):
        last[(r["rater"], r["pair"])] = r
    value = {"x": 1.0, "y": 0.0, "tie": 0.5}
    human_of = {name: {pid: value[r["winner"]] for (rater, pid), r in last.items() if rater == name} for name in ("ann", "bob")}
    judge = {p["id"]: p["judge_score_x"] for p in pairs}
    assert len(human_of["ann"]) == 30 and human_of["ann"][pairs[0]["id"]] == value[last[("ann", pairs[0]["id"])]["winner"]]

    section = human.agreement_section(out, resamples=300)
    assert section["raters"] == ["ann", "bob"] and section["left_out"]["other_rubric_or_pair"] == 1

    def check(entry: dict, a: dict, b: dict) -> None:
        shared = [pid for pid in a if pid in b]
        x, y = [str(a[pid]) for pid in shared], [str(b[pid]) for pid in shared]
        coefficients = {c["name"]: c for c in entry["with_ties"]["coefficients"]}
        assert entry["with_ties"]["pairs"] == len(shared)
        same = sum(i == j for i, j in zip(x, y, strict=True))
        assert coefficients["percent_agreement"]["value"] == pytest.approx(same / len(x))
        assert coefficients["cohen_kappa"]["value"] == pytest.approx(cohen_kappa_score(x, y))
        for c in coefficients.values():
            assert c["low"] <= c["value"] <= c["high"], c
        decided = [(i, j) for i, j in zip(x, y, strict=True) if "0.5" not in (i, j)]
        assert entry["without_ties"]["pairs"] == len(decided)
        if len(decided) >= 2:
            found = {c["name"]: c["value"] for c in entry["without_ties"]["coefficients"]}
            assert found["percent_agreement"] == pytest.approx(sum(i == j for i, j in decided) / len(decided))

    entries = {(e["kind"], tuple(e["raters"])): e for e in section["entries"]}
    check(entries[("judge-human", ("judge", "ann"))], judge, human_of["ann"])
    check(entries[("judge-human", ("judge", "bob"))], judge, human_of["bob"])
    check(entries[("human-human", ("ann", "bob"))], human_of["ann"], human_of["bob"])
    assert entries[("human-human", ("ann", "bob"))]["with_ties"]["pairs"] == 20
    pooled = section["summary"]["judge-human"]["with_ties"]
    assert pooled["pairs"] == 60  # every (pair, rater) vote against the judge's verdict

    # the command prints it, and the arena adds it to arena.json and arena.md on its next run
    from stepeval import cli

    assert cli.main(["rate", "--pairs", str(out), "--agreement"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"]["judge-human"]["with_ties"]["pairs"] == 60
    arena(out, Path(json.loads((out / "arena.json").read_text())["systems"][0]["source"]))
    result = json.loads((out / "arena.json").read_text())
    added = result["human_agreement"]
    assert added["raters"] == ["ann", "bob"] and added["summary"]["judge-human"]["with_ties"]["pairs"] == 60
    values = [[c["value"] for c in e["with_ties"]["coefficients"]] for e in added["entries"]]
    assert values == [[c["value"] for c in e["with_ties"]["coefficients"]] for e in printed["entries"]]
    assert "## Judge-human agreement (60 ratings by 2 rater(s)" in (out / "arena.md").read_text()


BROWSER = pytest.mark.skipif(cdp.binary() is None, reason="no chromium (apt-get install chromium)")


def set_rater(browser: cdp.Browser, name: str) -> None:
    browser.evaluate(
        f"(() => {{ const r = document.getElementById('rater'); r.value = '{name}'; r.dispatchEvent(new Event('change')); }})()"
    )
    browser.wait_for(f"document.body.dataset.ratingsOf === '{name}' && !!document.getElementById('a-text')")


def shown_texts(browser: cdp.Browser, count: int) -> list[tuple[str, str]]:
    out = []
    for n in range(count):
        browser.evaluate(f"go({n})")
        out.append(tuple(browser.evaluate(f"document.getElementById('{side}-text').textContent") for side in "ab"))
    return out


@pytest.mark.slow
@BROWSER
def test_rating_pairs_in_a_real_browser(out: Path, page: str, tmp_path: Path):
    pairs = pairs_of(out)
    browser = cdp.Browser(tmp_path / "profile")
    try:
        browser.open(page + "/")
        browser.wait_for(READY)
        set_rater(browser, "ann")
        assert browser.evaluate("document.getElementById('progress').textContent") == f"0 of {len(pairs)} pairs rated"
        # two replies, each with text and a playable clip
        played = browser.evaluate(
            """(async () => { const a = document.getElementById('b-audio'); await a.play();
                 await new Promise(r => setTimeout(r, 500)); return {t: a.currentTime, error: a.error && a.error.code}; })()"""
        )
        assert played["error"] is None and played["t"] > 0
        ann = shown_texts(browser, len(pairs))
        # rate the first truncated pair "A"
        n = next(k for k, p in enumerate(pairs) if p["y"].endswith("+truncated"))
        browser.evaluate(f"go({n})")
        a_text = browser.evaluate("document.getElementById('a-text').textContent")
        browser.evaluate("document.querySelector('button.choice[data-choice=A]').click()")
        browser.wait_for("!!document.querySelector('button.choice.chosen[data-choice=A]')")
        (saved,) = read_lines(out / human.RATINGS)
        winner = "x" if a_text == pairs[n]["x_text"] else "y"  # the system whose text was shown as A
        assert (saved["rater"], saved["pair"], saved["choice"]) == ("ann", pairs[n]["id"], "A")
        assert (saved["winner"], saved["winner_system"]) == (winner, pairs[n][winner])
        # a reload shows the same order and the chosen answer
        browser.evaluate("document.body.dataset.ready = ''")
        browser.send("Page.reload")
        browser.wait_for(READY)
        browser.wait_for("!!document.getElementById('a-text')")
        assert browser.evaluate("document.getElementById('a-text').textContent") == a_text
        assert browser.evaluate("document.querySelector('button.choice.chosen').dataset.choice") == "A"
        assert browser.evaluate("document.getElementById('progress').textContent") == f"1 of {len(pairs)} pairs rated"
        set_rater(browser, "bob")
        bob = shown_texts(browser, len(pairs))
    finally:
        browser.close()
    assert [sorted(t) for t in ann] == [sorted(t) for t in bob]  # the same two replies
    assert any(a != b for a, b in zip(ann, bob, strict=True))  # in another order for some pairs


@pytest.mark.slow
@BROWSER
def test_a_page_of_another_origin_cannot_post_an_ab_rating_in_a_real_browser(out: Path, page: str, tmp_path: Path):
    vote = {"rater": "mallory", "pair": pairs_of(out)[0]["id"], "choice": "A"}
    body = json.dumps(json.dumps(vote))
    target = page + "/api/ratings"
    attack = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{target}" enctype="text/plain" target="sink">
<input name='{json.dumps(vote)[:-1]}, "x": "' value='"}}'></form><iframe name="sink"></iframe>
<script>
window.results = [];
(async () => {{
  try {{ await fetch("{target}", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: {body}}});
        window.results.push("no-cors sent"); }} catch (e) {{ window.results.push("no-cors " + e); }}
  try {{ const r = await fetch("{target}", {{method: "POST", headers: {{"Content-Type": "application/json",
        "X-Stepeval-Token": "guessed"}}, body: {body}}}); window.results.push("cors " + r.status); }}
  catch (e) {{ window.results.push("cors blocked"); }}
  document.getElementById("f").submit();
  setTimeout(() => {{ document.body.dataset.done = "1"; }}, 1500);
}})();
</script></body></html>"""
    other = served(attack)
    browser = cdp.Browser(tmp_path / "profile")
    try:
        browser.open(f"http://127.0.0.1:{other.server_address[1]}/")
        browser.wait_for("document.body && document.body.dataset.done === '1'")
        results = browser.evaluate("window.results")
    finally:
        browser.close()
        other.shutdown()
        other.server_close()
    assert results[0] == "no-cors sent" and results[1] == "cors blocked"
    assert not (out / human.RATINGS).exists()  # nothing was written
    status, _ = post(target, vote, {"Origin": page})
    assert status == 200 and len(read_lines(out / human.RATINGS)) == 1
