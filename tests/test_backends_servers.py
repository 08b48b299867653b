"""Backends whose model needs its own repository or a server: tested at their seams.

GLM-4-Voice's ``/generate_stream`` protocol, Step-Audio 2's ``tts_content`` replies and
Step-Audio-Chat's completions endpoint run against a real HTTP server on 127.0.0.1 sending the
real wire format; the repository-dependent pieces (speech tokenizers, decoders, token2wav)
are injected as small deterministic functions; check() must name what is missing.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stepeval import audio as audio_io
from stepeval.backends import glm4_voice, step_audio2_mini, step_audio_chat
from stepeval.backends._hf import BackendUnavailable
from stepeval.data import loader, sources
from stepeval.types import Message, TurnContext
from tests import tiny_models
from tests.http_fake import FakeServer, Scripted

CTX = TurnContext("c1", 0, 0)


def sample_turns() -> list[tuple[np.ndarray, int]]:
    conversation = next(c for c in loader.load(sources.bundled_sample()).conversations if len(c.turns) == 2)
    return [audio_io.read(t.audio_path) for t in conversation.turns]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def rms_codes(audio: np.ndarray, rate: int, per_second: float = 12.5, levels: int = 64) -> list[int]:
    """A stand-in speech tokenizer: one code per frame (12.5 frames/s, as WhisperVQ), from the frame's level."""
    frame = int(rate / per_second)
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    return [int(v) for v in np.minimum(np.sqrt((frames**2).mean(axis=1)) * 400, levels - 1)]


def tones(codes: list[int], rate: int, seconds_per_code: float = 0.04) -> tuple[np.ndarray, int]:
    """A stand-in decoder: one short tone per code, pitch from the code."""
    n = int(rate * seconds_per_code)
    t = np.arange(n) / rate
    return np.concatenate([0.2 * np.sin(2 * np.pi * (200 + 10 * c) * t) for c in codes]).astype(np.float32), rate


# ---------------------------------------------------------------- GLM-4-Voice


@pytest.fixture(scope="module")
def glm_tokenizer():
    special = ["<|system|>", "<|user|>", "<|assistant|>", "<|begin_of_audio|>", "<|end_of_audio|>"]
    return tiny_models.byte_tokenizer(special + [f"<|audio_{i}|>" for i in range(64)])


def glm_backend(url: str, tokenizer, **kwargs) -> glm4_voice.GLM4Voice:
    return glm4_voice.GLM4Voice(
        server_url=url,
        text_tokenizer=tokenizer,
        speech_tokenizer=rms_codes,
        decoder=lambda codes: tones(codes, glm4_voice.DECODER_RATE),
        **kwargs,
    )


def token_lines(ids: list[int]) -> list[bytes]:
    return [json.dumps({"token_id": i}).encode() + b"\n" for i in ids]


def test_split_tokens_at_the_audio_offset_and_stops_at_user():
    split = glm4_voice.split_tokens([5, 6, 100, 103, 7, 101, 50, 9, 100], audio_offset=100, end_id=50)
    assert split.text_ids == [5, 6, 7]
    assert split.audio_codes == [0, 3, 1]
    assert split.all_ids == [5, 6, 100, 103, 7, 101]


def test_glm4_voice_two_turns_over_generate_stream(glm_tokenizer):
    (a0, r0), (a1, r1) = sample_turns()
    offset = glm_tokenizer.convert_tokens_to_ids("<|audio_0|>")
    end = glm_tokenizer.convert_tokens_to_ids("<|user|>")
    text_a, text_b = glm_tokenizer.encode("Hi "), glm_tokenizer.encode("there")
    stream1 = text_a + [offset + 3, offset + 9, offset + 1] + text_b + [offset + 4, end] + text_a  # after <|user|>: ignored
    stream2 = glm_tokenizer.encode("ok") + [offset + 2, end]
    with FakeServer() as server:
        server.script("/generate_stream", Scripted(lines=token_lines(stream1)), Scripted(lines=token_lines(stream2)))
        backend = glm_backend(server.url, glm_tokenizer, temperature=0.3, top_p=0.7, max_new_tokens=321)
        backend.check()
        first = backend.respond([Message("user", audio=a0, sample_rate=r0)], CTX)
        history = [
            Message("user", audio=a0, sample_rate=r0),
            Message("assistant", text=first.text),
            Message("user", audio=a1, sample_rate=r1),
        ]
        second = backend.respond(history, TurnContext("c1", 1, 0))
        requests = server.requests_to("/generate_stream")

    assert first.text == "Hi there"
    assert first.sample_rate == glm4_voice.DECODER_RATE
    assert np.allclose(first.audio, tones([3, 9, 1, 4], glm4_voice.DECODER_RATE)[0])
    assert first.extra["audio_tokens"] == 4
    assert second.text == "ok" and second.extra["audio_tokens"] == 1

    body1, body2 = requests[0].json, requests[1].json
    assert {k: body1[k] for k in ("temperature", "top_p", "max_new_tokens")} == {
        "temperature": 0.3,
        "top_p": 0.7,
        "max_new_tokens": 321,
    }
    codes0 = rms_codes(audio_io.resample(a0, r0, 16000), 16000)
    assert len(codes0) == int(len(a0) / r0 * 12.5)
    expected1 = (
        f"<|system|>\n{glm4_voice.DEFAULT_SYSTEM}<|user|>\n<|begin_of_audio|>"
        + "".join(f"<|audio_{c}|>" for c in codes0)
        + "<|end_of_audio|><|assistant|>streaming_transcription\n"
    )
    assert body1["prompt"] == expected1
    # turn 2 = turn-1 prompt + the full turn-1 completion (text and audio tokens, as the web demo keeps it) + the new user block
    completion = glm_tokenizer.decode(stream1[: stream1.index(end)], spaces_between_special_tokens=False)
    assert "<|audio_9|>" in completion and "Hi" in completion
    assert body2["prompt"].startswith(expected1 + completion + "<|user|>\n<|begin_of_audio|>")
    assert body2["prompt"].endswith("<|end_of_audio|><|assistant|>streaming_transcription\n")


def test_glm4_voice_text_only_history_and_bad_stream_lines(glm_tokenizer):
    prompt = glm4_voice.build_prompt(
        [
            Message("system", text="S"),
            Message("user", text="hello"),
            Message("assistant", text="unknown reply"),
            Message("user", text="x"),
        ],
        tokenize=lambda m: [],
        system_prompt="unused",
    )
    block = "<|assistant|>streaming_transcription\n"
    assert prompt == f"<|system|>\nS<|user|>\nhello{block}unknown reply<|user|>\nx{block}"
    with FakeServer() as server:
        server.script(
            "/generate_stream", Scripted(lines=[b'{"token_id": 5}\n', b"not json\n"]), Scripted(status=500, json={"e": 1})
        )
        backend = glm_backend(server.url, glm_tokenizer)
        (a0, r0), _ = sample_turns()
        with pytest.raises(RuntimeError, match=r"/generate_stream sent a line that is not"):
            backend.respond([Message("user", audio=a0, sample_rate=r0)], CTX)
        with pytest.raises(RuntimeError, match=r"answered HTTP 500"):
            backend.respond([Message("user", audio=a0, sample_rate=r0)], CTX)


def test_glm4_voice_check_names_the_missing_server_and_repo(glm_tokenizer, tmp_path: Path):
    url = closed_port_url()
    with pytest.raises(
        BackendUnavailable, match=rf"no model server at model.backend.server_url={url}.*model_server.py.*GLM-4-Voice"
    ):
        glm4_voice.GLM4Voice(server_url=url, repo_path=str(tmp_path)).check()
    with FakeServer() as server:
        with pytest.raises(
            BackendUnavailable, match=r"model.backend.repo_path is not set; see docs/models.md, section 'GLM-4-Voice'"
        ):
            glm4_voice.GLM4Voice(server_url=server.url).check()
        with pytest.raises(BackendUnavailable, match=r"lacks flow_inference.py, speech_tokenizer"):
            glm4_voice.GLM4Voice(server_url=server.url, repo_path=str(tmp_path)).check()


# ---------------------------------------------------------------- Step-Audio 2 mini


def step2_reply(text: str | None, tokens: str | None) -> dict:
    message = {"role": "assistant", "content": None, "tts_content": {"tts_text": text, "tts_audio": tokens}}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "step-audio-2-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
    }


def test_step_audio2_request_shape_and_tts_content_reply():
    (a0, r0), (a1, r1) = sample_turns()
    long_user = np.concatenate([a1] * 13)  # > 50 s: three input_audio chunks of at most 25 s
    decoded: list[list[int]] = []

    def token2wav(codes: list[int]) -> tuple[np.ndarray, int]:
        decoded.append(codes)
        return tones(codes, 24000)

    with FakeServer() as server:
        server.script("/v1/models", Scripted(json={"object": "list", "data": [{"id": "step-audio-2-mini"}]}))
        server.script("/v1/chat/completions", Scripted(json=step2_reply("你好！", "<audio_12><audio_7><audio_6000>")))
        backend = step_audio2_mini.StepAudio2Mini(base_url=server.url + "/v1", system_prompt="Be brief.", token2wav=token2wav)
        backend.check()
        history = [
            Message("user", audio=a0, sample_rate=r0),
            Message("assistant", text="earlier"),
            Message("user", audio=long_user, sample_rate=r1),
        ]
        reply = backend.respond(history, CTX)
        body = server.requests_to("/v1/chat/completions")[0].json

    assert reply.text == "你好！"
    assert reply.sample_rate == 24000 and np.allclose(reply.audio, tones([12, 7, 6000], 24000)[0])
    assert decoded == [[12, 7, 6000]] and reply.extra["audio_tokens"] == 3
    assert reply.usage["completion_tokens"] == 9
    assert [m["role"] for m in body["messages"]] == ["system", "human", "assistant", "human", "assistant"]
    assert body["messages"][-1] == {"role": "assistant", "content": "<tts_start>"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][2] == {"role": "assistant", "content": "earlier"}
    chunks = body["messages"][3]["content"]
    assert [p["type"] for p in chunks] == ["input_audio"] * 3
    seconds = []
    for part in chunks:
        assert part["input_audio"]["format"] == "wav"
        samples, rate = sf.read(io.BytesIO(__import__("base64").b64decode(part["input_audio"]["data"])))
        assert rate == 16000
        seconds.append(len(samples) / rate)
    assert max(seconds) <= 25.0 and sum(seconds) == pytest.approx(len(long_user) / r1, abs=0.01)


def test_step_audio2_text_only_reply_and_malformed_body():
    assert step_audio2_mini.parse_reply({"choices": [{"message": {"content": "plain"}}]}, "u") == ("plain", [])
    with pytest.raises(RuntimeError, match=r"server http://x/v1/chat/completions: reply has no choices"):
        step_audio2_mini.parse_reply({"error": "boom"}, "http://x/v1/chat/completions")


def test_step_audio2_check_names_server_and_repo(tmp_path: Path):
    url = closed_port_url() + "/v1"
    with pytest.raises(BackendUnavailable, match=rf"no server at model.backend.base_url={url}.*Step-Audio 2 mini"):
        step_audio2_mini.StepAudio2Mini(base_url=url).check()
    with FakeServer() as server:
        server.fallback = lambda request: Scripted(json={"object": "list", "data": []})
        with pytest.raises(BackendUnavailable, match=r"model.backend.repo_path is not set"):
            step_audio2_mini.StepAudio2Mini(base_url=server.url + "/v1").check()
        (tmp_path / "token2wav.py").write_text("")
        with pytest.raises(BackendUnavailable, match=r"model.backend.token2wav_path is not set"):
            step_audio2_mini.StepAudio2Mini(base_url=server.url + "/v1", repo_path=str(tmp_path)).check()


# ---------------------------------------------------------------- Step-Audio-Chat


def audio_token_string(audio: np.ndarray, rate: int) -> str:
    return "".join(f"<audio_{c}>" for c in rms_codes(audio, rate, per_second=25, levels=1024))


def test_step_audio_chat_prompt_format():
    (a0, r0), _ = sample_turns()
    tokens = audio_token_string(audio_io.resample(a0, r0, 16000), 16000)
    prompt = step_audio_chat.build_prompt(
        [Message("user", audio=a0, sample_rate=r0), Message("assistant", text="好的"), Message("user", text="再说一遍")],
        audio_token_string,
        system_prompt=step_audio_chat.DEFAULT_SYSTEM,
    )
    assert prompt == (
        f"<|BOT|>system\n{step_audio_chat.DEFAULT_SYSTEM}<|EOT|>"
        f"<|BOT|>human\n{tokens}<|EOT|>"
        "<|BOT|>assistant\n好的<|EOT|>"
        "<|BOT|>human\n再说一遍<|EOT|>"
        "<|BOT|>assistant\n"
    )


def test_step_audio_chat_through_the_completions_endpoint():
    (a0, r0), (a1, r1) = sample_turns()
    spoken: list[str] = []

    def tts(text: str) -> tuple[np.ndarray, int]:
        spoken.append(text)
        return tones([len(text)], 22050)

    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "step-audio-chat",
        "choices": [{"index": 0, "text": "（RAP）月亮月亮<|EOT|>", "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 80, "completion_tokens": 6, "total_tokens": 86},
    }
    with FakeServer() as server:
        server.script("/v1/models", Scripted(json={"object": "list", "data": [{"id": "step-audio-chat"}]}))
        server.script("/v1/completions", Scripted(json=completion))
        backend = step_audio_chat.StepAudioChat(llm_url=server.url + "/v1", audio_tokenizer=audio_token_string, tts=tts)
        backend.check()
        history = [
            Message("user", audio=a0, sample_rate=r0),
            Message("assistant", text="好"),
            Message("user", audio=a1, sample_rate=r1),
        ]
        reply = backend.respond(history, CTX)
        body = server.requests_to("/v1/completions")[0].json

    assert body["prompt"] == step_audio_chat.build_prompt(history, audio_token_string, step_audio_chat.DEFAULT_SYSTEM)
    assert body["model"] == "step-audio-chat"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 2048)
    assert body["stop"] == ["<|EOT|>"]
    assert reply.text == "（RAP）月亮月亮" and spoken == ["（RAP）月亮月亮"]  # the style tag reaches the TTS
    assert reply.sample_rate == 22050 and reply.audio.size > 0


def test_step_audio_chat_check_names_what_is_missing(tmp_path: Path):
    url = closed_port_url() + "/v1"
    with pytest.raises(BackendUnavailable, match=rf"no LLM server at model.backend.llm_url={url}.*section 'Step-Audio-Chat'"):
        step_audio_chat.StepAudioChat(llm_url=url, repo_path=str(tmp_path)).check()
    with FakeServer() as server:
        server.fallback = lambda request: Scripted(json={"object": "list", "data": []})
        with pytest.raises(BackendUnavailable, match=r"model.backend.repo_path is not set"):
            step_audio_chat.StepAudioChat(llm_url=server.url + "/v1").check()
        for name in ("tokenizer.py", "tts.py"):
            (tmp_path / name).write_text("")
        with pytest.raises(BackendUnavailable, match=r"model.backend.tokenizer_path is not set"):
            step_audio_chat.StepAudioChat(llm_url=server.url + "/v1", repo_path=str(tmp_path)).check()


def test_stepeval_run_with_a_missing_server_stops_before_any_turn(tmp_path: Path):
    from tests.run_helpers import stepeval_run

    url = closed_port_url() + "/v1"
    done = stepeval_run(tmp_path, "model=step_audio2_mini", f"model.backend.base_url={url}", "dataset=sample", "asr=none")
    assert done.returncode != 0
    assert f"no server at model.backend.base_url={url}" in done.stderr
    assert "docs/models.md, section 'Step-Audio 2 mini'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.rglob("replay.jsonl"))  # no turn ran
