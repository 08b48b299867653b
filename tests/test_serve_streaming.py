"""``stepeval serve`` streaming (``stream: true``) to the harness's wire client over real HTTP on 127.0.0.1:
a backend that generates incrementally (parrot's ``respond_stream``) streams as it goes, others send the whole
reply as chunks; either way the stored reply is the non-streamed one, byte for byte. Tolerances as in
tests/test_latency.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stepeval.backends.control import Canned, Parrot
from stepeval.backends.server import build_app, serving
from stepeval.client.endpoints import Endpoint
from stepeval.client.fast_http import FastWireClient
from stepeval.client.responder import InProcess
from stepeval.client.wire import WireClient, WireSettings
from stepeval.stages.replay import ReplaySettings, ReplayStage
from stepeval.store import RunStore
from tests.test_latency import EARLY, TOL, _run, close, conversations


def replay(tmp_path, responder, name: str):
    with RunStore(tmp_path / name) as store:
        stage = ReplayStage(
            responder, store, ReplaySettings("fp", latency={"hardware": "test box", "mode": "load"}), conversations(tmp_path)
        )
        asyncio.run(_run(stage, store))
        record = store.log("replay").load()[("c0", 0)]
    assert record["status"] == "ok", record["error"]
    return record, (tmp_path / name / record["audio"]).read_bytes()


def wire(url: str, fast: bool = True, **settings) -> WireClient:
    settings = {"wire_model": "parrot", "max_retries": 0, "timeout_s": 20.0, **settings}
    return (FastWireClient if fast else WireClient)([Endpoint(0, url, None, 2, 20.0)], WireSettings(**settings))


@pytest.mark.parametrize("fmt", ["wav", "pcm16"])
@pytest.mark.parametrize("fast", [True, False], ids=["aiohttp", "sdk"])
def test_parrot_streams_as_it_generates_and_is_stored_as_when_not_streamed(tmp_path, fmt, fast):
    delay, spacing, piece = 0.3, 0.08, 0.1  # the user clip is 0.3 s: three pieces
    with serving(build_app(Parrot(delay_s=delay, chunk_s=piece, chunk_delay_s=spacing), "parrot", max_concurrent=2)) as url:
        whole, whole_bytes = replay(tmp_path, wire(url, fast, audio_format=fmt), "whole")
        streamed, streamed_bytes = replay(tmp_path, wire(url, fast, audio_format=fmt, stream=True), "streamed")
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert whole_bytes == streamed_bytes and whole["audio_sha256"] == streamed["audio_sha256"]
    timings = streamed["timings"]
    assert close(timings["first_audio_s"], delay)
    assert abs(timings["chunk_gap_s"] - spacing) <= TOL and timings["audio_chunks"] >= 3  # a gap jitters both ways
    assert close(timings["total_s"], delay + 2 * spacing)  # three pieces (pcm16: and the resampler's tail at once)
    assert close(whole["timings"]["total_s"], delay)  # not streamed: one piece after another, no spacing
    assert streamed["latency"]["hardware"] == "test box" and streamed["latency"]["hardware_source"] == "declared"
    assert health["streaming"]["incremental"] is True and health["streaming"]["timings"]["first_audio"] == "as generated"


def test_a_backend_that_does_not_stream_sends_the_whole_reply_as_chunks_and_says_so(tmp_path):
    with serving(build_app(Canned(delay_s=0.2), "canned")) as url:
        whole, whole_bytes = replay(tmp_path, wire(url), "whole")
        streamed, streamed_bytes = replay(tmp_path, wire(url, stream=True), "streamed")
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert whole_bytes == streamed_bytes and whole["text"] == streamed["text"] and whole["text"]
    timings = streamed["timings"]
    assert timings["first_audio_s"] >= 0.2 - EARLY and timings["total_s"] - timings["first_audio_s"] < TOL
    assert (
        health["streaming"]["incremental"] is False
        and "does not generate incrementally" in health["streaming"]["timings"]["first_audio"]
    )
    assert streamed["latency"]["hardware_source"] == "declared"


def test_the_server_reports_its_hardware_when_the_run_declares_none(tmp_path):
    with serving(build_app(Parrot(), "parrot")) as url:
        with RunStore(tmp_path / "run") as store:
            settings = ReplaySettings("fp", latency={"hardware": None, "mode": "load"})
            asyncio.run(_run(ReplayStage(wire(url), store, settings, conversations(tmp_path)), store))
            record = store.log("replay").load()[("c0", 0)]
    assert record["latency"]["hardware_source"] == "server" and "CPUs" in record["latency"]["hardware"]


def test_in_process_backends_time_themselves_and_say_what_has_no_meaning(tmp_path):
    record, _ = replay(tmp_path, InProcess(Parrot(delay_s=0.2), workers=1), "inproc")
    timings, missing = record["timings"], record["timings_missing"]
    assert close(timings["total_s"], 0.2) and timings["first_audio_s"] == timings["total_s"]
    assert "first_byte_s" not in timings and missing["first_byte_s"] == "in-process backend: no wire"
    assert record["latency"]["clock"] == "in-process" and record["latency"]["concurrency"] == 1
