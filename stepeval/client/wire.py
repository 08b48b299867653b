"""The wire client: any model behind OpenAI chat completions with audio in and out.

One format covers OpenAI, vLLM, vllm-omni and ``stepeval serve``. The retry policy is ours,
not the SDK's (its retries are off), so every retry is recorded with the turn. A turn that
still fails raises; the replay engine records it as failed and the run goes on.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import openai

from stepeval import audio as audio_io
from stepeval.client import history as history_mod
from stepeval.client.endpoints import Endpoint, EndpointPool, Slot
from stepeval.transport import AttemptError, Attempts, RetryPolicy, TransportError, call_with_retries
from stepeval.transport.clients import quiet_http_logs
from stepeval.types import Message, Reply, TurnContext, TurnFailed

AUDIO_FORMATS = ("wav", "mp3", "flac", "opus", "pcm16")
PCM16_RATE = 24000  # the OpenAI API's raw pcm16 is 24 kHz mono little-endian
UNSET = object()


class MalformedReply(TurnFailed):
    """The endpoint answered 200 with something that is not a usable chat completion."""


@dataclass
class WireSettings:
    """What the client sends and how hard it tries (built from the model config by build.py)."""

    wire_model: str
    sampling: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=lambda: ["text", "audio"])
    voice: str | None = None
    audio_format: str = "wav"
    stream: bool = False
    timeout_s: float = 300.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    send_metadata: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.audio_format not in AUDIO_FORMATS:
            raise ValueError(f"model.audio_format={self.audio_format!r}: use one of {AUDIO_FORMATS}")
        unknown = set(self.modalities) - {"text", "audio"}
        if unknown or not self.modalities:
            raise ValueError(f"model.modalities={self.modalities!r}: use [text] or [text, audio]")
        if self.max_retries < 0 or self.timeout_s <= 0:
            raise ValueError("model.max_retries must be >= 0 and model.timeout_s > 0")


def to_wire(history: list[Message], clip_data: Callable[[np.ndarray, int], str] | None = None) -> list[dict]:
    """``Message`` history -> chat messages: user audio as ``input_audio`` parts, assistant turns as text.

    ``clip_data`` gives a clip's ``data`` string (default: its base64 WAV, encoded once per clip); the fast
    request path passes one that leaves a placeholder to splice the kept encoding into the body bytes."""
    clip_data = clip_data or history_mod.wav_base64
    out: list[dict] = []
    for i, message in enumerate(history):
        if message.role == "assistant":
            out.append({"role": "assistant", "content": message.text or ""})
        elif message.role == "system":
            out.append({"role": "system", "content": message.text or ""})
        elif message.role == "user":
            parts: list[dict] = []
            if message.text:
                parts.append({"type": "text", "text": message.text})
            if message.audio is not None:
                if not message.sample_rate:
                    raise ValueError(f"history[{i}]: user audio without a sample rate")
                data = clip_data(message.audio, message.sample_rate)
                parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
            if not parts:
                parts.append({"type": "text", "text": ""})
            out.append({"role": "user", "content": parts[0]["text"] if len(parts) == 1 and "text" in parts[0] else parts})
        else:
            raise ValueError(f"history[{i}]: unknown role {message.role!r}")
    return out


def decode_audio(data: bytes, fmt: str, where: str) -> tuple[np.ndarray, int]:
    audio, rate, _ = decode_storable_audio(data, fmt, where)
    return audio, rate


def decode_storable_audio(data: bytes, fmt: str, where: str) -> tuple[np.ndarray, int, bool]:
    """(samples, rate, whether ``data`` may be stored as it came: a complete mono 16-bit WAV, ``audio.decode_storable``)."""
    if fmt == "pcm16":
        if len(data) % 2:
            raise MalformedReply(f"{where}: pcm16 audio has an odd number of bytes ({len(data)})")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, PCM16_RATE, False
    try:
        return audio_io.decode_storable(data, source=f"{fmt} audio from {where}")
    except ValueError as err:
        raise MalformedReply(str(err)) from None


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedReply(f"{where}: audio data is {type(text).__name__}, not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise MalformedReply(f"{where}: audio data is not valid base64 ({err})") from None


class WireClient:
    """An async ``Responder`` over ``openai.AsyncOpenAI``, spread over one or more endpoints."""

    def __init__(self, endpoints: list[Endpoint], settings: WireSettings, rng: random.Random | None = None):
        self.pool = EndpointPool(endpoints)
        self.settings = settings
        self.speaks = "audio" in settings.modalities
        self.takes_text = True  # chat completions carry text user turns; whether the model reads them is its business
        self._rng = rng or random.Random()
        # Retry-After is obeyed up to the backoff cap: a turn waits at most max_backoff_s between attempts
        self.policy = RetryPolicy(settings.max_retries, settings.backoff_s, settings.max_backoff_s, settings.max_backoff_s)
        quiet_http_logs()  # errors are recorded per turn

    @property
    def capacity(self) -> int:
        return self.pool.capacity

    def prepare_clip(self, audio: np.ndarray, rate: int) -> None:
        """Encode a user clip for the wire ahead of its turn (the replay stage calls this in its reader thread,
        so the event loop only splices the kept encoding in)."""
        history_mod.wav_base64(audio, rate)

    def describe(self) -> dict:
        """What determines the replies; never endpoint URLs, keys, timeouts or retries (replicas must not matter)."""
        s = self.settings
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "wire_model": s.wire_model,
            "sampling": dict(s.sampling),
            "modalities": list(s.modalities),
            "voice": s.voice if self.speaks else None,
            "audio_format": s.audio_format if self.speaks else None,
            "extra_body": dict(s.extra_body),
        }

    def request(self, history: list[Message], context: TurnContext) -> dict:
        """The chat completion body for one turn (everything but ``model``/``messages`` goes in extra fields)."""
        s = self.settings
        body: dict[str, Any] = {"model": s.wire_model, "messages": to_wire(history), "modalities": list(s.modalities)}
        if self.speaks:
            body["audio"] = {"format": s.audio_format} if s.voice is None else {"voice": s.voice, "format": s.audio_format}
        sampling = dict(s.sampling)
        seed = sampling.pop("seed", UNSET)
        body.update({k: v for k, v in sampling.items() if v is not None})
        if seed is UNSET:
            body["seed"] = context.seed  # the run's seed, unless the model config sets (or nulls) its own
        elif seed is not None:
            body["seed"] = seed
        if s.send_metadata:
            body["metadata"] = {"conversation_id": str(context.conversation_id), "turn": str(context.turn)}
        if s.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(s.extra_body)
        return body

    async def respond(self, history: list[Message], context: TurnContext) -> Reply:
        body = self.request(history, context)
        attempts = Attempts()
        tried: list[int] = []  # the endpoint of each attempt
        served_by: list[str] = []

        async def attempt() -> Reply:
            started = time.perf_counter()
            async with self.pool.slot() as slot:
                tried.append(slot.endpoint.index)
                served_by[:] = [slot.endpoint.served_by]
                try:
                    if self.settings.stream:
                        return await self._stream(slot, body, started)
                    return await self._once(slot, body, started)
                except (openai.APIConnectionError, openai.APIStatusError) as err:
                    if isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError):
                        self.pool.mark_down(slot.endpoint)  # refused or dropped: retries go to the other replicas
                    raise AttemptError(err, slot.endpoint.where) from None
            # the slot is released before the wait: another conversation may use the endpoint meanwhile,
            # and the retry goes to whichever endpoint is least busy then

        try:
            timeout_s = self.settings.timeout_s
            reply = await call_with_retries(attempt, self.policy, "wire", attempts, timeout_s=timeout_s, rng=self._rng)
        except TransportError as err:
            raise TurnFailed(err.message) from None
        retries = [{"endpoint": i, **r} for i, r in zip(tried, attempts.retries(), strict=False)]
        reply.extra.update({"endpoint": tried[-1], "attempts": attempts.count, "retries": retries})
        reply.extra["served_by"] = served_by[-1]  # the replay record's served_by
        return reply

    async def _once(self, slot: Slot, body: dict, started: float) -> Reply:
        client, endpoint = slot.client(), slot.endpoint
        # the SDK's generic POST (its documented way to send a body as is): the typed create() walks every
        # base64 audio string of the history to transform it, which costs more CPU than the whole request
        raw = await client.post("/chat/completions", cast_to=httpx.Response, body=body)
        total = time.perf_counter() - started
        where = endpoint.where
        try:
            data = json.loads(raw.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MalformedReply(f"{where}: reply is not JSON ({err}): {raw.text[:200]!r}") from None
        reply = parse_completion(data, self.settings.audio_format, where)
        reply.timings["total_s"] = round(total, 4)
        return reply

    async def _stream(self, slot: Slot, body: dict, started: float) -> Reply:
        client, endpoint = slot.client(), slot.endpoint
        kwargs = {"model": body["model"], "messages": body["messages"]}
        extra = {k: v for k, v in body.items() if k not in (*kwargs, "stream")}
        where = endpoint.where
        chunks: list[dict] = []
        first_audio = first_text = None
        stream = await client.chat.completions.create(**kwargs, stream=True, extra_body=extra)
        try:
            async for chunk in stream:
                item = chunk.to_dict()
                for choice in item.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if first_audio is None and (delta.get("audio") or {}).get("data"):
                        first_audio = time.perf_counter() - started
                    if first_text is None and delta.get("content"):
                        first_text = time.perf_counter() - started
                chunks.append(item)
        except json.JSONDecodeError as err:
            raise MalformedReply(f"{where}: a streamed chunk is not JSON ({err})") from None
        finally:
            await stream.close()
        reply = parse_stream(chunks, self.settings.audio_format, where)
        reply.timings["total_s"] = round(time.perf_counter() - started, 4)
        if first_audio is not None:
            reply.timings["first_audio_s"] = round(first_audio, 4)
        if first_text is not None:
            reply.timings["first_text_s"] = round(first_text, 4)
        return reply

    async def aclose(self) -> None:
        await self.pool.aclose()


def parse_completion(data: Any, fmt: str, where: str) -> Reply:
    """A chat completion (dict) -> Reply, looking through every choice (vllm-omni puts audio in its own)."""
    if not isinstance(data, dict):
        raise MalformedReply(f"{where}: reply is {type(data).__name__}, not a JSON object")
    if "error" in data and not data.get("choices"):
        raise MalformedReply(f"{where}: reply is an error: {str(data['error'])[:300]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply(f"{where}: reply has no choices")
    reply = Reply()
    for n, choice in enumerate(choices):
        message = (choice or {}).get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise MalformedReply(f"{where}: choices[{n}] has no message")
        if message.get("content") and reply.text is None:
            reply.text = message["content"]
        sound = message.get("audio")
        if isinstance(sound, dict) and sound.get("data") and reply.audio is None:
            raw = _b64(sound["data"], f"{where} choices[{n}]")
            reply.audio, reply.sample_rate, storable = decode_storable_audio(raw, fmt, where)
            reply.encoded = raw if storable else None
            reply.extra["audio_id"] = sound.get("id")
        if isinstance(sound, dict) and sound.get("transcript") and reply.transcript is None:
            reply.transcript = sound["transcript"]
    if reply.text is None and reply.audio is None:
        raise MalformedReply(f"{where}: reply has neither text nor audio in any of its {len(choices)} choice(s)")
    reply.usage = dict(data.get("usage") or {})
    reply.extra.update({"id": data.get("id"), "finish_reason": [c.get("finish_reason") for c in choices]})
    return reply


def parse_stream(chunks: list[dict], fmt: str, where: str) -> Reply:
    """Streamed chunks -> Reply: text and transcript deltas joined, audio deltas decoded and joined per choice."""
    text: dict[int, list[str]] = {}
    transcript: dict[int, list[str]] = {}
    audio: dict[int, list[bytes]] = {}
    usage: dict = {}
    for item in chunks:
        usage = item.get("usage") or usage
        for choice in item.get("choices") or []:
            n = choice.get("index", 0)
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text.setdefault(n, []).append(delta["content"])
            sound = delta.get("audio") or {}
            if sound.get("data"):
                audio.setdefault(n, []).append(_b64(sound["data"], f"{where} stream choice {n}"))
            if sound.get("transcript"):
                transcript.setdefault(n, []).append(sound["transcript"])
    if not chunks:
        raise MalformedReply(f"{where}: the stream ended without a chunk")
    reply = Reply(usage=dict(usage))
    if text:
        reply.text = "".join(text[min(text)])
    if transcript:
        reply.transcript = "".join(transcript[min(transcript)])
    if audio:
        pieces = audio[min(audio)]
        if fmt != "pcm16" and len(pieces) > 1 and all(_looks_whole(p) for p in pieces):
            decoded = [decode_audio(p, fmt, where) for p in pieces]  # each chunk a file of its own
            if len({rate for _, rate in decoded}) != 1:
                raise MalformedReply(f"{where}: streamed audio chunks disagree on sample rate")
            reply.audio, reply.sample_rate = np.concatenate([a for a, _ in decoded]), decoded[0][1]
        else:
            reply.audio, reply.sample_rate = decode_audio(b"".join(pieces), fmt, where)
    if reply.text is None and reply.audio is None:
        raise MalformedReply(f"{where}: the stream carried neither text nor audio")
    return reply


def _looks_whole(data: bytes) -> bool:
    return data[:4] in (b"RIFF", b"fLaC", b"OggS") or data[:3] == b"ID3"
