"""`stepeval rate`: the listening page over real HTTP, and in a real headless browser (slow).

The run is the sample replayed through recorded replies and judged by the content-aware fake judge
(tests/validation_helpers.py). Ratings go to <run>/ratings.jsonl; agreement is computed from them.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from stepeval.judging.rubric import PACKAGED, load
from stepeval.store import RecordLog
from stepeval.validation import ratings
from stepeval.validation.runner import read_lines
from tests import cdp
from tests import validation_helpers as vh
from tests.http_fake import FakeServer

PUBLIC_KEYS = {
    "index", "id", "conversation_id", "turn", "category", "language", "context",
    "user_text", "reply_text", "metrics", "user_audio", "reply_audio", "notes",
}  # fmt: skip
READY = "!!document.body && document.body.dataset.ready === '1'"
METRICS = ["factuality", "relevance", "chat_score", "instruction_following"]


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory) -> Path:
    with FakeServer() as server:
        server.fallback = vh.judge
        return vh.build_run(tmp_path_factory.mktemp("rating"), server)


@pytest.fixture
def run(judged_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / judged_run.name
    shutil.copytree(judged_run, copy)
    return copy


@pytest.fixture
def page(run: Path):
    server = ratings.make_server(run, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def token_of(page_url: str) -> str:
    """The token the served page carries in its config, as the page's own script reads it."""
    html = get(page_url.split("/api/")[0] + "/").decode()
    return json.loads(re.search(r"const CONFIG = (\{.*?\});\n", html).group(1))["token"]


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    """A rating as the page posts it (its token, no Origin: a non-browser client); ``headers`` replace those."""
    sent = {"Content-Type": "application/json", ratings.TOKEN_HEADER: token_of(url), **(headers or {})}
    sent = {k: v for k, v in sent.items() if v is not None}
    request = urllib.request.Request(url, json.dumps(body).encode(), sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def served(handler_html: str):
    """Another web page on another 127.0.0.1 port (another origin), serving ``handler_html`` at /."""

    class Other(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = handler_html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def judge_values(run: Path, metric: str) -> dict:
    return {k: r["metrics"][metric] for k, r in RecordLog(run / "records" / f"judge-{metric}.jsonl").load().items()}


def test_items_cover_every_category_first_and_never_show_the_judge(run: Path, judged_run: Path, page: str):
    items = json.loads(get(page + "/api/items"))
    assert len(items) == 22
    categories = {i["category"] for i in items}
    assert len(categories) == 9
    assert {i["category"] for i in items[:9]} == categories  # a 9-item session already covers every category
    assert all(set(i) == PUBLIC_KEYS for i in items)
    html = get(page + "/").decode()
    for text in (html, json.dumps(items)):
        assert "aware fake judge" not in text  # the judge's rationale
        assert "judge-" not in text and '"metrics": {' not in text
    # the transcripts are the ones the judge read: the recorded text channel and the dataset's user turn
    first = next(i for i in items if i["id"] == "sample-gaming-en#1")
    assert first["reply_text"] == vh.REPLIES["sample-gaming-en"][1]
    assert first["user_text"] == "Elephant. Your turn again."
    assert [c["role"] for c in first["context"]] == ["user", "assistant"]
    given = judged_run.parent.parent / "replies" / "sample-gaming-en" / "turn_1.wav"  # what the recorded model replied
    assert get(page + first["reply_audio"]) == given.read_bytes()
    assert get(page + first["user_audio"])[:4] in (b"RIFF", b"fLaC", b"OggS")


def test_ratings_are_saved_with_rater_time_and_rubric_hash_and_bad_ones_refused(run: Path, page: str):
    status, body = post(
        page + "/api/ratings", {"rater": "ann", "item": "sample-gaming-en#1", "metric": "relevance", "grade": "yes"}
    )
    assert status == 200
    (saved,) = read_lines(run / ratings.FILE)
    assert saved["rater"] == "ann" and saved["grade"] == "yes" and saved["value"] == 1.0 and saved["time"]
    assert saved["rubric_sha256"] == load(PACKAGED, "relevance.v1").sha256
    refused = [
        ({"rater": "", "item": "sample-gaming-en#1", "metric": "relevance", "grade": "yes"}, "rater"),
        ({"rater": "ann", "item": "nope#0", "metric": "relevance", "grade": "yes"}, "is not an item of this run"),
        (
            {"rater": "ann", "item": "sample-gaming-en#1", "metric": "relevance", "grade": "maybe"},
            "expected one of ['yes', 'no']",
        ),
        ({"rater": "ann", "item": "sample-gaming-en#1", "metric": "chat_score", "grade": "4"}, "expected one of [1, 2, 3, 4, 5]"),
    ]
    for payload, message in refused:
        status, body = post(page + "/api/ratings", payload)
        assert status == 400 and message in body["error"]
    assert len(read_lines(run / ratings.FILE)) == 1
    post(page + "/api/ratings", {"rater": "ann", "item": "sample-gaming-en#1", "metric": "relevance", "grade": "no"})
    assert json.loads(get(page + "/api/ratings?rater=ann")) == {"sample-gaming-en#1": {"relevance": "no"}}  # the latest


def test_a_rating_without_the_page_token_or_from_another_origin_is_refused_and_not_written(run: Path, page: str):
    rating = {"rater": "mallory", "item": "sample-gaming-en#1", "metric": "relevance", "grade": "no"}
    port = page.rsplit(":", 1)[1]
    forged = [
        ({ratings.TOKEN_HEADER: None}, "no valid X-Stepeval-Token"),
        ({ratings.TOKEN_HEADER: "guessed"}, "no valid X-Stepeval-Token"),
        ({ratings.TOKEN_HEADER: "gu\u00e9ssed"}, "no valid X-Stepeval-Token"),  # not ASCII: refused, not a crash
        ({"Origin": "http://127.0.0.1:1"}, "Origin 'http://127.0.0.1:1' is not this page's"),
        ({"Origin": "null"}, "Origin 'null' is not this page's"),  # a sandboxed frame or a file:// page
        ({"Host": f"attacker.example:{port}"}, f"Host 'attacker.example:{port}' is not this server"),  # DNS rebinding
    ]
    for headers, why in forged:
        status, body = post(page + "/api/ratings", rating, headers)
        assert status == 403 and body["error"].startswith(why)
    assert not (run / ratings.FILE).exists()
    assert post(page + "/api/ratings", rating, {"Origin": page})[0] == 200  # the page's own origin, with its token
    assert len(read_lines(run / ratings.FILE)) == 1
    request = urllib.request.Request(page + "/api/items", headers={"Host": f"rebound.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as caught:  # nor can a rebound name read the items
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403


def test_each_server_has_its_own_token_and_another_servers_is_refused(run: Path, page: str):
    other = ratings.make_server(run, port=0)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        other_url = "http://{}:{}".format(*other.server_address[:2])
        assert len(token_of(page)) >= 32 and token_of(other_url) != token_of(page)
        rating = {"rater": "ann", "item": "sample-gaming-en#1", "metric": "relevance", "grade": "yes"}
        status, _ = post(page + "/api/ratings", rating, {ratings.TOKEN_HEADER: token_of(other_url)})
        assert status == 403 and not (run / ratings.FILE).exists()
    finally:
        other.shutdown()
        other.server_close()


def test_agreement_of_judge_and_raters_from_saved_ratings(run: Path, page: str):
    items = json.loads(get(page + "/api/items"))[:4]
    judge = judge_values(run, "relevance")
    for n, item in enumerate(items):
        key = (item["conversation_id"], item["turn"])
        agrees = "yes" if judge[key] == 1.0 else "no"
        disagrees = "no" if agrees == "yes" else "yes"
        post(page + "/api/ratings", {"rater": "ann", "item": item["id"], "metric": "relevance", "grade": agrees})
        grade = agrees if n < 3 else disagrees  # bob disagrees with the judge on the last item only
        post(page + "/api/ratings", {"rater": "bob", "item": item["id"], "metric": "relevance", "grade": grade})
    rubrics = ratings.rubrics_of(run)
    entries = ratings.agreement_entries(run, ratings.run_judge_values(run, rubrics), rubrics, resamples=200)
    by = {(e["kind"], tuple(e["raters"])): e for e in entries if e["metric"] == "relevance"}
    assert set(by) == {
        ("judge-human", ("judge", "ann")),
        ("judge-human", ("judge", "bob")),
        ("human-human", ("ann", "bob")),
        ("judge-and-humans", ("judge", "ann", "bob")),
    }

    def agree(entry):
        return next(c["value"] for c in entry["coefficients"] if c["name"] == "percent_agreement")

    assert agree(by[("judge-human", ("judge", "ann"))]) == 1.0
    assert agree(by[("judge-human", ("judge", "bob"))]) == 0.75
    assert agree(by[("human-human", ("ann", "bob"))]) == 0.75
    assert by[("judge-and-humans", ("judge", "ann", "bob"))]["coefficients"][0]["name"] == "krippendorff_alpha_nominal"


@pytest.mark.slow
@pytest.mark.skipif(cdp.binary() is None, reason="no chromium (apt-get install chromium)")
def test_rating_in_a_real_browser_survives_a_reload(run: Path, page: str, tmp_path: Path):
    browser = cdp.Browser(tmp_path / "profile")
    try:
        browser.open(page + "/")
        browser.wait_for(READY)
        browser.evaluate(
            "(() => { const r = document.getElementById('rater'); r.value = 'carol'; r.dispatchEvent(new Event('change')); })()"
        )
        browser.wait_for("document.body.dataset.ratingsOf === 'carol'")
        # play the reply clip: it must decode and advance
        played = browser.evaluate(
            """(async () => { const a = document.getElementById('reply-audio'); await a.play();
                 await new Promise(r => setTimeout(r, 600));
                 return {t: a.currentTime, d: a.duration, error: a.error && a.error.code}; })()"""
        )
        first = json.loads(get(page + "/api/items"))[0]  # the page opens on the first item
        served = sf.info(io.BytesIO(get(page + first["reply_audio"])))  # the clip the page plays
        assert played["error"] is None and played["t"] > 0 and played["d"] == pytest.approx(served.duration, abs=0.01)
        chosen = {}
        for n in range(3):
            item = browser.evaluate("document.getElementById('item').dataset.id")
            metrics = browser.evaluate("[...document.querySelectorAll('.q')].map(q => q.dataset.metric)")
            assert metrics == METRICS
            for metric in metrics:
                grade = ("yes", "no")[n % 2] if metric in ("factuality", "relevance") else str(n + 2)
                browser.evaluate(f"document.querySelector('button.grade[data-metric={metric}][data-grade=\"{grade}\"]').click()")
                browser.wait_for(f"!!document.querySelector('button.grade.chosen[data-metric={metric}][data-grade=\"{grade}\"]')")
                chosen[(item, metric)] = grade
            browser.evaluate("document.getElementById('next').click()")
        assert browser.evaluate("document.getElementById('progress').textContent") == "3 of 22 items fully rated"
        assert browser.evaluate("document.getElementById('coverage').textContent") == "categories covered: 3 of 9"

        browser.evaluate("document.body.dataset.ready = ''")
        browser.send("Page.reload")
        browser.wait_for(READY)
        assert browser.evaluate("document.getElementById('rater').value") == "carol"
        assert browser.evaluate("document.getElementById('progress').textContent") == "3 of 22 items fully rated"
        assert browser.evaluate("document.getElementById('item').dataset.id") not in {i for i, _ in chosen}  # where we left off
        for n in range(3):
            browser.evaluate(f"go({n})")
            item = browser.evaluate("document.getElementById('item').dataset.id")
            shown = browser.evaluate(
                "Object.fromEntries([...document.querySelectorAll('button.grade.chosen')]"
                ".map(b => [b.dataset.metric, b.dataset.grade]))"
            )
            assert shown == {m: g for (i, m), g in chosen.items() if i == item}
    finally:
        browser.close()
    saved = read_lines(run / ratings.FILE)
    assert len(saved) == 12 and {r["rater"] for r in saved} == {"carol"}
    rubrics = ratings.rubrics_of(run)
    entries = ratings.agreement_entries(run, ratings.run_judge_values(run, rubrics), rubrics, resamples=200)
    relevance = next(e for e in entries if e["metric"] == "relevance")
    assert relevance["kind"] == "judge-human" and relevance["items"] == 3
    judge = judge_values(run, "relevance")
    by_hand = sum(
        judge[(r["conversation_id"], r["turn"])] == r["value"] for r in saved if r["metric"] == "relevance"
    ) / 3  # fmt: skip
    assert next(c["value"] for c in relevance["coefficients"] if c["name"] == "percent_agreement") == pytest.approx(by_hand)


@pytest.mark.slow
@pytest.mark.skipif(cdp.binary() is None, reason="no chromium (apt-get install chromium)")
def test_a_page_of_another_origin_cannot_post_a_rating_in_a_real_browser(run: Path, page: str, tmp_path: Path):
    """A web page on another 127.0.0.1 port posts a rating to the rating server the ways a page can without
    the token: a simple cross-origin fetch (no preflight), a form, and a fetch with a made-up token header."""
    item = {"rater": "mallory", "item": "sample-gaming-en#1", "metric": "relevance", "grade": "no"}
    body = json.dumps(json.dumps(item))
    target = page + "/api/ratings"
    attack = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{target}" enctype="text/plain" target="sink">
<input name='{json.dumps(item)[:-1]}, "x": "' value='"}}'></form><iframe name="sink"></iframe>
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
    assert results[0] == "no-cors sent" and results[1] == "cors blocked"  # the request went out; the preflight failed
    assert not (run / ratings.FILE).exists()  # nothing was written from any of them
    # the page itself, in the same kind of browser, still saves (its origin, its token)
    status, _ = post(target, item, {"Origin": page})
    assert status == 200 and len(read_lines(run / ratings.FILE)) == 1


def test_rate_agreement_command_prints_from_saved_ratings(run: Path, page: str, capsys):
    from stepeval import cli

    assert cli.main(["rate", str(run), "--agreement"]) == 0
    assert "no ratings in" in capsys.readouterr().out
    for item in json.loads(get(page + "/api/items"))[:3]:
        post(page + "/api/ratings", {"rater": "dan", "item": item["id"], "metric": "chat_score", "grade": 4})
    assert cli.main(["rate", str(run), "--agreement"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert (entry["kind"], entry["metric"], entry["raters"], entry["items"]) == ("judge-human", "chat_score", ["judge", "dan"], 3)
