"""``stepeval serve`` as a real subprocess on a free port, and ``stepeval run`` through it end to end."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from stepeval import audio as audio_io
from stepeval.data import loader, sources
from tests.openai_audio import b64, encoded, tone

pytestmark = pytest.mark.slow  # a served backend in a subprocess

SECRET = "sk-proj-DO-NOT-LEAK-7f3a9c"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stepeval(*args: str, repo: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stepeval.cli", *args], cwd=repo, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def parrot_server():
    repo = Path(__file__).resolve().parents[1]
    port = _free_port()
    command = [sys.executable, "-m", "stepeval.cli", "serve", "parrot", "--port", str(port), "--max-concurrent", "2"]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"stepeval serve exited early: {process.stdout.read()}")
            try:
                health = httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, health
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_health_and_models(parrot_server):
    url, health = parrot_server
    assert health.status_code == 200
    assert health.json()["model"] == "parrot" and health.json()["backend"]["class"] == "stepeval.backends.control.Parrot"
    assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["parrot"]


def test_health_says_a_backend_that_cannot_batch_answers_one_turn_per_call(parrot_server):
    _, health = parrot_server
    batching = health.json()["batching"]
    assert batching["enabled"] is False and batching["reason"] == "Parrot answers one turn per call (no respond_batch)"
    assert health.json()["max_concurrent"] == 2


def test_run_through_the_server_end_to_end(parrot_server, tmp_path, repo):
    url, _ = parrot_server
    args = [
        "run",
        "model=served",
        f"model.base_url={url}/v1",
        "model.name=parrot-served",
        f"model.api_key={SECRET}",
        "dataset=sample",
        "asr=none",
        "limit=2",
        f"results_dir={tmp_path}",
        "progress=false",
    ]
    result = _stepeval(*args, repo=repo, timeout=120)
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.iterdir()
    records = [json.loads(line) for line in (run_dir / "records" / "replay.jsonl").read_text().splitlines()]
    dataset = loader.load(sources.resolve("sample"), limit=2)
    turns = {(c.id, t.index): t for c in dataset.conversations for t in c.turns}
    assert len(records) == len(turns) >= 2
    for record in records:
        assert record["status"] == "ok", record
        heard, rate = audio_io.read(run_dir / record["audio"])
        said, said_rate = audio_io.read(turns[(record["conversation_id"], record["turn"])].audio_path)
        assert rate == said_rate and heard.size == said.size
        assert np.max(np.abs(heard - said)) < 1e-3  # parrot's echo, through two 16-bit wav hops
    # the key reached neither the saved config, the records, nor the output
    everything = [result.stdout, result.stderr] + [p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file()]
    assert not any(SECRET in text for text in everything)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["model"]["api_key"] == "<redacted>"
    assert manifest["config"]["model"]["base_url"] == f"{url}/v1"


def test_bad_request_names_the_field(parrot_server):
    url, _ = parrot_server
    bad_audio = {"type": "input_audio", "input_audio": {"data": b64(b"not audio at all"), "format": "wav"}}
    response = httpx.post(
        url + "/v1/chat/completions", json={"model": "parrot", "messages": [{"role": "user", "content": [bad_audio]}]}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[0].input_audio.data" and error["type"] == "invalid_request_error"
    assert "messages[0].content[0].input_audio.data" in error["message"]
    response = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "robot", "content": "hi"}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages[0].role"


def test_backend_failure_is_a_500_and_a_good_turn_is_openai_shaped(parrot_server):
    url, _ = parrot_server
    response = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "only text"}]})
    assert response.status_code == 500 and "parrot needs the user's audio" in response.json()["error"]["message"]
    spoken = tone(0.25, 16000)
    part = {"type": "input_audio", "input_audio": {"data": b64(encoded(spoken, 16000)), "format": "wav"}}
    body = {
        "model": "parrot",
        "modalities": ["text", "audio"],
        "audio": {"format": "wav"},
        "messages": [{"role": "user", "content": [part]}],
    }
    reply = httpx.post(url + "/v1/chat/completions", json=body).json()
    assert reply["object"] == "chat.completion" and reply["choices"][0]["finish_reason"] == "stop"
    audio = reply["choices"][0]["message"]["audio"]
    assert audio["id"].startswith("audio_") and audio["expires_at"] > time.time()
    echoed, rate = audio_io.decode(base64.b64decode(audio["data"]))
    assert rate == 16000 and np.allclose(echoed, spoken, atol=1e-3)


def test_serve_refuses_a_model_without_a_backend(repo):
    result = _stepeval("serve", "served", "model.name=x", repo=repo, timeout=60, env={**os.environ})
    assert result.returncode == 1
    assert "no in-process backend" in result.stderr
