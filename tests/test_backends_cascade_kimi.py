"""The cascade (real packaged Whisper ASR, real espeak-ng, an OpenAI-compatible LLM on 127.0.0.1)
and Kimi-Audio at its ``generate(chats)`` seam."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest

from stepeval import audio as audio_io
from stepeval.asr.engines import WhisperASR
from stepeval.backends import kimi_audio
from stepeval.backends._hf import BackendUnavailable
from stepeval.backends.cascade import Cascade, EspeakTTS, PiperTTS
from stepeval.data import loader, sources
from stepeval.types import Message, TurnContext
from tests import tiny_models
from tests.http_fake import FakeServer, Scripted
from tests.openai_audio import completion

pytestmark = pytest.mark.slow  # tiny models and espeak-ng

CHAT = "/v1/chat/completions"


def english_two_turns():
    conversations = loader.load(sources.bundled_sample()).conversations
    return next(c for c in conversations if c.language == "en" and len(c.turns) == 2)


def test_cascade_two_turns_asr_llm_tts():
    conversation = english_two_turns()
    (a0, r0), (a1, r1) = [audio_io.read(t.audio_path) for t in conversation.turns]
    asr = WhisperASR(model="packaged:whisper-base", device="cpu", compute_type="int8", beam_size=1)
    with FakeServer() as server:
        server.script("/v1/models", Scripted(json={"object": "list", "data": [{"id": "llm", "object": "model"}]}))
        server.script(CHAT, Scripted(json=completion(content="The moon is bright tonight.", model="llm")))
        server.script(CHAT, Scripted(json=completion(content="Goodnight, little star.", model="llm")))
        backend = Cascade(llm_base_url=server.url + "/v1", llm_model="llm", api_key="sk-secret", asr=asr, tts=EspeakTTS())
        backend.check()
        first, second, _ = tiny_models.play_two_turns(backend, conversation.id, (a0, r0), (a1, r1))
        bodies = [r.json for r in server.requests_to(CHAT)]
        auth = {k.lower(): v for k, v in server.requests_to(CHAT)[0].headers.items()}["authorization"]

    assert auth == "Bearer sk-secret"
    assert "sk-secret" not in str(backend.describe())
    assert [m["role"] for m in bodies[1]["messages"]] == ["system", "user", "assistant", "user"]
    heard0, heard1 = bodies[1]["messages"][1]["content"], bodies[1]["messages"][3]["content"]
    assert bodies[0]["messages"][1]["content"] == heard0  # the same ASR of turn 0 both times
    for heard, turn in ((heard0, conversation.turns[0]), (heard1, conversation.turns[1])):
        assert jiwer.wer(turn.text.lower(), heard.lower().replace(",", "").replace(".", "").replace("?", "")) < 0.5, heard
    assert bodies[1]["messages"][2]["content"] == "The moon is bright tonight."
    for reply, said in ((first, "The moon is bright tonight."), (second, "Goodnight, little star.")):
        assert reply.text == said
        assert reply.sample_rate == 22050 and audio_io.duration(reply.audio, reply.sample_rate) > 0.8
        assert audio_io.silence_share(reply.audio, reply.sample_rate) < 0.7
        assert reply.extra["user_language"] == "en"
    spoken = asr.transcribe(second.audio, second.sample_rate).text.lower()
    assert "night" in spoken or "star" in spoken, spoken


def test_espeak_picks_the_voice_by_language():
    tts = EspeakTTS()
    tts.check()
    english, rate = tts.speak("hello there", "en")
    chinese, _ = tts.speak("你好", "zh")
    assert rate == 22050 and english.size > 0 and chinese.size > 0
    assert not np.array_equal(english[: min(english.size, chinese.size)], chinese[: min(english.size, chinese.size)])


def test_cascade_check_names_what_is_missing(tmp_path: Path):
    asr = WhisperASR(model="packaged:whisper-base")
    with pytest.raises(BackendUnavailable, match=r"'espeak-nope' is not on PATH.*Cascade"):
        Cascade(asr=asr, tts=EspeakTTS(binary="espeak-nope")).check()
    with pytest.raises(BackendUnavailable, match=r"piper"):
        PiperTTS(voices={"en": str(tmp_path / "en.onnx")}, binary="piper-nope").check()
    with FakeServer() as server:
        url = server.url
    with pytest.raises(BackendUnavailable, match=rf"no OpenAI-compatible LLM at model.backend.llm_base_url={url}/v1"):
        Cascade(llm_base_url=url + "/v1", asr=asr, tts=EspeakTTS()).check()


def test_espeak_unknown_voice_fails_in_check():
    with pytest.raises(BackendUnavailable, match=r"espeak-ng has no voice\(s\) \['no-such-voice'\]"):
        EspeakTTS(voices={"en": "no-such-voice"}).check()


# ---------------------------------------------------------------- Kimi-Audio


def test_kimi_audio_chats_and_reply():
    conversation = english_two_turns()
    (a0, r0), (a1, r1) = [audio_io.read(t.audio_path) for t in conversation.turns]
    seen: list[list[dict]] = []

    def generate(chats: list[dict]):
        seen.append(chats)
        for chat in chats:  # the files exist while generate runs, and hold the user's audio
            if chat["message_type"] == "audio":
                assert audio_io.read(chat["content"])[0].size > 0
        return np.full(24000, 0.1, np.float32), " Sure. "

    backend = kimi_audio.KimiAudio(generate=generate)
    backend.check()
    history = [
        Message("user", audio=a0, sample_rate=r0),
        Message("assistant", text="Yes."),
        Message("user", audio=a1, sample_rate=r1),
    ]
    reply = backend.respond(history, TurnContext(conversation.id, 1))
    assert reply.text == "Sure." and reply.sample_rate == 24000 and reply.audio.shape == (24000,)
    assert [(c["role"], c["message_type"]) for c in seen[0]] == [("user", "audio"), ("assistant", "text"), ("user", "audio")]
    assert seen[0][1]["content"] == "Yes."
    assert not Path(seen[0][0]["content"]).exists()  # temporary files are cleaned up
    assert "history_exchanges_dropped" not in reply.extra


def test_kimi_audio_long_history_keeps_the_latest_exchanges_that_fit():
    rate = 16000
    turns = [np.full(rate * 40, 0.1, np.float32) for _ in range(4)]  # 4 x 40 s of user audio > the 100 s budget
    history = []
    for i, audio in enumerate(turns):
        history.append(Message("user", audio=audio, sample_rate=rate))
        if i < 3:
            history.append(Message("assistant", text=f"r{i}"))
    kept, dropped = kimi_audio.fit_history([Message("system", text="s"), *history], max_audio_s=100)
    assert dropped == 2
    assert [m.role for m in kept] == ["system", "user", "assistant", "user"] and kept[2].text == "r2"
    assert kept[-1] is history[-1]


def test_kimi_audio_check_names_the_missing_package():
    with pytest.raises(BackendUnavailable, match=r"'kimia_infer.api.kimia' is not importable.*section 'Kimi-Audio'"):
        kimi_audio.KimiAudio().check()
