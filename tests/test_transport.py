"""The shared transport: what each error means, Retry-After, the retry loop, URLs with credentials,
and the server-start gate. Real openai error objects built from real httpx responses."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import httpx
import openai
import pytest

from stepeval.transport import (
    AttemptError,
    Attempts,
    AttemptTimeout,
    EndpointURL,
    Kind,
    RetryPolicy,
    StartGate,
    TransportError,
    call_with_retries,
    classify,
    describe,
    retry_after,
)

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def status_error(status: int, body: object, headers: dict | None = None) -> openai.APIStatusError:
    """The exception the SDK raises for this response (via its own client's error factory)."""
    response = httpx.Response(status, json=body, headers=headers or {}, request=REQUEST)
    client = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")
    return client._make_status_error_from_response(response)


@pytest.mark.parametrize(
    "status, body, kind",
    [
        (400, {"error": {"message": "bad"}}, Kind.INVALID),
        (422, {"detail": "validation"}, Kind.INVALID),
        (401, {"error": {"message": "key"}}, Kind.FATAL),
        (403, {"error": {"message": "no"}}, Kind.FATAL),
        (404, {"error": {"message": "no such model"}}, Kind.FATAL),
        (408, {"error": {"message": "slow"}}, Kind.RETRY),
        (409, {"error": {"message": "conflict"}}, Kind.RETRY),
        (429, {"error": {"message": "rate"}}, Kind.RETRY),
        (500, {"error": {"message": "Internal Server Error"}}, Kind.RETRY),
        (503, {"error": {"message": "overloaded"}}, Kind.RETRY),
        (500, {"error": {"message": "json_schema is not supported"}}, Kind.INVALID),
        (500, {"error": {"message": "x", "type": "invalid_request_error"}}, Kind.INVALID),
    ],
)
def test_what_each_status_means(status, body, kind):
    assert classify(status_error(status, body)) is kind


def test_timeouts_and_connections_are_retried_and_described_with_the_endpoint():
    assert classify(openai.APITimeoutError(REQUEST)) is Kind.RETRY
    assert classify(AttemptTimeout("x")) is Kind.RETRY
    refused = openai.APIConnectionError(request=REQUEST)
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert describe(refused, "endpoint 0 (http://h/v1)") == (
        "endpoint 0 (http://h/v1): connection failed: ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert describe(openai.APITimeoutError(REQUEST), "e", timeout_s=2.5) == "e: timed out: no reply within timeout_s=2.5"
    error = status_error(429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})
    assert describe(AttemptError(error, "endpoint 1 (http://b/v1)"), "ignored") == (
        "endpoint 1 (http://b/v1): HTTP 429: Rate limit reached (rate_limit_exceeded)"
    )


def test_retry_after_forms():
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= retry_after({"retry-after": later}) <= 30
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None and retry_after(None) is None


def run_calls(outcomes: list, policy: RetryPolicy) -> tuple[object, Attempts, list[float]]:
    waits: list[float] = []
    attempts = Attempts()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def call():
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def go():
        return await call_with_retries(call, policy, "ep", attempts, sleep=sleep, rng=random.Random(1))

    try:
        result = asyncio.run(go())
    except TransportError as err:
        result = err
    return result, attempts, waits


def test_retry_loop_waits_what_the_server_says_else_backs_off_and_stops_on_a_bad_request():
    policy = RetryPolicy(max_retries=3, base_s=1.0, max_s=8.0, retry_after_max_s=5.0)
    told = status_error(429, {"error": {"message": "slow down"}}, {"Retry-After": "30"})
    result, attempts, waits = run_calls([told, status_error(503, {"error": {"message": "busy"}}), "ok"], policy)
    assert result == "ok" and attempts.count == 3
    assert waits[0] == 5.0  # the server's 30 s, capped at retry_after_max_s
    assert 1.0 <= waits[1] <= 2.0  # second retry: backoff cap 2 s, drawn from [1, 2]
    assert attempts.errors[0] == "ep: HTTP 429: slow down"
    result, attempts, waits = run_calls([status_error(400, {"error": {"message": "no"}}), "never"], policy)
    assert isinstance(result, TransportError) and result.kind is Kind.INVALID and result.status == 400
    assert attempts.count == 1 and waits == []
    result, attempts, _ = run_calls([status_error(502, {"error": {"message": "bad gateway"}})] * 4, policy)
    assert result.kind is Kind.RETRY and result.message == "ep: HTTP 502: bad gateway after 4 attempt(s)"


def test_the_same_bare_500_twice_is_taken_as_a_refusal_when_asked():
    bare = status_error(500, {"error": {"message": "Internal Server Error"}})
    policy = RetryPolicy(max_retries=6, base_s=0.0, max_s=0.0, same_5xx_limit=2)
    result, attempts, _ = run_calls([bare, bare, "never"], policy)
    assert result.kind is Kind.INVALID and attempts.count == 2 and "the same answer 2 times" in result.message
    other = status_error(500, {"error": {"message": "CUDA out of memory"}})
    result, attempts, _ = run_calls([bare, other, "ok"], policy)  # different answers: still transient
    assert result == "ok" and attempts.count == 3


def test_endpoint_url_splits_credentials_off():
    url = EndpointURL.parse("http://user:p%40ss@gw.example:8443/v1/?api_key=K123&region=eu")
    assert url.base == "http://gw.example:8443/v1"
    assert url.query == {"api_key": "K123", "region": "eu"}
    assert url.auth == ("user", "p@ss")
    assert url.display == "http://user:<redacted>@gw.example:8443/v1/?api_key=<redacted>&region=eu"
    assert url.join("models") == "http://gw.example:8443/v1/models"
    with pytest.raises(ValueError, match=r"judge.base_url='gw:8000/v1': need an http\(s\) URL"):
        EndpointURL.parse("gw:8000/v1", "judge.base_url")


def test_start_gate_lets_one_wait_while_others_run():
    async def go():
        gate = StartGate(max_waiting=1)
        first = await gate.enter()
        second = asyncio.ensure_future(gate.enter())
        await asyncio.sleep(0.01)
        assert not second.done()  # one is already waiting for the server
        first.started()
        ticket = await asyncio.wait_for(second, 1)
        assert (gate.waiting, gate.running) == (1, 1)
        ticket.started()
        first.leave()
        ticket.leave()
        assert (gate.waiting, gate.running, gate.peak_running) == (0, 0, 2)
        gate.disable()
        tickets = [await gate.enter() for _ in range(5)]  # off: no limit
        assert gate.waiting == 5 and len(tickets) == 5

    asyncio.run(go())
