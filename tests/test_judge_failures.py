"""A failure is a failure: cut replies, refused keys and a judge that is down, against real HTTP servers
on 127.0.0.1 speaking OpenAI chat completions (JSON and SSE) byte for byte. A cut reply is never a
verdict; a stopped judge sends nothing more and leaves the rest to the next run; a one-slot
llama-cpp-python that interrupts its running stream still judges everything with the defaults."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from stepeval.config import conf_dir, register_schemas
from stepeval.judging import rubric
from stepeval.judging.configured import judge_client
from stepeval.judging.llm_judge import JudgeClient, Settings, Turn, check_credentials, input_sha256, readable, text_messages
from stepeval.records import JudgeRecord
from stepeval.stages import judge as judge_stage
from stepeval.stages.base import run_stage_async
from stepeval.store import RecordLog, RunStore, fingerprint
from stepeval.transport import RetryPolicy
from tests import judge_fake
from tests.http_fake import FakeServer, Scripted
from tests.llama_cpp_fake import LlamaCppPythonServer

CHAT = judge_fake.CHAT
FACT = rubric.load(rubric.PACKAGED, "factuality.v1")
FAST = RetryPolicy(max_retries=2, base_s=0.01, max_s=0.02)
VERDICT = '{"rationale": "r", "verdict": "yes"}'


def sse(*events: dict | str) -> list[bytes]:
    """Server-sent events as an OpenAI-compatible server writes them."""
    return [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "fake-judge",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


ONE_TOKEN = [chunk({"role": "assistant", "content": ""}), chunk({"content": '{"'})]
CUT_REPLIES = {
    "one token, then [DONE]": Scripted(lines=sse(*ONE_TOKEN, "[DONE]"), content_type="text/event-stream"),
    "one token, then the stream ends": Scripted(lines=sse(*ONE_TOKEN), content_type="text/event-stream"),
    "one token, then the connection closes": Scripted(lines=sse(*ONE_TOKEN), content_type="text/event-stream", cut=True),
    "whole reply with finish_reason null": Scripted(json=judge_fake.completion('{"rationale": "r", "ver', finish_reason=None)),
    "whole reply, connection closed mid-body": Scripted(json=judge_fake.completion(VERDICT), cut=True),
}
WHOLE_STREAM = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": VERDICT}), chunk({}, finish="stop"), "[DONE]")


def judge_all(c: JudgeClient, n: int, concurrency: int) -> list:
    """``n`` items through the client, ``concurrency`` at a time, each verdict or the exception it raised."""

    async def go():
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int):
            async with semaphore:
                return await c.judge(text_messages(FACT, [Turn("user", f"question {i}")], "The library opens at nine."), FACT)

        try:
            return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        finally:
            await c.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("name", list(CUT_REPLIES))
def test_a_cut_reply_is_retried_and_then_a_failure_never_a_verdict(name: str):
    with FakeServer() as server:
        server.fallback = judge_fake.serving(lambda request: CUT_REPLIES[name], "fake-judge")
        (failed,) = judge_all(JudgeClient("fake-judge", server.url + "/v1", None, Settings(), FAST), 1, 1)
    assert (failed.value, failed.status) == (None, "failed")
    assert "reply cut off" in failed.missing and "after 3 attempt(s)" in failed.missing
    assert "grade" not in failed.samples[0] and "raw" not in failed.samples[0]  # nothing of the cut reply is kept as a grade
    assert len(server.requests_to(CHAT)) == FAST.max_retries + 1


def test_a_cut_reply_then_a_whole_one_is_a_verdict():
    with FakeServer() as server:
        server.script(CHAT, CUT_REPLIES["one token, then [DONE]"])
        server.script(CHAT, Scripted(lines=WHOLE_STREAM, content_type="text/event-stream"))
        (verdict,) = judge_all(JudgeClient("fake-judge", server.url + "/v1", None, Settings(), FAST), 1, 1)
    assert (verdict.value, verdict.status) == (1.0, "ok")
    assert "ended without a finish reason" in verdict.samples[0]["retried_after"][0]


@pytest.mark.parametrize("interrupt_requests", [True, False])
def test_single_slot_llama_cpp_python_works_with_the_default_settings(caplog, interrupt_requests: bool):
    """Its default interrupt_requests ends the running stream as soon as another request waits; the
    judge's defaults (4 in flight, one waiting) once cut 87 of 88 replies and stored them as grades."""
    with LlamaCppPythonServer(tokens=20, interrupt_requests=interrupt_requests) as server:
        c = JudgeClient("fake-judge", server.url + "/v1", None, Settings(), RetryPolicy())
        verdicts = judge_all(c, 8, concurrency=4)  # judge=openai_compatible's concurrency
    assert [(v.value, v.status) for v in verdicts] == [(1.0, "ok")] * 8
    assert server.stats["finished"] == 8
    adapted = [r for r in caplog.records if "interrupts the running reply" in r.getMessage()]
    if interrupt_requests:
        assert server.stats["interrupted"] >= 1  # it did cut a stream: the case is real
        assert len(adapted) == 1 and c.gate.max_in_flight == 1  # and the judge went one at a time, saying so once
        cut = [v for v in verdicts if v.samples[0].get("retried_after")]
        assert cut and all("reply cut off" in v.samples[0]["retried_after"][0] for v in cut)
    else:
        assert server.stats["interrupted"] == 0 and not adapted and c.gate.max_in_flight is None  # one generates, one waits
        assert all(v.samples[0]["attempts"] == 1 for v in verdicts)


# --- the judge stage: what is recorded, and what a rerun asks ----------------------------------------


def units(c: JudgeClient, n: int) -> list[judge_stage.JudgeUnit]:
    out = []
    for i in range(n):
        messages = text_messages(FACT, [Turn("user", f"question {i}")], "The library opens at nine.")
        digest = input_sha256(messages)
        fp = fingerprint(c.identity(), FACT.sha256, digest)
        base = {
            "conversation_id": f"conv{i:02d}",
            "turn": 0,
            "stage": judge_stage.log_name(FACT.metric),
            "category": "knowledge",
            "judge": {**c.identity(), "rubric": FACT.name, "rubric_sha256": FACT.sha256},
            "input_sha256": digest,
            "input": readable(messages),
            "fingerprint": fp,
        }
        out.append(judge_stage.JudgeUnit({(f"conv{i:02d}", 0): fp}, base, messages))
    return out


def judge_stage_run(root: Path, url: str, n: int, concurrency: int = 4, policy: RetryPolicy = FAST, **settings) -> dict:
    """The judge stage over ``n`` items at ``url``; its records by conversation."""
    c = JudgeClient("fake-judge", url + "/v1", None, Settings(**settings), policy)

    async def go():
        stage = judge_stage.JudgeStage(FACT, c, units(c, n), concurrency)
        try:
            with RunStore(root) as store:
                return await run_stage_async(stage, store, progress=False)
        finally:
            await c.aclose()

    result = asyncio.run(go())
    return {key[0]: record for key, record in result.current.items()}


def test_a_judge_that_cuts_every_stream_stores_no_verdict_and_a_rerun_asks_exactly_those(tmp_path: Path):
    cut = CUT_REPLIES["one token, then [DONE]"]
    whole = Scripted(lines=WHOLE_STREAM, content_type="text/event-stream")
    with FakeServer() as server:  # items 0-3 answered whole, every other stream cut after one token

        def answer(request):
            text = judge_fake.user_text(request.json)
            return whole if any(f'"question {i}"' in text for i in range(4)) else cut

        server.fallback = judge_fake.serving(answer, "fake-judge")
        first = judge_stage_run(tmp_path, server.url, 10)
        assert sorted(r.status for r in first.values()) == ["failed"] * 6 + ["ok"] * 4
        assert all(r.metrics["factuality"] is None and "reply cut off" in r.error for r in first.values() if r.status == "failed")
        failed = {conv for conv, r in first.items() if r.status == "failed"}
        before = len(server.requests_to(CHAT))
        server.fallback = judge_fake.judge  # the judge is fixed: a rerun asks exactly the failed items
        again = judge_stage_run(tmp_path, server.url, 10)
        rerun = server.requests_to(CHAT)[before:]
    asked = {judge_fake.user_text(r.json).split('"question ')[1].split('"')[0] for r in rerun}
    assert {f"conv{int(i):02d}" for i in asked} == failed and len(rerun) == len(failed)
    assert all(r.status == "ok" for r in again.values())


def test_verdicts_stored_from_cut_replies_by_earlier_versions_are_asked_again(tmp_path: Path):
    with FakeServer() as server:
        server.fallback = judge_fake.judge
        c = JudgeClient("fake-judge", server.url + "/v1", None, Settings(), FAST)
        planned = units(c, 2)
        # what an earlier version stored: item 0 from a stream cut after one token (finish_reason null), taken for an
        # unparseable grade; item 1 a whole reply that was really unparseable (finish_reason "stop")
        for unit, finish, raw in ((planned[0], None, '{"'), (planned[1], "stop", "I cannot grade this.")):
            sample = {"index": 0, "seed": 0, "raw": raw, "finish_reason": finish, "grade": None, "value": None}
            sample.update({"parse_error": "not a JSON object", "attempts": 1, "response_format": "text"})
            record = JudgeRecord(
                **unit.base,
                status="unparseable",
                metrics={"factuality": None},
                missing={"factuality": "unparseable judge reply"},
                samples=[sample],
            )
            log = RecordLog(tmp_path / "records" / "judge-factuality.jsonl")
            log.append(record.to_json())
            log.close()
        records = judge_stage_run(tmp_path, server.url, 2)
        asked = [judge_fake.user_text(r.json) for r in server.requests_to(CHAT)]
    assert len(asked) == 1 and '"question 0"' in asked[0]
    assert (records["conv00"].status, records["conv00"].metrics["factuality"]) == ("ok", 1.0)
    assert records["conv01"].status == "unparseable"  # a real unparseable grade is kept


def test_a_key_revoked_after_n_items_gets_at_most_n_plus_the_requests_in_flight(tmp_path: Path, caplog):
    n, concurrency = 5, 4
    seen = {"chat": 0}

    def answer(request):
        seen["chat"] += 1
        if seen["chat"] > n:
            return Scripted(status=401, json={"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
        reply = judge_fake.judge(request)
        reply.delay = 0.2  # several requests in flight at any time
        return reply

    with FakeServer() as server:
        server.fallback = judge_fake.serving(answer, "fake-judge")
        records = judge_stage_run(tmp_path, server.url, 30, concurrency=concurrency)
        sent = len(server.requests_to(CHAT))
    assert n < sent <= n + concurrency  # was every item: "78 more requests in 5 s"
    statuses = [r.status for r in records.values()]
    assert statuses.count("ok") <= n and statuses.count("failed") >= 1
    assert statuses.count("ok") + statuses.count("failed") + statuses.count("skipped") == 30
    refused = [r for r in records.values() if r.status == "failed"]
    assert all("HTTP 401" in r.error for r in refused)
    skipped = [r for r in records.values() if r.status == "skipped"]
    assert skipped and all(r.error.startswith("not judged: the judge stopped: judge endpoint http://127.0.0.1") for r in skipped)
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("judge stopped:")]
    assert len(stops) == 1 and "HTTP 401" in stops[0] and f"{server.url}/v1" in stops[0]  # one line naming the endpoint


def test_a_judge_that_goes_down_stops_the_stage_with_one_line_not_a_backoff_per_item(tmp_path: Path, caplog):
    with socket.socket() as sock:  # a port nothing listens on: every connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the default backoff (1 s doubling to 60 s, 6 retries): ~2 min per item without the circuit
    records = judge_stage_run(tmp_path, f"http://127.0.0.1:{port}", 40, concurrency=4, policy=RetryPolicy())
    statuses = [r.status for r in records.values()]
    assert statuses.count("failed") == 1 and statuses.count("skipped") == 39  # the one that tripped it, and the rest
    (tripped,) = [r for r in records.values() if r.status == "failed"]
    assert "5 requests in a row could not connect (ConnectError" in tripped.error and "the judge is down" in tripped.error
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("judge stopped:")]
    assert len(stops) == 1 and f"127.0.0.1:{port}/v1" in stops[0]


def test_the_judge_stage_with_judge_openai_compatible_defaults_against_llama_cpp_python(tmp_path: Path):
    """The whole judge config as shipped (concurrency 4, one waiting, default retries), no server setting."""
    with LlamaCppPythonServer(tokens=20) as server:
        cfg = judge_config(f"judge.base_url={server.url}/v1", "judge.model=fake-judge")
        c = judge_client(cfg)

        async def go():
            stage = judge_stage.JudgeStage(FACT, c, units(c, 12), cfg.concurrency)
            try:
                with RunStore(tmp_path) as store:
                    return await run_stage_async(stage, store, progress=False)
            finally:
                await c.aclose()

        result = asyncio.run(go())
    assert cfg.concurrency == 4 and cfg.max_waiting == 1  # the defaults that used to get 87 of 88 replies cut
    assert server.stats["interrupted"] >= 1
    assert [(r.status, r.metrics["factuality"]) for r in result.current.values()] == [("ok", 1.0)] * 12


# --- settings: which ones are the judge's identity, and credentials -----------------------------------


def judge_config(*overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["judge=openai_compatible", "judge.model=m", *overrides])
    return cfg.judge


def test_concurrency_and_failure_settings_are_not_the_judge_identity():
    base = ["judge.base_url=http://127.0.0.1:9/v1"]
    one = judge_config(*base, "judge.concurrency=1", "judge.max_waiting=null", "judge.circuit_failures=2")
    many = judge_config(*base, "judge.concurrency=32")
    assert judge_client(one).identity() == judge_client(many).identity()  # the same records are reused
    assert judge_stage.describe(one) == judge_stage.describe(many)  # the same view
    assert judge_client(judge_config(*base, "judge.max_tokens=64")).identity() != judge_client(many).identity()


def test_a_url_with_userinfo_and_a_configured_key_is_an_error_naming_both():
    url = "http://alice:PWSECRET1@127.0.0.1:9/v1?api_key=QSECRET2"
    with pytest.raises(ValueError) as err:
        check_credentials(url, "sk-KEYSECRET3")
    message = str(err.value)
    assert "judge.base_url=http://alice:<redacted>@127.0.0.1:9/v1?api_key=<redacted>" in message
    assert "judge.api_key is set too" in message
    assert not any(s in message for s in ("PWSECRET1", "QSECRET2", "KEYSECRET3"))
    check_credentials(url, None)  # the URL's credentials alone: fine
    check_credentials(url, "EMPTY")  # the local servers' placeholder is no key
    with pytest.raises(ValueError, match="carries credentials"):
        judge_stage.describe(judge_config(f"judge.base_url='{url}'", "judge.api_key=sk-KEYSECRET3"))


def test_the_manifest_and_notes_show_the_judge_url_without_its_credentials():
    url = "http://alice:PWSECRET1@127.0.0.1:9/v1?api_key=QSECRET2&region=eu"
    judge = judge_config(f"judge.base_url='{url}'", "judge.metrics=[factuality.v1]")
    described = json.dumps(judge_stage.describe(judge))
    assert "http://alice:<redacted>@127.0.0.1:9/v1?api_key=<redacted>&region=eu" in described
    assert "PWSECRET1" not in described and "QSECRET2" not in described


def test_the_circuit_setting_is_checked():
    with pytest.raises(ValueError, match="judge.circuit_failures must be >= 1"):
        Settings(circuit_failures=0)


@pytest.mark.slow
def test_a_run_against_a_judge_that_cuts_every_stream_exits_1_and_its_rerun_asks_exactly_those(tmp_path: Path):
    from tests.run_helpers import only_run, stepeval_run

    cut = CUT_REPLIES["one token, then [DONE]"]
    with FakeServer() as server:
        server.fallback = judge_fake.serving(lambda request: cut, "fake-judge")
        judged = [
            "dataset=sample",
            "model=canned",
            "asr=none",
            "limit=2",
            "judge=openai_compatible",
            f"judge.base_url={server.url}/v1",
            "judge.model=fake-judge",
            "judge.reads=text",
            "judge.metrics=[relevance.v1]",
            "judge.max_retries=1",
            "judge.backoff_base_s=0.01",
        ]
        first = stepeval_run(tmp_path, *judged)
        log = only_run(tmp_path) / "records" / "judge-relevance.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()]
        cut_requests = len(server.requests_to(CHAT))
        server.fallback = judge_fake.judge
        second = stepeval_run(tmp_path, *judged)
        rerun_requests = len(server.requests_to(CHAT)) - cut_requests
    assert first.returncode == 1, first.stderr[-3000:]
    assert "judge-relevance: 4 failed and 0 skipped of 4 records" in first.stderr + first.stdout
    assert [r["status"] for r in records] == ["failed"] * 4 and cut_requests == 8  # 4 items, 2 attempts each
    assert all("reply cut off" in r["error"] and r["metrics"]["relevance"] is None for r in records)
    assert second.returncode == 0, second.stderr[-3000:]
    assert rerun_requests == 4  # exactly the failed items
    again = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in again[4:]] == ["ok"] * 4
