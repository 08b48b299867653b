"""The wire client against real HTTP servers on 127.0.0.1 speaking the OpenAI audio chat format."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stepeval import audio as audio_io
from stepeval.client.endpoints import Endpoint
from stepeval.client.wire import MalformedReply, WireClient, WireSettings
from stepeval.stages.base import run_stage_async
from stepeval.stages.replay import ReplaySettings, ReplayStage
from stepeval.store import RunStore
from stepeval.types import Conversation, Message, TurnContext, TurnFailed, UserTurn
from tests.http_fake import FakeServer, Scripted
from tests.openai_audio import b64, chunk, completion, encoded, omni_completion, sse, tone

PATH = "/v1/chat/completions"
USER = tone(0.4, 16000, 300.0)


def client(*servers: FakeServer, limit: int = 4, key: str | None = "sk-test", **settings) -> WireClient:
    settings = {"wire_model": "gpt-4o-audio-preview", "max_retries": 3, "backoff_s": 0.01, "timeout_s": 5.0, **settings}
    endpoints = [Endpoint(i, s.url + "/v1", key, limit, settings["timeout_s"]) for i, s in enumerate(servers)]
    return WireClient(endpoints, WireSettings(**settings))


def ask(wire: WireClient, history: list[Message] | None = None, context: TurnContext | None = None):
    async def go():
        try:
            return await wire.respond(
                history or [Message("user", audio=USER, sample_rate=16000)], context or TurnContext("c1", 0, 7)
            )
        finally:
            await wire.aclose()

    return asyncio.run(go())


def test_openai_reply_decoded_and_request_in_the_wire_format():
    spoken = tone(0.5, 24000)
    with FakeServer() as server:
        server.script(PATH, Scripted(json=completion(b64(encoded(spoken, 24000)), transcript="Hello there.")))
        reply = ask(client(server, voice="alloy", sampling={"temperature": 0.2, "max_tokens": 100}))
    sent = server.requests_to(PATH)[0]
    body = sent.json
    assert {k.lower(): v for k, v in sent.headers.items()}["authorization"] == "Bearer sk-test"
    assert body["model"] == "gpt-4o-audio-preview"
    assert body["modalities"] == ["text", "audio"] and body["audio"] == {"voice": "alloy", "format": "wav"}
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.2, 100, 7)
    assert body["metadata"] == {"conversation_id": "c1", "turn": "0"}
    part = body["messages"][0]["content"][0]
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    assert not part["input_audio"]["data"].startswith("data:")
    heard, rate = audio_io.decode(base64.b64decode(part["input_audio"]["data"]))
    assert rate == 16000 and np.allclose(heard, USER, atol=1e-4)
    assert reply.sample_rate == 24000 and np.allclose(reply.audio, spoken, atol=1e-4)
    assert reply.transcript == "Hello there." and reply.text is None
    assert reply.usage["completion_tokens_details"]["audio_tokens"] == 70
    assert "total_s" in reply.timings and reply.extra["attempts"] == 1


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "pcm16"])
def test_every_allowed_audio_format_decodes(fmt):
    rate = 48000 if fmt == "opus" else 24000
    spoken = tone(1.0, rate)
    with FakeServer() as server:
        server.script(PATH, Scripted(json=completion(b64(encoded(spoken, rate, fmt)))))
        reply = ask(client(server, audio_format=fmt))
    assert server.requests_to(PATH)[0].json["audio"] == {"format": fmt}
    assert reply.sample_rate == rate
    assert abs(reply.audio.size - spoken.size) < 0.1 * rate  # lossy codecs pad a little
    n = min(reply.audio.size, spoken.size)
    level = float(np.sqrt(np.mean(reply.audio[:n] ** 2)))
    assert 0.15 < level < 0.27  # a 0.3-amplitude tone has rms 0.212, not silence or noise


def test_audio_in_a_separate_choice_vllm_omni_style():
    spoken = tone(0.3, 24000)
    with FakeServer() as server:
        server.script(PATH, Scripted(json=omni_completion("Sure, here it is.", b64(encoded(spoken, 24000)))))
        reply = ask(client(server))
    assert reply.text == "Sure, here it is."
    assert reply.transcript is None  # vllm-omni sends an empty transcript: the harness's ASR fills it, not a guess
    assert np.allclose(reply.audio, spoken, atol=1e-4)


def test_rate_limit_retried_after_retry_after():
    with FakeServer() as server:
        limited = {
            "error": {"message": "Rate limit reached for gpt-4o-audio-preview", "type": "requests", "code": "rate_limit_exceeded"}
        }
        server.script(
            PATH, Scripted(status=429, json=limited, headers={"Retry-After": "1"}), Scripted(json=completion(content="ok"))
        )
        reply = ask(client(server))
    assert reply.text == "ok" and reply.extra["attempts"] == 2
    (retry,) = reply.extra["retries"]
    assert retry["wait_s"] == 1.0  # the server's word, not the (0.01 s) backoff
    assert "HTTP 429" in retry["error"] and server.url in retry["error"]
    assert len(server.requests_to(PATH)) == 2


def test_slow_reply_times_out_then_retried():
    with FakeServer() as server:
        server.script(PATH, Scripted(delay=2.0, json=completion(content="late")), Scripted(json=completion(content="on time")))
        reply = ask(client(server, timeout_s=0.5))
    assert reply.text == "on time"
    assert "timeout_s=0.5" in reply.extra["retries"][0]["error"]


def test_dropped_connection_retried():
    with FakeServer() as server:
        server.script(PATH, Scripted(drop=True), Scripted(json=completion(content="back")))
        reply = ask(client(server))
    assert reply.text == "back"
    assert "connection failed" in reply.extra["retries"][0]["error"]


def test_client_error_not_retried_and_persistent_5xx_gives_up():
    bad = {"error": {"message": "Invalid value for 'audio.voice'.", "type": "invalid_request_error", "param": "audio.voice"}}
    with FakeServer() as server:
        server.script(PATH, Scripted(status=400, json=bad))
        with pytest.raises(TurnFailed, match=r"HTTP 400.*audio\.voice") as info:
            ask(client(server))
        assert server.url in str(info.value)
        assert len(server.requests_to(PATH)) == 1
    with FakeServer() as server:
        server.fallback = lambda request: Scripted(status=503, json={"error": {"message": "overloaded"}})
        with pytest.raises(TurnFailed, match=r"HTTP 503.*after 3 attempt"):
            ask(client(server, max_retries=2))
        assert len(server.requests_to(PATH)) == 3


@pytest.mark.parametrize(
    "reply, expected",
    [
        (Scripted(json={**completion(content="x"), "choices": []}), "no choices"),
        (Scripted(json=completion(audio_b64="not*base64")), "not valid base64"),
        (Scripted(json=completion(audio_b64=b64(b"RIFF but not a wav file at all"))), "cannot decode wav audio"),
        (Scripted(body=b"<html>502 Bad Gateway</html>", content_type="application/json"), "not JSON"),
        (Scripted(json={**completion(), "choices": [{"index": 0, "message": {"role": "assistant"}}]}), "neither text nor audio"),
    ],
)
def test_malformed_reply_names_the_endpoint(reply, expected):
    with FakeServer() as server:
        server.script(PATH, reply)
        with pytest.raises(MalformedReply, match=expected) as info:
            ask(client(server))
    assert f"endpoint 0 ({server.url}/v1)" in str(info.value)
    assert len(server.requests_to(PATH)) == 1  # a malformed 200 is an answer, not a transient failure


def test_a_finished_reply_that_says_nothing_is_an_empty_answer():
    """finish_reason "stop" with no content and no audio: the model answered with nothing (scored as silence),
    which is a reply, not a malformed one; without a finish reason it stays malformed (above)."""
    with FakeServer() as server:
        server.script(PATH, Scripted(json=completion(content="")))
        reply = ask(client(server))
    assert reply.text == "" and reply.audio is None


def _conversations(tmp_path: Path, n: int, turns: int = 2) -> list[Conversation]:
    out = []
    for c in range(n):
        items = []
        for t in range(turns):
            path = tmp_path / f"in/c{c}_t{t}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, tone(0.2, 16000, 200.0 + 50 * c + 10 * t), 16000)
            items.append(UserTurn(t, path, f"turn {t} of conversation {c}"))
        out.append(Conversation(f"conv{c}", "chitchat", "en", tuple(items)))
    return out


def test_malformed_reply_recorded_as_failed_and_the_run_goes_on(tmp_path):
    spoken = b64(encoded(tone(0.2), 24000))

    def answer(request):
        meta = request.json["metadata"]
        if meta["conversation_id"] == "conv1" and meta["turn"] == "0":
            return Scripted(json={"id": "x", "object": "chat.completion", "choices": []})
        return Scripted(json=completion(spoken, transcript=f"reply {meta['turn']}"))

    with FakeServer() as server, RunStore(tmp_path / "run") as store:
        server.fallback = answer
        stage = ReplayStage(client(server), store, ReplaySettings("fp", concurrency=4), _conversations(tmp_path, 3))
        stats = asyncio.run(run_stage_async(stage, store, progress=False)).stats
        records = store.log("replay").load()
    assert (stats.computed, stats.failed, stats.skipped) == (4, 1, 1)
    failed = records[("conv1", 0)]
    assert failed["status"] == "failed" and "no choices" in failed["error"] and server.url in failed["error"]
    assert records[("conv1", 1)]["status"] == "skipped"
    ok = records[("conv2", 1)]
    assert ok["status"] == "ok" and ok["transcript"] == "reply 1" and (tmp_path / "run" / ok["audio"]).exists()
    assert ok["usage"]["total_tokens"] == 260 and ok["extra"]["endpoint"] == 0


def test_conversations_spread_over_endpoints_within_their_limits():
    in_flight = {0: 0, 1: 0}
    peak = {0: 0, 1: 0}
    lock = threading.Lock()

    def slow(which):
        def answer(request):
            with lock:
                in_flight[which] += 1
                peak[which] = max(peak[which], in_flight[which])
            threading.Event().wait(0.15)
            with lock:
                in_flight[which] -= 1
            return Scripted(json=completion(content=f"from {which}"))

        return answer

    with FakeServer() as first, FakeServer() as second:
        first.fallback, second.fallback = slow(0), slow(1)
        wire = client(first, second, limit=2)

        async def go():
            try:
                history = [Message("user", audio=USER, sample_rate=16000)]
                return await asyncio.gather(*(wire.respond(history, TurnContext(f"c{i}", 0)) for i in range(8)))
            finally:
                await wire.aclose()

        replies = asyncio.run(go())
    assert len(first.requests_to(PATH)) + len(second.requests_to(PATH)) == 8
    assert len(first.requests_to(PATH)) >= 2 and len(second.requests_to(PATH)) >= 2
    assert peak[0] <= 2 and peak[1] <= 2
    assert {r.text for r in replies} == {"from 0", "from 1"}
    assert {r.extra["endpoint"] for r in replies} == {0, 1}


@pytest.mark.parametrize("fast", [False, True], ids=["sdk", "aiohttp"])
def test_streamed_pcm16_audio_and_time_to_first_audio(fast):
    spoken = tone(0.6, 24000)
    raw = encoded(spoken, 24000, "pcm16")
    pieces = [raw[i : i + 9600] for i in range(0, len(raw), 9600)]
    chunks = [chunk({"role": "assistant", "content": None})]
    chunks += [chunk({"audio": {"id": "audio_1", "data": b64(p)}}) for p in pieces]
    chunks += [chunk({"audio": {"transcript": "Hi"}}), chunk({"audio": {"transcript": " you."}}, finish="stop")]
    chunks.append(chunk({}, usage={"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}))
    with FakeServer() as server:
        server.script(PATH, sse(chunks))
        wire = client(server, stream=True, audio_format="pcm16")
        if fast:
            from stepeval.client.fast_http import FastWireClient

            wire = FastWireClient(wire.pool.endpoints, wire.settings)
        reply = ask(wire)
    body = server.requests_to(PATH)[0].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert reply.sample_rate == 24000 and reply.audio.size == spoken.size
    assert np.allclose(reply.audio, spoken, atol=1e-3)
    assert reply.transcript == "Hi you." and reply.usage["total_tokens"] == 30
    assert 0 < reply.timings["first_audio_s"] <= reply.timings["total_s"]


def test_text_only_model_asks_for_text_only():
    with FakeServer() as server:
        server.script(PATH, Scripted(json=completion(content="A written answer.", model="Step-Audio-R1")))
        wire = client(server, modalities=["text"], voice="alloy")
        assert wire.speaks is False
        reply = ask(wire)
    body = server.requests_to(PATH)[0].json
    assert body["modalities"] == ["text"] and "audio" not in body
    assert reply.text == "A written answer." and reply.audio is None


def test_identity_leaves_out_endpoints_and_keys():
    with FakeServer() as one, FakeServer() as two:
        single = client(one, key="sk-aaa")
        replicas = client(one, two, key="sk-bbb", timeout_s=9.0, max_retries=1)
        assert single.describe() == replicas.describe()
        assert "sk-" not in json.dumps(replicas.describe()) and one.url not in json.dumps(replicas.describe())
        assert replicas.capacity == 8


def test_bad_settings_fail_with_the_key_name():
    with pytest.raises(ValueError, match="model.audio_format='aac'"):
        WireSettings(wire_model="m", audio_format="aac")
    with pytest.raises(ValueError, match="model.modalities"):
        WireSettings(wire_model="m", modalities=["audio", "video"])


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from stepeval.config import conf_dir, register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=["dataset=sample", "model=served", "model.name=m", *overrides])


def test_replicas_keys_and_timeouts_do_not_change_the_run_name_but_sampling_does():
    from stepeval.pipeline import run_name_for

    one = run_name_for(_compose("model.base_url=http://a:8000/v1", "model.api_key=sk-1"))
    replicas = run_name_for(
        _compose(
            "model.endpoints=[{base_url:'http://a:8000/v1'},{base_url:'http://b:8000/v1',concurrency:16}]", "model.timeout_s=9"
        )
    )
    hotter = run_name_for(_compose("model.base_url=http://a:8000/v1", "+model.sampling.temperature=1.0"))
    assert one == replicas and one != hotter


def test_endpoint_config_errors_name_the_key_and_unreachable_endpoints_fail_before_any_turn():
    import socket

    from stepeval.client.build import check_endpoints, endpoints_from, wire_client

    with pytest.raises(ValueError, match=r"model.endpoints\[1\].base_url='gpu2:8000/v1'"):
        endpoints_from({"endpoints": [{"base_url": "http://gpu1:8000/v1"}, {"base_url": "gpu2:8000/v1"}]}, 8)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening: connections are refused
        wire = wire_client({"name": "m", "base_url": f"http://127.0.0.1:{closed}/v1"}, 4)
        with pytest.raises(ConnectionError, match=rf"endpoint 0 \(http://127.0.0.1:{closed}/v1\) cannot be reached"):
            check_endpoints(wire, timeout_s=2)
    with FakeServer() as server:
        server.script("/v1/models", Scripted(status=401, json={"error": {"message": "Incorrect API key provided"}}))
        with pytest.raises(PermissionError, match="refuses the api key"):
            check_endpoints(wire_client({"name": "m", "base_url": server.url + "/v1", "api_key": "sk-wrong"}, 4))


def test_preflight_refuses_a_404_from_models():
    from stepeval.client.build import check_endpoints, wire_client

    with FakeServer() as server:  # nothing at /api/models: the base URL is wrong
        with pytest.raises(ValueError, match=rf"endpoint 0 \({server.url}/api\) has no /models \(HTTP 404\)"):
            check_endpoints(wire_client({"name": "m", "base_url": server.url + "/api"}, 4))
        server.script("/v1/models", Scripted(json={"object": "list", "data": [{"id": "m"}]}))
        check_endpoints(wire_client({"name": "m", "base_url": server.url + "/v1"}, 4))  # the right one passes


@pytest.mark.parametrize("http", ["sdk", "fast"])
def test_credentials_in_the_url_are_sent_as_query_and_basic_auth_and_never_shown(http):
    from stepeval.client.build import check_endpoints, wire_client

    with FakeServer() as server:
        host = server.url.removeprefix("http://")
        server.script("/v1/models", Scripted(json={"object": "list", "data": [{"id": "m"}]}))
        server.script(PATH, Scripted(status=400, json={"error": {"message": "bad voice"}}))
        url = f"http://user:PW-SECRET-1@{host}/v1?api_key=Q-SECRET-2"
        wire = wire_client({"name": "m", "base_url": url, "http": http}, 4)
        check_endpoints(wire)
        with pytest.raises(TurnFailed) as info:
            ask(wire)
    models, chat = server.requests
    assert (models.path, models.query) == ("/v1/models", "api_key=Q-SECRET-2")  # today: GET /v1?api_key=.../models
    assert (chat.path, chat.query) == (PATH, "api_key=Q-SECRET-2")
    basic = base64.b64encode(b"user:PW-SECRET-1").decode()
    assert {k.lower(): v for k, v in chat.headers.items()}["authorization"] == f"Basic {basic}"
    message = str(info.value)
    assert f"endpoint 0 (http://user:<redacted>@{host}/v1?api_key=<redacted>): HTTP 400: bad voice" == message
    assert "SECRET" not in repr(wire.pool.endpoints) + json.dumps(wire.describe())


def test_http_auto_takes_the_lean_path_streamed_or_not():
    from stepeval.client.build import wire_client
    from stepeval.client.fast_http import FastWireClient

    base = {"name": "m", "base_url": "http://127.0.0.1:9/v1"}
    assert type(wire_client(base, 4)) is FastWireClient  # http unset: auto
    assert type(wire_client({**base, "http": "auto", "stream": True}, 4)) is FastWireClient
    assert type(wire_client({**base, "http": "fast", "stream": True}, 4)) is FastWireClient
    assert type(wire_client({**base, "http": "sdk", "stream": True}, 4)) is WireClient
    assert type(wire_client({**base, "http": "sdk"}, 4)) is WireClient
    with pytest.raises(ValueError, match="model.http='httpx': use auto, sdk"):
        wire_client({**base, "http": "httpx"}, 4)


@pytest.mark.parametrize("channels", [1, 2])
def test_a_mono_16_bit_reply_is_stored_as_it_came_and_others_are_encoded(tmp_path, channels):
    frames = np.stack([tone(0.3, 24000, 300.0 + 100 * c) for c in range(channels)], axis=1)
    sent = encoded(frames if channels > 1 else frames[:, 0], 24000)  # soundfile's own 16-bit WAV
    with FakeServer() as server, RunStore(tmp_path / "run") as store:
        server.fallback = lambda request: Scripted(json=completion(b64(sent)))
        stage = ReplayStage(client(server), store, ReplaySettings("fp"), _conversations(tmp_path, 1, turns=1))
        asyncio.run(run_stage_async(stage, store, progress=False))
        record = store.log("replay").load()[("conv0", 0)]
    stored = (tmp_path / "run" / record["audio"]).read_bytes()
    assert record["audio_sha256"] == hashlib.sha256(stored).hexdigest()
    heard, rate = audio_io.decode(stored)
    expected, _ = audio_io.decode(sent)
    assert rate == 24000
    if channels == 1:
        assert stored == sent and np.array_equal(heard, expected)
    else:  # downmixed to the mono clip the harness scores, written as a 16-bit WAV of its own (one step of rounding)
        assert stored != sent and sf.info(io.BytesIO(stored)).channels == 1
        assert np.allclose(heard, expected, rtol=0, atol=1 / 32768 + 1e-7)


def test_a_reply_that_cannot_be_saved_fails_its_turn_and_the_other_conversations_are_kept(tmp_path):
    from stepeval.store import safe_name

    spoken = b64(encoded(tone(0.2), 24000))
    with FakeServer() as server, RunStore(tmp_path / "run") as store:
        server.fallback = lambda request: Scripted(json=completion(spoken, transcript="ok"))
        (tmp_path / "run" / "audio").mkdir(parents=True)
        (tmp_path / "run" / "audio" / safe_name("conv1")).write_text("a file where conv1's audio folder should be")
        stage = ReplayStage(client(server), store, ReplaySettings("fp", concurrency=4), _conversations(tmp_path, 3))
        stats = asyncio.run(run_stage_async(stage, store, progress=False)).stats
        records = store.log("replay").load()
    assert (stats.computed, stats.failed, stats.skipped) == (4, 1, 1)
    failed = records[("conv1", 0)]
    assert failed["status"] == "failed" and failed["error"].startswith("reply not saved: ") and failed["audio"] is None
    assert records[("conv1", 1)]["status"] == "skipped"
    assert all(records[(c, t)]["status"] == "ok" for c in ("conv0", "conv2") for t in (0, 1))


def test_a_cut_stream_is_retried_and_an_error_event_fails_the_turn():
    from stepeval.client.fast_http import FastWireClient

    spoken = encoded(tone(0.2, 24000), 24000, "pcm16")
    whole = [chunk({"audio": {"id": "a", "data": b64(spoken)}}), chunk({"content": "hi"}, finish="stop")]
    cut = Scripted(lines=[f"data: {json.dumps(c)}\n\n".encode() for c in whole[:1]], content_type="text/event-stream")
    broken = Scripted(lines=[b'data: {"error": {"message": "engine died"}}\n\n'], content_type="text/event-stream")
    with FakeServer() as server:
        server.script(PATH, cut, sse(whole), broken)
        wire = client(server, stream=True, audio_format="pcm16")
        wire = FastWireClient(wire.pool.endpoints, wire.settings)
        reply = ask(wire)
        assert reply.text == "hi" and reply.extra["attempts"] == 2  # the cut one was not taken as a short reply
        assert "ended before data: [DONE]" in reply.extra["retries"][0]["error"]
        wire = FastWireClient(wire.pool.endpoints, wire.settings)
        with pytest.raises(MalformedReply, match="engine died"):
            ask(wire)
