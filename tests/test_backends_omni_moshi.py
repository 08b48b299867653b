"""Qwen2.5-Omni (thinker + talker + token2wav) and Moshi on tiny random checkpoints of the real
transformers classes, through their backends, for a 2-turn conversation of the bundled sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepeval import audio as audio_io
from stepeval.backends import moshi as moshi_mod
from stepeval.backends.moshi import Moshi
from stepeval.backends.qwen2_5_omni import SYSTEM_PROMPT, Qwen25Omni
from stepeval.types import Message, TurnContext
from tests import tiny_models

pytestmark = pytest.mark.slow  # tiny transformers models


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


def test_qwen2_5_omni_speaks_two_turns(tiny_omni: Path, omni_processor: None):
    backend = Qwen25Omni(model_path=str(tiny_omni), device="cpu", max_new_tokens=5, talker_max_new_tokens=8)
    assert backend.speaks is True
    backend.check()
    conversation, [(a0, r0), (a1, r1)] = tiny_models.sample_two_turns()
    first, second, history = tiny_models.play_two_turns(backend, conversation.id, (a0, r0), (a1, r1))
    for reply in (first, second):
        assert isinstance(reply.text, str) and 0 < reply.usage["completion_tokens"] <= 5
        assert reply.sample_rate == 24000 and reply.audio.dtype == np.float32 and reply.audio.size > 0
        assert np.isfinite(reply.audio).all()
    assert second.usage["prompt_tokens"] > first.usage["prompt_tokens"] + 50  # both user turns' audio are in the prompt
    # the documented system prompt is the first message the model sees
    _, processor = backend.loaded()
    from stepeval.backends._hf import chat_with_audio

    chat, audios = chat_with_audio(history, 16000, backend.system_prompt)
    assert chat[0]["content"][0]["text"] == SYSTEM_PROMPT and len(audios) == 2
    assert processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False).count("<|AUDIO|>") == 2


def test_qwen2_5_omni_text_only_mode(tiny_omni: Path, omni_processor: None):
    backend = Qwen25Omni(model_path=str(tiny_omni), device="cpu", max_new_tokens=4, speak=False)
    assert backend.speaks is False
    backend.check()
    conversation, [(a0, r0), _] = tiny_models.sample_two_turns()
    reply = backend.respond([Message("user", audio=a0, sample_rate=r0)], TurnContext(conversation.id, 0))
    assert isinstance(reply.text, str) and reply.audio is None and reply.sample_rate is None


@pytest.fixture(scope="module")
def tiny_moshi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.moshi(tmp_path_factory.mktemp("tiny-moshi"))


def test_moshi_two_turns_in_one_session_cut_by_time(tiny_moshi: Path):
    backend = Moshi(model_path=str(tiny_moshi), device="cpu", reply_s=1.2, gap_s=0.5)
    backend.check()
    conversation, [(a0, r0), (a1, r1)] = tiny_models.sample_two_turns()
    first, second, history = tiny_models.play_two_turns(backend, conversation.id, (a0, r0), (a1, r1))
    for reply in (first, second):
        assert reply.sample_rate == 24000
        assert reply.audio.size == int(1.2 * 12.5) * 1920  # reply_s of 12.5 Hz frames of 1920 samples
        assert isinstance(reply.text, str)
    # the second session replays turn 0, Moshi's own first reply on its stream, then turn 1
    user, said = moshi_mod.session_streams(history, 24000, 0.5, {first.text: first.audio})
    a0_24k, a1_24k = audio_io.resample(a0, r0, 24000), audio_io.resample(a1, r1, 24000)
    assert user.size == said.size == a0_24k.size + first.audio.size + a1_24k.size
    assert np.array_equal(said[a0_24k.size : a0_24k.size + first.audio.size], first.audio)
    assert not said[: a0_24k.size].any() and not user[a0_24k.size : a0_24k.size + first.audio.size].any()
    assert np.allclose(user[-a1_24k.size :], a1_24k)


def test_moshi_session_without_the_earlier_reply_audio_uses_a_silent_gap():
    rate = 24000
    history = [
        Message("user", audio=np.ones(rate, np.float32), sample_rate=rate),
        Message("assistant", text="not produced by this backend"),
        Message("user", audio=np.ones(rate // 2, np.float32), sample_rate=rate),
    ]
    user, said = moshi_mod.session_streams(history, rate, 0.25, {})
    assert user.size == said.size == rate + rate // 4 + rate // 2
    assert not said.any()
    with pytest.raises(ValueError, match="audio for every user turn"):
        moshi_mod.session_streams([Message("user", text="hi")], rate, 0.25, {})
