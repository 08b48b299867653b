"""`stepeval serve` batching: concurrent turns grouped into one left-padded ``generate()``.

On the tiny random checkpoints of the real transformers classes (CPU): greedy replies of a batch are the same
tokens as one at a time (and are not with right padding, so the check can fail); through the real server and the
wire client, concurrent requests are batched and each reply goes back to its own request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from stepeval import audio as audio_io
from stepeval.backends.base import Backend
from stepeval.backends.qwen2_5_omni import Qwen25Omni
from stepeval.backends.qwen2_audio import Qwen2Audio
from stepeval.backends.server import batch_unsupported, build_app, serving
from stepeval.client.endpoints import Endpoint
from stepeval.client.wire import WireClient, WireSettings
from stepeval.data import loader, sources
from stepeval.types import Message, Reply, TurnContext
from tests import tiny_models


@pytest.fixture(scope="module")
def tiny_qwen2_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"))


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.qwen2_5_omni(tmp_path_factory.mktemp("tiny-omni"))


@pytest.fixture
def omni_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Qwen2.5-Omni's processor without its torchvision-only video half (see tiny_models)."""
    import transformers

    monkeypatch.setattr(
        transformers.Qwen2_5OmniProcessor,
        "from_pretrained",
        classmethod(lambda cls, path, **kwargs: tiny_models.omni_processor_without_video(Path(path))),
    )


def varied_turns() -> list[tuple[list[Message], TurnContext]]:
    """Turns of different prompt lengths (so the batch is padded): five first turns, a second turn with its history,
    and a turn with a system message and text next to the audio."""
    conversations = loader.load(sources.bundled_sample()).conversations
    items = []
    for c in conversations[:5]:
        audio, rate = audio_io.read(c.turns[0].audio_path)
        items.append(([Message("user", audio=audio, sample_rate=rate)], TurnContext(c.id, 0)))
    a1, r1 = audio_io.read(conversations[0].turns[1].audio_path)
    first = items[0][0][0]
    second = [first, Message("assistant", text="hello there"), Message("user", audio=a1, sample_rate=r1)]
    items.append((second, TurnContext("c0", 1)))
    with_text = [Message("system", text="Be brief."), Message("user", text="and this?", audio=a1, sample_rate=r1)]
    items.append((with_text, TurnContext("x", 0)))
    return items


def decoded_ids(backend) -> list[list[int]]:
    """Every id sequence the backend's real processor decodes, in order (records the calls, changes nothing)."""
    _, processor = backend.loaded()
    seen: list[list[int]] = []
    original = processor.batch_decode

    def spy(ids, *args, **kwargs):
        seen.extend([int(t) for t in row] for row in ids)
        return original(ids, *args, **kwargs)

    processor.batch_decode = spy
    return seen


def test_qwen2_audio_batch_is_the_same_tokens_as_one_at_a_time(tiny_qwen2_audio: Path):
    backend = Qwen2Audio(model_path=str(tiny_qwen2_audio), device="cpu", max_new_tokens=10)
    backend.check()
    assert batch_unsupported(backend) is None
    items = varied_turns()
    seen = decoded_ids(backend)
    singles = [backend.respond(history, context) for history, context in items]
    single_ids = list(seen)
    seen.clear()
    batch = backend.respond_batch(items)
    assert len({r.usage["prompt_tokens"] for r in singles}) > 3  # the prompts differ in length: padding is exercised
    assert seen == single_ids
    assert len({tuple(ids) for ids in single_ids}) > 1  # replies differ, so a mix-up of rows would show
    for one, grouped in zip(singles, batch, strict=True):
        assert grouped.text == one.text
        assert grouped.usage["prompt_tokens"] == one.usage["prompt_tokens"]
        assert grouped.usage["completion_tokens"] == one.usage["completion_tokens"] == len(single_ids[singles.index(one)])
        assert grouped.usage["batch_size"] == len(items) and one.usage["batch_size"] == 1

    # control: padded on the wrong side, the same batch gives other tokens (the check above can fail)
    backend.loaded()[1].tokenizer.padding_side = "right"
    seen.clear()
    backend.respond_batch(items)
    assert seen != single_ids


def test_a_turn_that_cannot_be_prepared_fails_alone(tiny_qwen2_audio: Path):
    backend = Qwen2Audio(model_path=str(tiny_qwen2_audio), device="cpu", max_new_tokens=4)
    items = varied_turns()[:2]
    broken = ([Message("user", audio=np.zeros(100, np.float32), sample_rate=None)], TurnContext("bad", 0))
    results = backend.respond_batch([items[0], broken, items[1]])
    assert isinstance(results[0], Reply) and isinstance(results[2], Reply)
    assert isinstance(results[1], ValueError) and "no audio (or no sample rate)" in str(results[1])
    assert results[0].usage["batch_size"] == 2


def test_omni_thinker_batches_and_the_talker_says_it_cannot(tiny_omni: Path, omni_processor: None):
    thinker = Qwen25Omni(model_path=str(tiny_omni), device="cpu", speak=False, max_new_tokens=6)
    thinker.check()
    assert batch_unsupported(thinker) is None
    items = varied_turns()[:4]
    seen = decoded_ids(thinker)
    singles = [thinker.respond(h, c) for h, c in items]
    single_ids = list(seen)
    seen.clear()
    batch = thinker.respond_batch(items)
    assert seen == single_ids
    assert [r.text for r in batch] == [r.text for r in singles]

    talker = Qwen25Omni(model_path=str(tiny_omni), device="cpu", speak=True)
    assert "speak=true" in batch_unsupported(talker)
    sampled = Qwen2Audio(model_path="unused", do_sample=True)
    assert "do_sample=true" in batch_unsupported(sampled)


class Recording(Backend):
    """A real backend that answers each turn with its own text and records the batches it was given."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def respond(self, history, context):
        return self.respond_batch([(history, context)])[0]

    def respond_batch(self, items):
        with self._lock:
            self.batches.append(len(items))
        time.sleep(self.seconds)
        out = []
        for history, _ in items:
            text = history[-1].text or ""
            out.append(ValueError(f"cannot answer {text!r}") if text.startswith("fail") else Reply(text=f"re: {text}"))
        return out


def _ask(url: str, text: str) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": text}]}, timeout=30)


def test_batcher_groups_concurrent_requests_and_routes_each_reply_back():
    backend = Recording(seconds=0.2)
    app = build_app(backend, "rec", max_concurrent=1, max_batch_size=4, max_wait_ms=300)
    with serving(app) as url:
        texts = [f"q{i}" for i in range(6)] + ["fail-me"]
        replies: dict[str, httpx.Response] = {}
        threads = [threading.Thread(target=lambda t=t: replies.__setitem__(t, _ask(url, t))) for t in texts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        health = httpx.get(url.removesuffix("/v1") + "/health").json()["batching"]
    for text in texts[:-1]:
        assert replies[text].status_code == 200
        assert replies[text].json()["choices"][0]["message"]["content"] == f"re: {text}"
    assert replies["fail-me"].status_code == 500 and "cannot answer 'fail-me'" in replies["fail-me"].text
    assert sum(backend.batches) == 7 and max(backend.batches) == 4  # never more than max_batch_size
    assert len(backend.batches) <= 3  # 7 turns in batches, not one by one
    assert health == {
        "enabled": True,
        "reason": None,
        "max_batch_size": 4,
        "max_wait_ms": 300,
        "batches": len(backend.batches),
        "turns": 7,
        "largest": 4,
    }


def test_a_lone_request_waits_at_most_max_wait():
    backend = Recording(seconds=0.0)
    app = build_app(backend, "rec", max_batch_size=8, max_wait_ms=150)
    with serving(app) as url:
        _ask(url, "warm up")
        started = time.perf_counter()
        assert _ask(url, "alone").json()["choices"][0]["message"]["content"] == "re: alone"
        elapsed = time.perf_counter() - started
    assert 0.15 <= elapsed < 1.0
    assert backend.batches == [1, 1]


def test_a_backend_that_cannot_batch_keeps_one_turn_per_call():
    from stepeval.backends.control import Parrot

    app = build_app(Parrot(), "parrot", max_concurrent=2, max_batch_size=8)
    with serving(app) as url:
        batching = httpx.get(url.removesuffix("/v1") + "/health").json()["batching"]
    assert batching["enabled"] is False and "Parrot answers one turn per call" in batching["reason"]


@pytest.mark.slow
def test_served_tiny_qwen2_audio_batches_wire_client_requests(tiny_qwen2_audio: Path):
    """Through the real server and the wire client: concurrent conversations batched, each reply its own."""
    reference = Qwen2Audio(model_path=str(tiny_qwen2_audio), device="cpu", max_new_tokens=8)
    items = varied_turns()
    expected = [reference.respond(h, c).text for h, c in items]
    served = Qwen2Audio(model_path=str(tiny_qwen2_audio), device="cpu", max_new_tokens=8)
    served.check()
    app = build_app(served, "qwen2_audio", max_batch_size=8, max_wait_ms=200)
    with serving(app) as url:
        client = WireClient([Endpoint(0, url, None, 8, 60.0)], WireSettings(wire_model="qwen2_audio", modalities=["text"]))

        async def all_turns() -> list[Reply]:
            try:
                return await asyncio.gather(*(client.respond(h, c) for h, c in items))
            finally:
                await client.aclose()

        replies = asyncio.run(all_turns())
        batching = httpx.get(url.removesuffix("/v1") + "/health").json()["batching"]
    assert [r.text for r in replies] == expected
    assert batching["turns"] == len(items) and batching["largest"] > 1
    assert max(r.usage["batch_size"] for r in replies) == batching["largest"]


@pytest.mark.slow
def test_bench_serve_runs_with_the_tiny_config_on_cpu(tmp_path: Path, repo: Path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    args = ["--tiny", "--device", "cpu", "--levels", "1", "4", "--rounds", "2", "--baseline-turns", "3", "--new-tokens", "5"]
    done = subprocess.run(
        [sys.executable, str(repo / "scripts" / "bench_serve.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    rows = {(r["mode"], r["concurrent"]): r for r in figures["rows"]}
    assert set(rows) == {("one at a time", 1), ("batched", 1), ("batched", 4)}
    assert all(r["new_tokens_per_turn"] == [5] for r in rows.values())  # fixed work per turn
    assert rows[("one at a time", 1)]["mean_batch"] == 1.0 and rows[("batched", 4)]["mean_batch"] > 1
    assert rows[("batched", 4)]["turns"] == 8 and "| batched | 4 | 4 |" in done.stdout
