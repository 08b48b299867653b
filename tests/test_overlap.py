"""Overlapped stages write what the one-after-another path writes; the parts that make a run cheap
(thread plan, availability without model loads, clips encoded once, the aiohttp request path)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stepeval import threads
from stepeval.client import history
from stepeval.client.endpoints import Endpoint
from stepeval.client.fast_http import FastWireClient
from stepeval.client.wire import WireClient, WireSettings
from stepeval.types import Message, TurnContext
from tests.http_fake import FakeServer, Scripted
from tests.openai_audio import b64, completion, encoded, tone
from tests.run_helpers import only_run, stable_records, stepeval_run

PATH = "/v1/chat/completions"


@pytest.mark.slow
def test_overlapped_run_writes_the_records_and_lines_of_the_sequential_run(tmp_path: Path):
    overrides = ["dataset=sample", "model=parrot", "asr=whisper_base_offline", "limit=3"]
    overlapped = stepeval_run(tmp_path / "overlap", *overrides, "workers.overlap=true")
    sequential = stepeval_run(tmp_path / "sequential", *overrides, "workers.overlap=false")
    assert overlapped.returncode == 0, overlapped.stderr
    assert sequential.returncode == 0, sequential.stderr
    a, b = only_run(tmp_path / "overlap"), only_run(tmp_path / "sequential")
    for log in ("replay", "asr", "score"):
        records = stable_records(a, log)
        assert records and records == stable_records(b, log), log
    # 3 conversations of the sample: 2 + 2 + 3 turns (parrot answers every one)
    for line in ("replay: 7 records: 0 reused, 7 computed", "asr: 7 records: 0 reused, 7 computed", "score: 7 records"):
        assert line in overlapped.stdout and line in sequential.stdout, line
    again = stepeval_run(tmp_path / "overlap", *overrides)
    assert again.returncode == 0, again.stderr
    for stage in ("replay", "asr", "score"):
        assert f"{stage}: 7 records: 7 reused, 0 computed" in again.stdout


def test_thread_plan_splits_the_cores_between_asr_and_scoring():
    two = threads.plan(cores=2, overlap=True)  # ASR on both cores, one one-thread scorer beside it
    assert (two.asr_workers, two.asr_threads, two.scoring_workers, two.scoring_threads) == (1, 2, 1, 1)
    sixteen = threads.plan(cores=16, overlap=True)  # 4 ASR workers of 4 threads, 4 one-thread scorers
    assert (sixteen.asr_workers, sixteen.asr_threads, sixteen.scoring_workers, sixteen.scoring_threads) == (4, 4, 4, 1)
    alone = threads.plan(cores=16, overlap=False)  # one stage at a time: scoring may use every core
    assert (alone.asr_workers, alone.asr_threads, alone.scoring_workers) == (4, 4, 16)
    gpu = threads.plan(cores=16, asr_on_gpu=True)
    assert (gpu.asr_workers, gpu.asr_threads, gpu.scoring_workers) == (4, 1, 15)
    assert threads.plan(cores=2, asr_workers=3, scoring_threads=2).asr_workers == 3


def test_signal_identity_and_asr_check_load_no_model():
    """A resumed run fingerprints its scores with the identity: it must not import the model libraries."""
    code = (
        "import sys, json\n"
        "from stepeval.signals import scoring\n"
        "from stepeval.asr.engines import WhisperASR\n"
        "ident = scoring.identity(scoring.SignalOptions(utmos=True))\n"
        "WhisperASR(model='packaged:whisper-base', device='cpu').check()\n"
        "names = ('torch', 'onnxruntime', 'resemblyzer', 'speechmos', 'ctranslate2', 'faster_whisper')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(json.dumps({'unavailable': ident['unavailable'], 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["unavailable"] == {"dnsmos": None, "speaker": None, "utmos": None}  # all installed here


def test_read_only_clip_is_encoded_once_and_decodes_to_itself(monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = history.audio_io.to_base64_wav
    monkeypatch.setattr(history.audio_io, "to_base64_wav", lambda a, r: calls.append(r) or real(a, r))
    clip = history.frozen(tone(0.3, 16000, 300.0))
    first = history.wav_base64(clip, 16000)
    assert history.wav_base64(clip, 16000) is first and len(calls) == 1
    heard, rate = sf.read(io.BytesIO(base64.b64decode(first)), dtype="float32")
    assert rate == 16000 and np.allclose(heard, clip, atol=1 / 32768 + 1e-6)
    writable = tone(0.3, 16000, 300.0)
    history.wav_base64(writable, 16000)
    history.wav_base64(writable, 16000)
    assert len(calls) == 3  # an array that may change is encoded every time


def _clients(server: FakeServer, **settings):
    settings = {"wire_model": "m", "max_retries": 2, "backoff_s": 0.01, "timeout_s": 5.0, **settings}
    make = lambda cls: cls([Endpoint(0, server.url + "/v1", "sk-test", 4, 5.0)], WireSettings(**settings))  # noqa: E731
    return make(WireClient), make(FastWireClient)


def _ask(wire, messages):
    async def go():
        try:
            return await wire.respond(messages, TurnContext("c1", 1, 7))
        finally:
            await wire.aclose()

    return asyncio.run(go())


def test_fast_client_sends_the_sdk_clients_body_and_honours_retry_after():
    spoken = tone(0.5, 24000)
    clip = history.frozen(tone(0.4, 16000, 250.0))
    messages = [
        Message("system", text="Be brief."),
        Message("user", audio=clip, sample_rate=16000),
        Message("assistant", text="Hi."),
        Message("user", audio=clip, sample_rate=16000),
    ]
    with FakeServer() as server:
        sdk, fast = _clients(server, voice="alloy", sampling={"temperature": 0.2})
        server.script(PATH, Scripted(json=completion(b64(encoded(spoken, 24000)), transcript="Hello.")))
        server.script(
            PATH,
            Scripted(status=429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
            Scripted(json=completion(b64(encoded(spoken, 24000)), transcript="Hello.")),
        )
        by_sdk = _ask(sdk, messages)
        by_fast = _ask(fast, messages)
    sent = server.requests_to(PATH)
    assert len(sent) == 3
    assert sent[1].json == sent[0].json == sent[2].json
    assert {k.lower(): v for k, v in sent[1].headers.items()}["authorization"] == "Bearer sk-test"
    assert by_fast.transcript == by_sdk.transcript == "Hello."
    assert np.allclose(by_fast.audio, spoken, atol=1e-4) and by_fast.sample_rate == 24000
    assert by_fast.extra["attempts"] == 2 and by_fast.extra["retries"][0]["wait_s"] == 0
    assert "HTTP 429" in by_fast.extra["retries"][0]["error"] and "slow down" in by_fast.extra["retries"][0]["error"]


def test_fast_body_bytes_are_json_dumps_of_the_body():
    clip = history.frozen(tone(0.2, 16000, 200.0))
    other = tone(0.1, 16000, 500.0)  # writable: encoded on the spot
    wire = FastWireClient([Endpoint(0, "http://127.0.0.1:9/v1", None, 1, 1.0)], WireSettings("m", sampling={"top_p": 0.5}))
    history_ = [
        Message("user", text='say "hi" \u00e9', audio=clip, sample_rate=16000),
        Message("assistant", text="ok"),
        Message("user", audio=other, sample_rate=16000),
        Message("user", audio=clip, sample_rate=16000),
    ]
    body = wire.request(history_, TurnContext("c", 2, 3))
    assert body.encoded == json.dumps(dict(body)).encode()
    assert json.loads(body.encoded)["messages"][3]["content"][0]["input_audio"]["data"] == history.wav_base64(clip, 16000)


def test_fast_client_reports_a_refused_connection_like_the_sdk_client():
    with FakeServer() as server:
        url = server.url
    wire = FastWireClient([Endpoint(0, url + "/v1", None, 2, 2.0)], WireSettings("m", max_retries=0))
    with pytest.raises(Exception, match=r"endpoint 0 \(http://127\.0\.0\.1:\d+/v1\): connection failed"):
        _ask(wire, [Message("user", text="hi")])
