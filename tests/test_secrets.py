"""Secrets are redacted by key name and by value, wherever they would be echoed: manifest, records,
logs, console and Hydra's own messages. The end-to-end tests plant secrets in a real run against a
real local server that fails some turns (and echoes what it was sent, as some gateways do), then
grep every file the run writes and everything it prints."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stepeval import secrets
from tests.http_fake import FakeServer, Scripted
from tests.openai_audio import b64, completion, encoded, tone
from tests.run_helpers import stepeval_run

PLANTED = ("SECRETPW", "SECRETQ", "sk-SECRETK", "sk-JUDGESECRET")


@pytest.fixture(autouse=True)
def forget_secrets():
    secrets.clear_secrets()
    yield
    secrets.clear_secrets()


def test_urls_lose_their_credentials_in_any_text():
    text = "POST http://alice:hunter2pw@gw:8000/v1/chat/completions?api_key=QQQ123&region=eu failed; retry http://gw/v1"
    assert secrets.scrub(text) == (
        "POST http://alice:<redacted>@gw:8000/v1/chat/completions?api_key=<redacted>&region=eu failed; retry http://gw/v1"
    )
    assert (
        secrets.scrub("https://TOKEN123@host/v1?sig=abc&code=x9") == "https://<redacted>@host/v1?sig=<redacted>&code=<redacted>"
    )


def test_registered_values_are_scrubbed_in_every_form():
    secrets.register_secret("sk-live/abc+123")
    secrets.register_secret("EMPTY")  # the local servers' placeholder is no secret: text keeps the word
    text = "key sk-live/abc+123, encoded sk-live%2Fabc%2B123, EMPTY stays"
    assert secrets.scrub(text) == "key <redacted>, encoded <redacted>, EMPTY stays"


def test_secrets_found_in_argv_and_config_and_redacted_by_value():
    argv = [
        "model.api_key=sk-ARGV1",
        "model.base_url=http://u:PWARGV2@h:1/v1?api_key=QARGV3",
        "model.endpoints=[{base_url:'http://h2/v1',api_key:sk-ARGV4,concurrency:2}]",
        "judge.max_tokens=512",
    ]
    found = secrets.secrets_in_argv(argv)
    assert {"sk-ARGV1", "PWARGV2", "QARGV3", "sk-ARGV4"} <= set(found) and "512" not in found
    config = {"model": {"api_key": "sk-CFG1", "base_url": "http://h/v1?key=CFG2", "tokenizer": "gpt2", "max_tokens": 9}}
    assert set(secrets.secrets_in_config(config)) == {"sk-CFG1", "CFG2"}
    for value in found:
        secrets.register_secret(value)
    assert secrets.redact_argv(argv) == [
        "model.api_key=<redacted>",
        "model.base_url=http://u:<redacted>@h:1/v1?api_key=<redacted>",
        "model.endpoints=[{base_url:'http://h2/v1',api_key:<redacted>,concurrency:2}]",
        "judge.max_tokens=512",
    ]
    assert secrets.redact(config)["model"] == {
        "api_key": "<redacted>",
        "base_url": "http://h/v1?key=<redacted>",
        "tokenizer": "gpt2",
        "max_tokens": 9,
    }


def test_log_records_and_streams_are_scrubbed():
    secrets.register_secret("sk-LOGGED")
    secrets.install_log_scrubber()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("stepeval.test_secrets")
    logger.addHandler(handler)
    try:
        logger.warning("calling %s with %s", "http://h/v1?api_key=QLOG", "sk-LOGGED")
        try:
            raise RuntimeError("failed with sk-LOGGED")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    logged = out.getvalue()
    assert "calling http://h/v1?api_key=<redacted> with <redacted>" in logged
    assert "RuntimeError: failed with <redacted>" in logged and "LOGGED" not in logged and "QLOG" not in logged
    stream = io.StringIO()
    secrets.ScrubbingStream(stream).write("Error executing job with overrides: ['model.api_key=sk-LOGGED']\n")
    assert stream.getvalue() == "Error executing job with overrides: ['model.api_key=<redacted>']\n"


def _leaks(results: Path, *outputs: str) -> dict[str, list[str]]:
    """Every planted secret found, and where: each file under ``results`` and each output."""
    texts = {f"output {i}": text for i, text in enumerate(outputs)}
    texts.update({str(p): p.read_bytes().decode("utf-8", errors="replace") for p in results.rglob("*") if p.is_file()})
    return {name: [s for s in PLANTED if s in text] for name, text in texts.items() if any(s in text for s in PLANTED)}


def _gateway(server: FakeServer):
    """A model and judge endpoint that fails some turns and echoes the request line and key in its errors."""
    spoken = b64(encoded(tone(0.3), 24000))
    calls = {"n": 0}

    def answer(request):
        if request.method == "GET":
            return Scripted(json={"object": "list", "data": [{"id": "m"}, {"id": "fake-judge"}]})
        body = request.json
        auth = request.headers.get("Authorization", "")
        echo = f"invalid request to {request.path}?{request.query} ({auth})"
        if body["model"] == "fake-judge":
            from tests import judge_fake

            if body["messages"][1]["content"].count('"role": "user"') == 2:  # second turns' items: a refusal
                return Scripted(status=400, json={"error": {"message": echo}})
            return judge_fake.judge(request)
        calls["n"] += 1
        if calls["n"] == 1:
            busy = f"overloaded, try later: POST {request.path}?{request.query} ({auth})"
            return Scripted(status=503, json={"error": {"message": busy}})  # retried: the echo goes to extra.retries
        if body["metadata"]["turn"] == "1":
            return Scripted(status=400, json={"error": {"message": echo}})  # turn failed; later turns skipped
        return Scripted(json=completion(spoken, content="The library opens at nine."))

    return answer


@pytest.mark.slow
def test_no_planted_secret_reaches_any_file_or_output_of_a_run(tmp_path):
    with FakeServer() as server:
        server.fallback = _gateway(server)
        host = server.url.removeprefix("http://")
        done = stepeval_run(
            tmp_path,
            "dataset=sample",
            "model=served",
            "model.name=m",
            f"model.base_url='http://user:SECRETPW@{host}/v1?api_key=SECRETQ'",  # quoted: Hydra's grammar
            "model.api_key=sk-SECRETK",
            "model.max_retries=1",
            "asr=none",
            "judge=openai_compatible",
            f"judge.base_url={server.url}/v1",
            "judge.model=fake-judge",
            "judge.api_key=sk-JUDGESECRET",
            "judge.reads=text",
            "judge.metrics=[factuality.v1]",
            "limit=3",
            timeout=300,
        )
    assert done.returncode == 1, done.stderr[-3000:]  # turns failed on purpose: the run says so
    assert "replay: 3 failed" in done.stderr  # the problem lines are printed, and scrubbed like the rest
    replays = [json.loads(line) for p in tmp_path.rglob("replay.jsonl") for line in p.read_text().splitlines()]
    failed = [r for r in replays if r["status"] == "failed"]
    assert failed and all("invalid request to /v1/chat/completions?api_key=<redacted>" in r["error"] for r in failed)
    assert any(r["extra"]["retries"] for r in replays if r["status"] == "ok")  # the 503's echo went through a retry
    sent = [r for r in server.requests if r.method == "POST"]
    assert {r.query for r in sent if r.json["model"] == "m"} == {"api_key=SECRETQ"}  # the secrets were really used
    assert _leaks(tmp_path, done.stdout, done.stderr) == {}


@pytest.mark.slow
def test_hydra_own_messages_do_not_echo_secrets(tmp_path):
    override = "model.endpoints=[{base_url:'http://u:SECRETPW@h/v1?api_key=SECRETQ',api_key:sk-SECRETK,concurrency:x}]"
    bad = stepeval_run(tmp_path, "dataset=sample", "model=served", "model.name=m", override, timeout=120)
    assert "Error merging override" in bad.stderr  # Hydra's message, with the override it could not merge
    swept = stepeval_run(
        tmp_path, "-m", "dataset=sample", "model=served", "model.name=m", "model.api_key=sk-SECRETK", timeout=120
    )
    assert "#0 : " in swept.stdout + swept.stderr  # Hydra's multirun job line, with its overrides
    assert _leaks(tmp_path, bad.stdout, bad.stderr, swept.stdout, swept.stderr) == {}


JUDGE_SECRETS = ("JPWSECRET", "JQSECRET", "sk-JKEYSECRET")


def _command(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JUDGE_API_KEY", "OPENAI_API_KEY")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "-m", "stepeval.cli", *args], capture_output=True, text=True, timeout=600, env=env)


def _found(root: Path, outputs: list[str], planted: tuple[str, ...]) -> dict[str, list[str]]:
    texts = {f"output {i}": text for i, text in enumerate(outputs)}
    texts.update({str(p): p.read_bytes().decode("utf-8", errors="replace") for p in root.rglob("*") if p.is_file()})
    return {name: [s for s in planted if s in text] for name, text in texts.items() if any(s in text for s in planted)}


@pytest.mark.slow
def test_a_credentialed_judge_url_reaches_no_byte_of_run_report_leaderboard_compare_or_validate_judge(tmp_path):
    """The judge URL carries a password and a query key: the judge gets both, no file or line shows either
    (manifest, view.json, summary.json, table.md, records, report.html, leaderboard, compare, validation)."""
    from tests import judge_fake

    basic = base64.b64encode(b"judge:JPWSECRET").decode()
    planted = (*JUDGE_SECRETS, basic)
    results, out = tmp_path / "results", tmp_path / "out"
    out.mkdir()
    with FakeServer() as server:
        server.fallback = judge_fake.judge
        host = server.url.removeprefix("http://")
        url = f"http://judge:JPWSECRET@{host}/v1?api_key=JQSECRET&region=eu"
        judged = ["judge=openai_compatible", f"judge.base_url='{url}'", "judge.model=fake-judge", "judge.reads=text"]
        common = ["dataset=sample", "model=canned", "asr=none", "limit=2", "judge.metrics=[factuality.v1,relevance.v1]"]
        done = [_command("run", *common, *judged, f"results_dir={results}", "progress=false")]
        assert done[0].returncode == 0, done[0].stderr[-3000:]
        run = next(p for p in results.iterdir() if p.is_dir())
        done.append(_command("report", str(run)))
        done.append(_command("leaderboard", str(run), "--out", str(out / "leaderboard")))
        gate = ["--baseline", str(run), "--candidate", str(run), "--summary-out", str(out / "compare.md")]
        done.append(_command("compare", *gate))
        validate = ["validate-judge", str(run), "judge=openai_compatible", f"judge.base_url={url}", "judge.model=fake-judge"]
        done.append(_command(*validate, "judge.reads=text", "--limit", "2", "--no-repeat", "--controls", "shuffle", "truncate"))
        refused = _command("validate-judge", str(run), url)  # the URL where an override belongs: an argument error
        both = _command("run", *common, *judged, "judge.api_key=sk-JKEYSECRET", f"results_dir={tmp_path / 'r2'}")
        sent = [r for r in server.requests if r.method == "POST"]
    assert [d.returncode for d in done[1:4]] == [0, 0, 0], [d.stderr[-2000:] for d in done[1:4]]
    assert done[4].returncode in (0, 1, 3), done[4].stderr[-3000:]  # validated (pass, fail, inconclusive), not an error
    assert refused.returncode == 2 and "expected judge=" in refused.stderr
    assert "http://judge:<redacted>@" in refused.stderr
    assert both.returncode != 0 and "carries credentials" in both.stderr and "judge.api_key is set too" in both.stderr
    # the secrets were really used: the query key on every judge call, the password as Basic auth
    assert sent and {r.query for r in sent} == {"api_key=JQSECRET&region=eu"}
    assert {r.headers.get("Authorization") for r in sent} == {f"Basic {basic}"}
    reports = list(run.glob("views/*/report.html"))  # a view's report sits in the view's folder
    assert len(reports) == 1 and any((out / "leaderboard").iterdir()) and (out / "compare.md").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["judge"]["endpoints"]["text"]["base_url"] == f"http://judge:<redacted>@{host}/v1?api_key=<redacted>&region=eu"
    outputs = [text for d in [*done, refused, both] for text in (d.stdout, d.stderr)]
    assert _found(tmp_path, outputs, planted) == {}
