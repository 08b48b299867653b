"""The wire client: any model behind OpenAI chat completions with audio in and out.

One format covers OpenAI, vLLM, vllm-omni and ``stepeval serve``. The retry policy is ours,
not the SDK's (its retries are off), so every retry is recorded with the turn. A turn that
still fails raises; the replay engine records it as failed and the run goes on.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import openai

from stepeval import audio as audio_io
from stepeval.client import history as history_mod
from stepeval.client import timing
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
    warmup_turns: int = 0  # latency_mode=serial: requests each endpoint answers, untimed, before its first timed turn

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
        self._warmed: set[int] = set()
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
        entered = timing.now()  # queue_s runs from here to the answering attempt's request write

        async def attempt() -> Reply:
            async with self.pool.slot() as slot:
                tried.append(slot.endpoint.index)
                served_by[:] = [slot.endpoint.served_by]
                warmed = await self._warm_up(slot, body)  # the warm-up is not this turn's queue
                marks = timing.Marks(entered + warmed, streamed=self.settings.stream)
                in_flight = slot.endpoint.in_flight  # this request included: the load it was measured under
                try:
                    if self.settings.stream:
                        reply = await self._stream(slot, body, marks)
                    else:
                        reply = await self._once(slot, body, marks)
                except (openai.APIConnectionError, openai.APIStatusError) as err:
                    if isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError):
                        self.pool.mark_down(slot.endpoint)  # refused or dropped: retries go to the other replicas
                    raise AttemptError(err, slot.endpoint.where) from None
                timings, missing = marks.timings()
                reply.timings.update(timings)
                reply.extra["timings_missing"] = missing
                reply.extra["latency"] = self.protocol(slot.endpoint, in_flight, marks.hardware)
                return reply
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

    async def _warm_up(self, slot: Slot, body: dict) -> float:
        """``warmup_turns`` untimed requests on an endpoint before its first timed turn (compiled kernels, caches
        and allocators warm, as in steady service); their replies are dropped. Returns the seconds it took."""
        index = slot.endpoint.index
        if not self.settings.warmup_turns or index in self._warmed:
            return 0.0
        self._warmed.add(index)
        began = timing.now()
        for _ in range(self.settings.warmup_turns):
            with contextlib.suppress(Exception):  # a failed warm-up request is not a failed turn
                send = self._stream if self.settings.stream else self._once
                await send(slot, body, timing.Marks(timing.now(), streamed=self.settings.stream))
        return timing.now() - began

    def protocol(self, endpoint: Endpoint, in_flight: int, hardware: str | None = None) -> dict:
        """The load and place a turn's timings were measured under (docs/latency.md): never a key."""
        return {
            "clock": "harness",
            "path": self.path,
            "streamed": self.settings.stream,
            "endpoint": endpoint.url.display,
            "concurrency": endpoint.limit,
            "in_flight": in_flight,
            "hardware": hardware,  # as the server reports it; a declared model.hardware replaces it
        }

    path = "sdk"

    async def _once(self, slot: Slot, body: dict, marks: timing.Marks) -> Reply:
        client, endpoint = slot.client(), slot.endpoint
        # the SDK's generic POST (its documented way to send a body as is): the typed create() walks every
        # base64 audio string of the history to transform it, which costs more CPU than the whole request
        handed = timing.now()
        with traced(client, marks):
            raw = await client.post("/chat/completions", cast_to=httpx.Response, body=body)
        marks.end = timing.now()
        if marks.sent is None:  # no trace: the SDK's client is not an httpx one
            marks.sent = handed
            marks.missing["first_byte_s"] = "the SDK's connection could not be traced (model.http=fast times it)"
        where = endpoint.where
        try:
            data = json.loads(raw.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MalformedReply(f"{where}: reply is not JSON ({err}): {raw.text[:200]!r}") from None
        return parse_completion(data, self.settings.audio_format, where)

    async def _stream(self, slot: Slot, body: dict, marks: timing.Marks) -> Reply:
        client, endpoint = slot.client(), slot.endpoint
        kwargs = {"model": body["model"], "messages": body["messages"]}
        extra = {k: v for k, v in body.items() if k not in (*kwargs, "stream")}
        where = endpoint.where
        chunks: list[dict] = []
        handed = timing.now()
        with traced(client, marks):
            stream = await client.chat.completions.create(**kwargs, stream=True, extra_body=extra)
        marks.sent = marks.sent or handed
        marks.first_byte = marks.first_byte or timing.now()  # the SDK returns the stream once the head is in
        try:
            async for chunk in stream:
                item = chunk.to_dict()
                mark_chunk(marks, item)
                chunks.append(item)
        except json.JSONDecodeError as err:
            raise MalformedReply(f"{where}: a streamed chunk is not JSON ({err})") from None
        finally:
            await stream.close()
        marks.end = timing.now()
        return parse_stream(chunks, self.settings.audio_format, where)

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
        if any(_finished(c) for c in choices):  # the model finished and said nothing: an empty answer, not a fault
            reply.text = ""
            return reply
        raise MalformedReply(f"{where}: reply has neither text nor audio in any of its {len(choices)} choice(s)")
    reply.usage = dict(data.get("usage") or {})
    reply.extra.update({"id": data.get("id"), "finish_reason": [c.get("finish_reason") for c in choices]})
    return reply


def _finished(choice: Any) -> bool:
    """A choice the model ended by itself (stop, or its token budget): with no content it is an empty answer."""
    return isinstance(choice, dict) and choice.get("finish_reason") in ("stop", "length")


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
        else:  # one file cut into pieces (or raw pcm16): stored as a non-streamed reply of the same bytes would be
            joined = b"".join(pieces)
            reply.audio, reply.sample_rate, storable = decode_storable_audio(joined, fmt, where)
            reply.encoded = joined if storable else None
    if reply.text is None and reply.audio is None:
        if any(_finished(c) for item in chunks for c in item.get("choices") or []):
            reply.text = ""  # it finished and said nothing: an empty answer (scored as silence), not a fault
            return reply
        raise MalformedReply(f"{where}: the stream carried neither text nor audio")
    return reply


_MARKS: contextvars.ContextVar[timing.Marks | None] = contextvars.ContextVar("stepeval_marks", default=None)
_SENT = ("http11.send_request_body.complete", "http2.send_request_body.complete")
_HEAD = ("http11.receive_response_headers.complete", "http2.receive_response_headers.complete")


@contextlib.contextmanager
def traced(client: openai.AsyncOpenAI, marks: timing.Marks) -> Iterator[None]:
    """Time the SDK's request on its connection (httpcore's ``trace`` extension, added by an httpx request hook):
    ``sent`` when the body is written, ``first_byte`` when the response head is in. Without the SDK's httpx client
    (``_client``) the caller falls back to when the request was handed over."""
    http = getattr(client, "_client", None)
    hooks = getattr(http, "event_hooks", None)  # duck-typed: the SDK may run on an httpx of its own
    if isinstance(hooks, dict) and _trace_hook not in hooks.get("request", ()):
        http.event_hooks["request"].append(_trace_hook)
    token = _MARKS.set(marks)
    try:
        yield
    finally:
        _MARKS.reset(token)


async def _trace_hook(request: Any) -> None:
    marks = _MARKS.get()
    if marks is None:
        return

    async def trace(name: str, info: dict) -> None:
        if name in _SENT:
            marks.sent = timing.now()
        elif name in _HEAD:
            marks.first_byte = timing.now()

    request.extensions = {**request.extensions, "trace": trace}


def mark_chunk(marks: timing.Marks, item: dict) -> None:
    """Note when a streamed chunk brought the first text and each audio delta (at its arrival)."""
    when = timing.now()
    for choice in item.get("choices") or []:
        delta = choice.get("delta") or {}
        sound = delta.get("audio") or {}
        if sound.get("data"):
            marks.audio(when)
        if delta.get("content") or sound.get("transcript"):  # gpt-4o-audio writes its text as transcript deltas
            marks.text(when)


def _looks_whole(data: bytes) -> bool:
    return data[:4] in (b"RIFF", b"fLaC", b"OggS") or data[:3] == b"ID3"
