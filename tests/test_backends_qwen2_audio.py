"""Qwen2-Audio backend on a tiny random checkpoint of the real transformers classes.

In-process for a 2-turn conversation of the bundled sample, and end to end: served by
`stepeval serve` in a subprocess, evaluated by `stepeval run model=served` in another.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stepeval.backends._hf import BackendUnavailable
from stepeval.backends.qwen2_audio import Qwen2Audio
from stepeval.store import RecordLog
from stepeval.types import Message, TurnContext
from tests import tiny_models
from tests.run_helpers import only_run, stepeval_run

pytestmark = pytest.mark.slow  # tiny transformers models and a served one

SPEECH_METRICS = ("duration_s", "silence_share", "speech_detected", "language_match", "text_speech_error")


@pytest.fixture(scope="module")
def tiny_qwen2_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"))


def test_two_turn_conversation_in_process(tiny_qwen2_audio: Path):
    backend = Qwen2Audio(model_path=str(tiny_qwen2_audio), device="cpu", max_new_tokens=6)
    assert backend.speaks is False
    backend.check()
    conversation, [(a0, r0), (a1, r1)] = tiny_models.sample_two_turns()
    first, second, _ = tiny_models.play_two_turns(backend, conversation.id, (a0, r0), (a1, r1))
    for reply in (first, second):
        assert isinstance(reply.text, str)
        assert reply.audio is None and reply.sample_rate is None
        assert 0 < reply.usage["completion_tokens"] <= 6
    # the second prompt carries both user turns' audio (each ~25 audio tokens per second) and the first reply
    turn0_audio_tokens = first.usage["prompt_tokens"] - 30
    assert second.usage["prompt_tokens"] > first.usage["prompt_tokens"] + 0.5 * turn0_audio_tokens
    again = backend.respond([Message("user", audio=a0, sample_rate=r0)], TurnContext(conversation.id, 0))
    assert again.text == first.text  # greedy decoding: the same turn gives the same reply


def test_missing_weights_fail_in_check_naming_the_key_and_docs(tmp_path: Path):
    backend = Qwen2Audio(model_path=str(tmp_path / "nowhere"))
    with pytest.raises(BackendUnavailable, match=r"model.backend.model_path=.*nowhere.*docs/models.md.*Qwen2-Audio"):
        backend.check()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match=r"lacks config.json"):
        Qwen2Audio(model_path=str(tmp_path / "empty")).check()


def _records(run_dir: Path, stage: str) -> dict:
    return RecordLog(run_dir / "records" / f"{stage}.jsonl").load()


def _assert_text_only_run(run_dir: Path) -> None:
    replays = _records(run_dir, "replay")
    assert len(replays) == 4 and all(r["status"] == "ok" for r in replays.values()), replays
    assert all(isinstance(r["text"], str) and r["audio"] is None for r in replays.values())
    scores = _records(run_dir, "score")
    assert set(scores) == set(replays)
    for record in scores.values():
        for name in SPEECH_METRICS:  # a model without speech output: not applicable, never missing, never 0
            assert record["metrics"].get(name) is None and name not in record["missing"]
            assert "no speech output" in record["not_applicable"][name]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_served_by_stepeval_serve_and_evaluated_over_the_wire(tiny_qwen2_audio: Path, tmp_path: Path):
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stepeval.cli",
            "serve",
            "qwen2_audio",
            f"model.backend.model_path={tiny_qwen2_audio}",
            "model.backend.device=cpu",
            "model.backend.max_new_tokens=4",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "stepeval serve did not come up: " + (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.3)
        assert health.json()["backend"]["class"] == "stepeval.backends.qwen2_audio.Qwen2Audio"
        results = tmp_path / "results"
        done = stepeval_run(
            results,
            "model=served",
            f"model.base_url={base}/v1",
            "model.name=tiny-qwen2-audio",
            "model.modalities=[text]",  # it has no speech output (asked for audio, its silence would be an empty reply)
            "dataset=sample",
            "asr=none",
            "limit=2",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        run_dir = only_run(results)
        _assert_text_only_run(run_dir)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["config"]["model"]["name"] == "tiny-qwen2-audio"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
