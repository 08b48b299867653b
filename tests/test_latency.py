"""Per-turn latency: known timings injected by a server of our own (real HTTP on 127.0.0.1) are recovered
on the harness's clock, the queue wait is kept apart, and streamed replies are stored as non-streamed ones.

The tolerance, stated: a timing is never earlier than the server's injected send time minus 5 ms (the
clock starts when the request is written, before the server reads it) and at most ``TOL`` later (the
loopback, the event loop, and two CPU cores shared with other work)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stepeval.client.endpoints import Endpoint
from stepeval.client.fast_http import FastWireClient
from stepeval.client.wire import WireClient, WireSettings
from stepeval.records import ReplayRecord
from stepeval.stages.base import run_stage_async
from stepeval.stages.replay import ReplaySettings, ReplayStage
from stepeval.store import RunStore
from stepeval.types import Conversation, UserTurn
from tests.openai_audio import tone
from tests.timed_server import RATE, TimedServer, Timeline

TOL = 0.15
EARLY = 0.005


def wire(server: TimedServer, fast: bool = True, limit: int = 4, **settings) -> WireClient:
    settings = {"wire_model": "timed", "max_retries": 0, "timeout_s": 20.0, "audio_format": server.fmt, **settings}
    endpoint = Endpoint(0, server.url, "sk-test", limit, 20.0)
    return (FastWireClient if fast else WireClient)([endpoint], WireSettings(**settings))


def conversations(tmp_path: Path, n: int = 1) -> list[Conversation]:
    out = []
    for c in range(n):
        path = tmp_path / f"user{c}.wav"
        sf.write(path, tone(0.3, 16000, 250.0 + 40 * c), 16000)
        out.append(Conversation(f"c{c}", "qa", "en", (UserTurn(0, path, "what time is it"),)))
    return out


def replay(tmp_path: Path, client: WireClient, n: int = 1, name: str = "run", **latency) -> tuple[dict, Path]:
    settings = ReplaySettings("fp", concurrency=n, latency=latency or {"hardware": None, "mode": "load"})
    with RunStore(tmp_path / name) as store:
        stage = ReplayStage(client, store, settings, conversations(tmp_path, n))
        asyncio.run(_run(stage, store))
        records = store.log("replay").load()
    return records, tmp_path / name


async def _run(stage: ReplayStage, store: RunStore) -> None:
    try:
        await run_stage_async(stage, store, progress=False)
    finally:
        await stage.responder.aclose()


def close(measured: float, injected: float) -> bool:
    return injected - EARLY <= measured <= injected + TOL


@pytest.mark.parametrize("fast", [True, False], ids=["aiohttp", "sdk"])
def test_streamed_timings_are_recovered_on_the_harness_clock(tmp_path, fast):
    t = Timeline()
    with TimedServer(t) as server:
        records, _ = replay(tmp_path, wire(server, fast=fast, stream=True))
    record = records[("c0", 0)]
    timings = record["timings"]
    assert record["status"] == "ok", record["error"]
    assert close(timings["first_text_s"], t.first_text)
    assert close(timings["first_audio_s"], t.first_audio)
    assert close(timings["total_s"], t.end)
    assert close(timings["chunk_gap_s"], t.gap) and timings["audio_chunks"] == t.chunks
    assert timings["leading_silence_s"] == pytest.approx(t.lead, abs=1e-6)
    assert close(timings["first_speech_s"], t.first_audio + t.lead)
    assert timings["audio_s"] == pytest.approx(t.lead + t.speech, abs=1e-3)
    assert timings["rtf"] == pytest.approx(timings["total_s"] / timings["audio_s"], rel=1e-3)
    assert close(timings["first_byte_s"], t.first_byte)  # both paths time the connection itself
    assert timings["queue_s"] >= 0 and not record["timings_missing"]
    assert record["latency"]["streamed"] is True and record["latency"]["concurrency"] == 4
    assert record["latency"]["path"] == ("fast" if fast else "sdk")
    assert "sk-test" not in json.dumps(record)


def test_non_streamed_timings_and_what_is_missing_says_why(tmp_path):
    t = Timeline()
    with TimedServer(t) as server:
        records, _ = replay(tmp_path, wire(server, fast=True))
        sdk, _ = replay(tmp_path, wire(server, fast=False), name="sdk")
    timings, missing = records[("c0", 0)]["timings"], records[("c0", 0)]["timings_missing"]
    assert close(timings["first_byte_s"], t.first_byte) and close(timings["total_s"], t.end)
    # not streamed: the first audio is the whole reply, so speech starts after it plus the leading silence
    assert timings["first_audio_s"] == timings["total_s"]
    assert timings["first_speech_s"] == pytest.approx(timings["total_s"] + t.lead, abs=1e-3)
    assert "chunk_gap_s" not in timings and not missing
    sdk_timings, sdk_missing = sdk[("c0", 0)]["timings"], sdk[("c0", 0)]["timings_missing"]
    assert close(sdk_timings["first_byte_s"], t.first_byte) and close(sdk_timings["total_s"], t.end) and not sdk_missing
    assert all(v != 0 for k, v in {**timings, **sdk_timings}.items() if k.endswith("_s") and k != "queue_s")


def test_queue_wait_is_recorded_apart_and_not_in_the_timings(tmp_path):
    t = Timeline(first_byte=0.1, first_text=0.2, first_audio=0.3, gap=0.1, chunks=3)
    with TimedServer(t) as server:  # one slot, two conversations: the second waits for the first to finish
        records, _ = replay(tmp_path, wire(server, limit=1, stream=True), n=2)
    first, second = sorted((records[(c, 0)] for c in ("c0", "c1")), key=lambda r: r["timings"]["queue_s"])
    assert first["timings"]["queue_s"] < 0.1
    assert second["timings"]["queue_s"] >= t.end - EARLY  # waited for the whole first reply
    for record in (first, second):
        assert close(record["timings"]["first_audio_s"], t.first_audio) and close(record["timings"]["total_s"], t.end)
        assert record["timings"]["wall_s"] >= record["timings"]["queue_s"] + record["timings"]["total_s"] - EARLY
        assert record["latency"]["in_flight"] == 1


@pytest.mark.parametrize("fmt", ["pcm16", "wav"])
@pytest.mark.parametrize("fast", [True, False], ids=["aiohttp", "sdk"])
def test_streamed_and_non_streamed_replies_are_stored_identically(tmp_path, fmt, fast):
    t = Timeline(first_byte=0.0, first_text=0.0, first_audio=0.0, gap=0.0, chunks=7)
    with TimedServer(t, fmt=fmt) as server:
        whole, whole_dir = replay(tmp_path, wire(server, fast=fast), name="whole")
        streamed, streamed_dir = replay(tmp_path, wire(server, fast=fast, stream=True), name="streamed")
    a, b = whole[("c0", 0)], streamed[("c0", 0)]
    assert (a["status"], b["status"]) == ("ok", "ok")
    assert (whole_dir / a["audio"]).read_bytes() == (streamed_dir / b["audio"]).read_bytes()
    same = ("text", "transcript", "audio_sha256", "sample_rate", "duration_s", "fingerprint")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert a["text"] == t.text and a["transcript"] == t.transcript and a["sample_rate"] == RATE


def test_timings_do_not_enter_the_fingerprint_and_old_records_read(tmp_path):
    slow, quick = Timeline(first_byte=0.3, first_audio=0.4, first_text=0.35), Timeline(0.0, 0.0, 0.0, 0.0)
    with TimedServer(slow) as a:
        one, _ = replay(tmp_path, wire(a, stream=True), name="one")
    with TimedServer(quick) as b:
        two, _ = replay(tmp_path, wire(b, stream=True), name="two")
    assert one[("c0", 0)]["fingerprint"] == two[("c0", 0)]["fingerprint"]
    assert one[("c0", 0)]["timings"]["first_audio_s"] > two[("c0", 0)]["timings"]["first_audio_s"]
    old = {k: v for k, v in one[("c0", 0)].items() if k not in ("timings", "timings_missing", "latency")}
    record = ReplayRecord.from_json(old)
    assert record.timings == {} and record.timings_missing == {} and record.latency == {}


def test_a_reply_without_speech_or_audio_has_its_timings_missing_with_the_reason():
    from stepeval.client import timing

    timings, missing = {"total_s": 0.4}, {}
    timing.finish(timings, missing, np.zeros(RATE, np.float32), RATE, has_text=True, streamed=False)
    assert "first_speech_s" not in timings and "no speech" in missing["first_speech_s"]
    assert timings["rtf"] == pytest.approx(0.4) and timings["first_text_s"] == 0.4
    timings, missing = {"total_s": 0.4}, {}
    timing.finish(timings, missing, None, None, has_text=True, streamed=True)
    assert {"first_audio_s", "rtf", "first_speech_s"} <= set(missing) and "no audio" in missing["rtf"]
    assert not any(isinstance(v, float) and math.isclose(v, 0.0) for v in timings.values())


def test_serial_mode_warms_each_endpoint_up_then_answers_one_turn_at_a_time(tmp_path):
    from stepeval.client.build import latency_protocol, wire_client

    t = Timeline(first_byte=0.0, first_text=0.05, first_audio=0.1, gap=0.01, chunks=2)
    with TimedServer(t) as server:
        model = {"name": "timed", "base_url": server.url, "stream": True, "audio_format": "pcm16", "concurrency": 8}
        model.update({"latency_mode": "serial", "warmup_turns": 2, "hardware": "box"})
        client = wire_client(model, 8)
        assert [e.limit for e in client.pool.endpoints] == [1]
        records, _ = replay(tmp_path, client, n=3, **latency_protocol(model))
        served = len(server.served)
    assert served == 2 + 3  # two untimed warm-up requests, then the three turns
    for record in records.values():
        assert record["latency"]["mode"] == "serial" and record["latency"]["warmup_turns"] == 2
        assert record["latency"]["in_flight"] == 1 and record["latency"]["hardware"] == "box"
        assert close(record["timings"]["first_audio_s"], t.first_audio)
    first = min(records.values(), key=lambda r: r["timings"]["queue_s"])
    assert first["timings"]["queue_s"] < 2 * t.end  # the warm-up is not counted as the first turn's queue wait
    with pytest.raises(ValueError, match="model.latency_mode='burst'"):
        wire_client({**model, "latency_mode": "burst"}, 8)
