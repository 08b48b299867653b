"""A cheaper request path for the wire client: aiohttp instead of the ``openai`` SDK, clips encoded once.

Measured at the replay benchmark, the SDK's request path (httpx, its pool bookkeeping, its request
building) costs 3.2-3.4 ms of harness CPU per turn against 1.6-1.8 ms for aiohttp sending
byte-identical bodies, and with the ``audio`` history policy every earlier user clip was re-encoded
to WAV and base64 on every turn. ``FastWireClient`` is the wire client with both fixed: the same
bodies, the same parsing (``wire.parse_completion``), the same retry policy, because it raises the
SDK's own exception types (``openai.APIStatusError`` with the server's headers, so ``Retry-After``
is honoured; ``openai.APIConnectionError``/``APITimeoutError``) for ``WireClient.respond`` to handle.
It streams too (``stream: true``, server-sent events read as they arrive), and it times each request on
the connection itself (aiohttp's trace hooks): ``t0`` when the body was written, the first byte when the
response head came in (docs/latency.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from typing import Any

import aiohttp
import httpx
import openai

from stepeval.client import history as history_mod
from stepeval.client import timing
from stepeval.client.wire import MalformedReply, WireClient, mark_chunk, parse_completion, parse_stream
from stepeval.client.wire import to_wire as wire_to_wire
from stepeval.types import Message, Reply, TurnContext

# stands for a clip in the JSON skeleton of a body; random per process, so no text can contain it by chance
_TOKEN = f"stepeval-clip-{secrets.token_hex(12)}-"
_SLOT = re.compile(rb'"' + _TOKEN.encode() + rb'(\d+)"')


def to_wire(messages: list[Message], clips: list[tuple] | None = None) -> list[dict]:
    """``wire.to_wire``; with ``clips``, each clip's data is a placeholder and the clip is appended there
    (``encode_body`` splices its kept JSON string in)."""
    if clips is None:
        return wire_to_wire(messages)

    def placeholder(audio, rate: int) -> str:
        clips.append((audio, rate))
        return f"{_TOKEN}{len(clips) - 1}"

    return wire_to_wire(messages, placeholder)


def encode_body(skeleton: dict, clips: list[tuple]) -> bytes:
    """``json.dumps(body)`` of the full body, byte for byte, without scanning megabytes of base64: the
    skeleton is serialised and each placeholder replaced by the clip's kept JSON string."""
    text = json.dumps(skeleton).encode()
    if not clips:
        return text
    return _SLOT.sub(lambda m: history_mod.wav_base64_json(*clips[int(m.group(1))]), text)


def _parse(content: bytes, fmt: str, where: str) -> Reply:
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MalformedReply(f"{where}: reply is not JSON ({err}): {content[:200]!r}") from None
    return parse_completion(data, fmt, where)


def _basic(user: str, password: str) -> str:
    """The Authorization header httpx (the SDK path) sends for URL userinfo: UTF-8, base64."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class _Body(dict):
    """A request body and its JSON bytes, made once per turn (retries send the same bytes)."""

    encoded: bytes = b""


class FastWireClient(WireClient):
    """``WireClient`` over aiohttp (one session per endpoint), clips encoded once per run."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def prepare_clip(self, audio, rate: int) -> None:
        history_mod.wav_base64_json(audio, rate)  # the form ``encode_body`` splices (it keeps the plain one too)

    def request(self, history: list[Message], context: TurnContext) -> dict:
        """The body ``WireClient.request`` makes, carrying its serialised bytes (``encode_body``)."""
        fields = super().request([], context)  # every field but the messages, as the SDK path sends them
        clips: list[tuple] = []
        skeleton = {**fields, "messages": to_wire(history, clips)}
        body = _Body(fields)
        body["messages"] = to_wire(history)  # the same strings the bytes carry, kept, not copied
        body.encoded = encode_body(skeleton, clips)
        return body

    path = "fast"

    def _session(self, endpoint) -> aiohttp.ClientSession:
        session = self._sessions.get(endpoint.index)
        if session is None:
            url = endpoint.url  # credentials in the URL: userinfo as Basic auth (as the SDK path sends it)
            auth = _basic(*url.auth) if url.auth is not None else f"Bearer {endpoint.api_key or 'EMPTY'}"
            headers = {"Authorization": auth, "Content-Type": "application/json"}
            connector = aiohttp.TCPConnector(limit=0, ssl=None if url.base.startswith("https://") else False)
            session = aiohttp.ClientSession(
                headers=headers, connector=connector, json_serialize=json.dumps, trace_configs=[_tracing()]
            )
            self._sessions[endpoint.index] = session
        return session

    async def _once(self, slot, body: dict, marks: timing.Marks) -> Reply:
        return await self._post(slot, body, marks, stream=False)

    async def _stream(self, slot, body: dict, marks: timing.Marks) -> Reply:
        return await self._post(slot, body, marks, stream=True)

    async def _post(self, slot, body: dict, marks: timing.Marks, stream: bool) -> Reply:
        endpoint = slot.endpoint
        url = endpoint.url.join("chat/completions")  # base_url is the printable form: never sent
        where = endpoint.where
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        data = body.encoded if isinstance(body, _Body) else json.dumps(body).encode()
        chunks: list[dict] = []
        done = False
        content = b""
        try:
            post = self._session(endpoint).post
            async with post(url, data=data, params=endpoint.url.query or None, timeout=timeout, trace_request_ctx=marks) as raw:
                status, headers = raw.status, dict(raw.headers)
                marks.hardware = raw.headers.get("X-Stepeval-Hardware")
                if stream and status < 400:
                    async for line in raw.content:  # one server-sent event field per line
                        event = _event(line, where)
                        if event is _DONE:
                            done = True
                            break
                        if event is not None:
                            mark_chunk(marks, event)
                            chunks.append(event)
                else:
                    content = await raw.read()
                marks.end = timing.now()
        except asyncio.TimeoutError:
            raise openai.APITimeoutError(request=httpx.Request("POST", url)) from None  # what the SDK's errors carry
        except aiohttp.ClientError as err:
            raise openai.APIConnectionError(message=f"{type(err).__name__}: {err}", request=httpx.Request("POST", url)) from err
        if status >= 400:
            response = httpx.Response(status, headers=headers, content=content, request=httpx.Request("POST", url))
            try:
                error = json.loads(content)
            except ValueError:
                error = None
            detail = error.get("error", error) if isinstance(error, dict) else content[:300].decode("utf-8", "replace")
            message = detail.get("message") if isinstance(detail, dict) else None
            raise openai.APIStatusError(str(message or detail), response=response, body=error)
        if not stream:
            return _parse(content, self.settings.audio_format, where)  # in a worker thread it measured no faster
        if not done:  # a cut stream is a failed attempt, never a short reply
            raise openai.APIConnectionError(
                message=f"{where}: the stream ended before data: [DONE] ({len(chunks)} chunk(s) read)",
                request=httpx.Request("POST", url),
            )
        return parse_stream(chunks, self.settings.audio_format, where)

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        await super().aclose()


_DONE = object()


def _event(line: bytes, where: str) -> Any:
    """One line of a server-sent event stream: the chunk of a ``data:`` line, ``_DONE`` at ``[DONE]``, else None."""
    if not line.startswith(b"data:"):
        return None  # blank separator lines, comments (``: ping``), ``event:``/``id:`` fields
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return _DONE
    try:
        item = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MalformedReply(f"{where}: a streamed chunk is not JSON ({err}): {payload[:200]!r}") from None
    if not isinstance(item, dict):
        raise MalformedReply(f"{where}: a streamed chunk is {type(item).__name__}, not a JSON object")
    if "error" in item and not item.get("choices"):
        raise MalformedReply(f"{where}: the stream carried an error: {str(item['error'])[:300]}")
    return item


def _tracing() -> aiohttp.TraceConfig:
    """Marks on the connection: ``sent`` when the last body chunk is written, ``first_byte`` when the response head
    is in (``trace_request_ctx`` is the attempt's ``timing.Marks``)."""

    async def chunk_sent(session: Any, ctx: Any, params: Any) -> None:
        if isinstance(ctx.trace_request_ctx, timing.Marks):
            ctx.trace_request_ctx.sent = timing.now()

    async def headers_sent(session: Any, ctx: Any, params: Any) -> None:
        marks = ctx.trace_request_ctx
        if isinstance(marks, timing.Marks) and marks.sent is None:
            marks.sent = timing.now()  # a body-less request: the head is the whole request

    async def response_head(session: Any, ctx: Any, params: Any) -> None:
        if isinstance(ctx.trace_request_ctx, timing.Marks):
            ctx.trace_request_ctx.first_byte = timing.now()

    config = aiohttp.TraceConfig()
    config.on_request_chunk_sent.append(chunk_sent)
    config.on_request_headers_sent.append(headers_sent)
    config.on_request_end.append(response_head)
    return config
