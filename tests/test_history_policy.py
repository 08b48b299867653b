"""Both history policies send what they promise, checked on the server's side of real HTTP."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
import soundfile as sf

from stepeval import audio as audio_io
from stepeval.client.endpoints import Endpoint
from stepeval.client.wire import WireClient, WireSettings
from stepeval.stages.base import run_stage_async
from stepeval.stages.replay import ReplaySettings, ReplayStage
from stepeval.store import RunStore
from stepeval.types import Conversation, UserTurn
from tests.http_fake import FakeServer, Scripted
from tests.openai_audio import b64, completion, encoded, tone

PATH = "/v1/chat/completions"
SYSTEM = "Answer briefly, in the user's language."
TRANSCRIPTS = ["What is the capital of France?", "And how many people live there?", "Tell me a joke about it."]


def _reply(request) -> Scripted:
    """Turn 0 only speaks (its transcript must come back as the assistant text); later turns also write text."""
    turn = int(request.json["metadata"]["turn"])
    spoken = b64(encoded(tone(0.2, 24000, 500.0 + turn), 24000))
    if turn == 0:
        return Scripted(json=completion(spoken, transcript="Paris is the capital."))
    return Scripted(json=completion(spoken, transcript=f"spoken {turn}", content=f"written {turn}"))


def _replay(tmp_path, policy: str) -> tuple[list, list[np.ndarray]]:
    turns, user_audio = [], []
    for i, text in enumerate(TRANSCRIPTS):
        samples = tone(0.3, 16000, 200.0 + 100 * i)
        path = tmp_path / f"turn{i}.wav"
        sf.write(path, samples, 16000, subtype="PCM_16")
        user_audio.append(audio_io.read(path)[0])
        turns.append(UserTurn(i, path, text))
    conversation = Conversation("geo-1", "knowledge", "en", tuple(turns))
    with FakeServer() as server, RunStore(tmp_path / policy) as store:
        server.fallback = _reply
        wire = WireClient([Endpoint(0, server.url + "/v1", None, 2, 10.0)], WireSettings(wire_model="m", backoff_s=0.01))
        settings = ReplaySettings("fp", history=policy, system_prompt=SYSTEM)
        stats = asyncio.run(run_stage_async(ReplayStage(wire, store, settings, [conversation]), store, progress=False)).stats
    assert stats.computed == 3 and stats.failed == 0
    return [r.json["messages"] for r in server.requests_to(PATH)], user_audio


def _audio(message: dict) -> np.ndarray:
    (part,) = [p for p in message["content"] if p["type"] == "input_audio"]
    samples, rate = audio_io.decode(base64.b64decode(part["input_audio"]["data"]))
    assert rate == 16000
    return samples


@pytest.mark.parametrize("policy", ["audio", "transcript"])
def test_history_policy_on_the_wire(tmp_path, policy):
    requests, user_audio = _replay(tmp_path, policy)
    assert [len(m) for m in requests] == [2, 4, 6]  # system + (user, assistant) per earlier turn + the current user turn
    last = requests[-1]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last[0]["content"] == SYSTEM
    # earlier replies go back as text: the written text, else the model's own transcript of its speech
    assert last[2]["content"] == "Paris is the capital."
    assert last[4]["content"] == "written 1"
    # the current turn is always audio
    assert np.allclose(_audio(last[5]), user_audio[2], atol=1e-4)
    for index, message in ((0, last[1]), (1, last[3])):
        if policy == "audio":
            assert np.allclose(_audio(message), user_audio[index], atol=1e-4)
        else:
            assert message["content"] == TRANSCRIPTS[index]  # text only, no audio part
    # earlier requests are prefixes of the later ones: the history never rewrites itself
    assert requests[1][:2] == requests[2][:2]
