"""A replica that refuses connections is marked down: no turn goes to it until a probe finds it serving again, at its
old address or, after ``move_endpoint`` (a SLURM job requeued on another node), at its new one. Real HTTP servers
on 127.0.0.1; the dead replica is a port nothing listens on."""

from __future__ import annotations

import asyncio
import socket

from stepeval.client import endpoints as endpoints_mod
from stepeval.client.endpoints import Endpoint, move_endpoint
from stepeval.client.wire import WireClient, WireSettings
from stepeval.types import Message, TurnContext
from tests.http_fake import FakeServer, Request, Scripted
from tests.openai_audio import completion, tone

USER = [Message("user", audio=tone(0.2, 16000, 300.0), sample_rate=16000)]


def serving(name: str):
    def reply(request: Request) -> Scripted:
        if request.path.endswith("/models"):
            return Scripted(json={"object": "list", "data": [{"id": "m", "object": "model"}]})
        return Scripted(json=completion(content=name))

    return reply


def dead_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def wire(*urls: str) -> WireClient:
    eps = [Endpoint(i, url, None, 2, 5.0) for i, url in enumerate(urls)]
    eps[0].name = "m replica 0"
    return WireClient(eps, WireSettings(wire_model="m", max_retries=3, backoff_s=0.01, timeout_s=5.0))


def test_a_refusing_replica_gets_no_turn_until_it_serves_again_where_it_moved(monkeypatch):
    monkeypatch.setattr(endpoints_mod, "PROBE_INTERVAL_S", 0.05)
    dead = dead_url()
    with FakeServer() as alive, FakeServer() as moved_to:
        alive.fallback, moved_to.fallback = serving("alive"), serving("moved")
        client = wire(dead, alive.url + "/v1")

        async def go():
            try:
                first = [await client.respond(USER, TurnContext(f"c{i}", 0, 0)) for i in range(8)]
                assert client.pool.endpoints[0].down
                move_endpoint(dead, moved_to.url + "/v1")
                for _ in range(100):  # the probe finds it serving at its new address
                    if not client.pool.endpoints[0].down:
                        break
                    await asyncio.sleep(0.05)
                later = [await client.respond(USER, TurnContext(f"d{i}", 0, 0)) for i in range(4)]
                return first, later
            finally:
                await client.aclose()

        first, later = asyncio.run(go())
    failed_on_dead = [r for reply in first for r in reply.extra["retries"] if r["endpoint"] == 0]
    assert len(failed_on_dead) <= 1  # the one attempt that found it dead; nothing after
    assert all(reply.text == "alive" for reply in first)
    assert {reply.text for reply in later} == {"alive", "moved"}  # back in the rotation, at its new address
    assert {r.extra["served_by"] for r in later if r.text == "moved"} == {f"m replica 0 at {moved_to.url}/v1"}
    assert {r.extra["served_by"] for r in first} == {f"endpoint 1 at {alive.url}/v1"}


def test_when_every_replica_is_down_turns_still_go_out_and_fail_with_the_reason():
    client = wire(dead_url(), dead_url())

    async def go():
        try:
            return await client.respond(USER, TurnContext("c", 0, 0))
        except Exception as err:  # noqa: BLE001 - the failure is what is checked
            return err
        finally:
            await client.aclose()

    err = asyncio.run(go())
    assert "connection failed" in str(err) and "after 4 attempt(s)" in str(err)
