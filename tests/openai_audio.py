"""Replies as the OpenAI API (and vllm-omni) send them for audio chat, for the shared fake server."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import soundfile as sf

from tests.http_fake import Scripted


def tone(seconds: float = 0.5, rate: int = 24000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encoded(samples: np.ndarray, rate: int, fmt: str = "wav") -> bytes:
    """Bytes as a server would send them in ``message.audio.data`` (before base64)."""
    if fmt == "pcm16":
        return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    if fmt == "opus":
        sf.write(buf, samples, rate, format="OGG", subtype="OPUS")
    else:
        sf.write(buf, samples, rate, format={"wav": "WAV", "flac": "FLAC", "mp3": "MP3"}[fmt])
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def completion(
    audio_b64: str | None = None, transcript: str = "", content: str | None = None, model: str = "gpt-4o-audio-preview"
) -> dict:
    """``POST /v1/chat/completions`` as OpenAI answers it with ``modalities: [text, audio]``."""
    now = int(time.time())
    audio = (
        None
        if audio_b64 is None
        else {"id": "audio_6772f1a", "data": audio_b64, "expires_at": now + 3600, "transcript": transcript}
    )
    return {
        "id": "chatcmpl-AXq1ZbKk3",
        "object": "chat.completion",
        "created": now,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "audio": audio},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 171,
            "completion_tokens": 89,
            "total_tokens": 260,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 150},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 70, "text_tokens": 19},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_4a5e2c1b",
    }


def omni_completion(text: str, audio_b64: str) -> dict:
    """vllm-omni: the text in one choice, the audio (24 kHz wav, empty transcript) in another."""
    now = int(time.time())
    return {
        "id": "chatcmpl-9c0e4f",
        "object": "chat.completion",
        "created": now,
        "model": "Qwen/Qwen2.5-Omni-7B",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text, "audio": None}, "finish_reason": "stop"},
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "audio": {"id": "audio-1", "data": audio_b64, "expires_at": now, "transcript": ""},
                },
                "finish_reason": "stop",
            },
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160},
    }


def sse(chunks: list[dict]) -> Scripted:
    """A streamed reply: server-sent events, one ``data:`` line per chunk, then ``[DONE]``."""
    lines = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
    return Scripted(lines=lines, content_type="text/event-stream")


def chunk(delta: dict, index: int = 0, usage: dict | None = None, finish: str | None = None) -> dict:
    choices = [] if usage is not None else [{"index": index, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-stream1",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "gpt-4o-audio-preview",
        "choices": choices,
        "usage": usage,
    }
