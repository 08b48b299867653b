"""``stepeval serve``: one backend behind the OpenAI-compatible audio chat format.

The model loads once, in its own environment (venv, container, GPUs); the harness reaches it
with the same wire client it uses for vLLM or OpenAI. A backend that can batch (``respond_batch``,
the transformers ones with greedy decoding) gets concurrent requests grouped: up to
``--max-batch-size`` turns, gathered for at most ``--max-wait-ms`` after the first arrives, in
one ``generate()``. Other backends say why not (``/health``, the start line) and answer one
request per worker thread (``--max-concurrent``, default 1); more requests queue.

    stepeval serve parrot --port 8000
    stepeval serve qwen2_audio --max-batch-size 32 --max-wait-ms 20 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stepeval import audio as audio_io
from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext

INPUT_FORMATS = ("wav", "mp3", "flac", "ogg", "opus")
OUTPUT_FORMATS = ("wav", "pcm16")
PCM16_RATE = 24000
ROLES = {"system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant"}


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def compose_model(option: str, overrides: list[str]) -> DictConfig:
    """The ``model`` group exactly as ``stepeval run`` composes it (packaged configs, $STEPEVAL_CONF, schemas, overrides)."""
    from stepeval.config import compose

    return compose([f"model={option}", *overrides]).model


def load_backend(model: DictConfig) -> Backend:
    from hydra.utils import instantiate

    from stepeval.config import check_target

    if model.backend is None:
        raise ValueError(f"model={model.name} has no in-process backend to serve (model.backend); it is already an endpoint")
    check_target(model.backend, "model.backend")
    backend = instantiate(model.backend)
    backend.check()
    return backend


def parse_messages(body: Any) -> list[Message]:
    """Chat messages (text and ``input_audio`` parts) -> ``Message`` history; BadRequest names the field."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    history = []
    for i, item in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", where)
        role = ROLES.get(item.get("role"))
        if role is None:
            raise BadRequest(f"{where}.role={item.get('role')!r}: use system, user or assistant", f"{where}.role")
        content = item.get("content")
        texts: list[str] = []
        audio: tuple[np.ndarray, int] | None = None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                at = f"{where}.content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise BadRequest(f"{at}.text must be a string", f"{at}.text")
                    texts.append(part["text"])
                elif kind == "input_audio":
                    if audio is not None:
                        raise BadRequest(f"{at}: one input_audio part per message", at)
                    audio = _input_audio(part.get("input_audio"), f"{at}.input_audio")
                else:
                    raise BadRequest(f"{at}.type={kind!r}: use text or input_audio", f"{at}.type")
        elif content is not None:
            raise BadRequest(f"{where}.content must be a string or a list of parts", f"{where}.content")
        text = "\n".join(texts) if texts else None
        history.append(Message(role, text=text, audio=audio[0] if audio else None, sample_rate=audio[1] if audio else None))
    if history[-1].role != "user":
        raise BadRequest("the last message must be the user's turn", f"messages[{len(history) - 1}].role")
    return history


def _input_audio(part: Any, where: str) -> tuple[np.ndarray, int]:
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise BadRequest(f"{where}.data must be a base64 string", f"{where}.data")
    fmt = part.get("format", "wav")
    if fmt not in INPUT_FORMATS:
        raise BadRequest(f"{where}.format={fmt!r}: use one of {INPUT_FORMATS}", f"{where}.format")
    data = part["data"]
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data, validate=True)
        return audio_io.decode(raw, source=f"{where}.data")
    except (binascii.Error, ValueError) as err:
        raise BadRequest(f"{where}.data is not decodable {fmt} audio: {err}", f"{where}.data") from None


def turn_context(body: dict, history: list[Message]) -> TurnContext:
    """From ``metadata`` when the client sends it, else a hash of the first user message (stable over a conversation)."""
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise BadRequest("metadata must be an object", "metadata")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise BadRequest("seed must be an integer", "seed")
    users = [m for m in history if m.role == "user"]
    conversation = meta.get("conversation_id")
    if conversation is None:
        first = users[0]
        digest = hashlib.sha256((first.text or "").encode())
        if first.audio is not None:
            digest.update(np.ascontiguousarray(first.audio).tobytes())
        conversation = f"req-{digest.hexdigest()[:16]}"
    turn = meta.get("turn", len(users) - 1)
    try:
        turn = int(turn)
    except (TypeError, ValueError):
        raise BadRequest(f"metadata.turn={turn!r} must be an integer", "metadata.turn") from None
    return TurnContext(str(conversation), turn, seed or 0)


def completion(reply: Reply, body: dict, name: str) -> dict:
    """A Reply as the OpenAI API sends a chat completion with audio."""
    modalities = body.get("modalities") or ["text"]
    fmt = (body.get("audio") or {}).get("format", "wav")
    now = int(time.time())
    audio = None
    if "audio" in modalities and reply.audio is not None:
        samples = np.asarray(reply.audio, dtype=np.float32)
        if fmt == "pcm16":
            pcm = np.clip(audio_io.resample(samples, reply.sample_rate, PCM16_RATE), -1, 1)
            data = base64.b64encode((pcm * 32767).astype("<i2").tobytes()).decode("ascii")
        else:
            data = audio_io.to_base64_wav(samples, reply.sample_rate)
        audio = {"id": f"audio_{uuid.uuid4().hex}", "data": data, "expires_at": now + 3600, "transcript": reply.transcript or ""}
    message = {"role": "assistant", "content": reply.text, "refusal": None, "audio": audio}
    out = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": now,
        "model": body.get("model") or name,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": reply.usage or None,
    }
    return out


def streams_incrementally(backend: Backend) -> bool:
    return callable(getattr(backend, "respond_stream", None))


def stream_timings(backend: Backend) -> dict[str, str]:
    """Which timings a streamed reply from this backend gives (``/health``, the start line, docs/latency.md)."""
    if streams_incrementally(backend):
        return {
            "first_byte": "when the first piece is made (the head waits for it: an early failure is still an HTTP error)",
            "first_text": "as generated",
            "first_audio": "as generated",
            "chunk_spacing": "as generated",
        }
    why = f"{type(backend).__name__} does not generate incrementally (no respond_stream): the whole reply is made first"
    return {"first_byte": why, "first_text": why, "first_audio": why, "chunk_spacing": "none: the chunks are sent at once"}


def hardware() -> str:
    """What this server runs on, as the client records it when the run does not declare ``model.hardware``."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out = f"{cpu} ({os.cpu_count()} CPUs)"
    torch = sys.modules.get("torch")  # only when the backend loaded it: never imported for this
    if torch is not None and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out = f"{len(names)}x {names[0]}, {out}" if len(set(names)) == 1 else f"{', '.join(names)}, {out}"
    return out


class ChunkWriter:
    """A reply, piece by piece, as OpenAI streams chat completion chunks with audio (``delta.content``,
    ``delta.audio.data`` base64 pieces, ``delta.audio.transcript``), ending with ``data: [DONE]``."""

    def __init__(self, body: dict, name: str):
        self.body, self.name = body, name
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.audio_id = f"audio_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.speaks = "audio" in (body.get("modalities") or ["text"])
        self.fmt = (body.get("audio") or {}).get("format", "wav")
        self._resampler: Any = None
        self._rate: int | None = None

    def _event(self, delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        item = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        item.update({"model": self.body.get("model") or self.name, "choices": choices, "usage": usage})
        return f"data: {json.dumps(item)}\n\n".encode()

    def start(self) -> bytes:
        return self._event({"role": "assistant", "content": ""})

    def piece(self, reply: Reply) -> list[bytes]:
        out = []
        if reply.text:
            out.append(self._event({"content": reply.text}))
        if self.speaks and reply.audio is not None and reply.audio.size:
            data = self._audio(np.asarray(reply.audio, dtype=np.float32), int(reply.sample_rate or 0))
            if data:
                out.append(self._event({"audio": {"id": self.audio_id, "data": data}}))
        if self.speaks and reply.transcript:
            out.append(self._event({"audio": {"id": self.audio_id, "transcript": reply.transcript}}))
        return out

    def _audio(self, samples: np.ndarray, rate: int) -> str:
        """wav: each piece a WAV file of its own (the client joins the samples); pcm16: raw 24 kHz, resampled as one
        stream so the samples are those of the whole reply resampled at once."""
        if self._rate is not None and rate != self._rate:
            raise ValueError(f"the backend's streamed pieces change sample rate ({self._rate} -> {rate})")
        self._rate = rate
        if self.fmt != "pcm16":
            return audio_io.to_base64_wav(samples, rate)
        if rate != PCM16_RATE:
            import soxr

            if self._resampler is None:
                self._resampler = soxr.ResampleStream(rate, PCM16_RATE, 1, dtype="float32")
            samples = self._resampler.resample_chunk(samples)
        return base64.b64encode((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()).decode("ascii")

    def end(self, usage: dict | None) -> list[bytes]:
        out = []
        if self._resampler is not None:  # what the resampler still holds
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                data = base64.b64encode((np.clip(tail, -1, 1) * 32767).astype("<i2").tobytes()).decode("ascii")
                out.append(self._event({"audio": {"id": self.audio_id, "data": data}}))
        out.append(self._event({}, finish="stop"))
        if (self.body.get("stream_options") or {}).get("include_usage"):
            out.append(self._event(None, usage=usage or {}))
        return [*out, b"data: [DONE]\n\n"]


def split_reply(reply: Reply, seconds: float = 0.24) -> Iterator[Reply]:
    """A whole reply as stream pieces: its text, then its audio in ``seconds`` pieces, then its transcript."""
    yield Reply(text=reply.text)
    if reply.audio is not None and reply.sample_rate:
        step = max(1, int(seconds * reply.sample_rate))
        for start in range(0, reply.audio.size, step):
            yield Reply(audio=reply.audio[start : start + step], sample_rate=reply.sample_rate)
    yield Reply(transcript=reply.transcript)


def check_request(body: dict) -> None:
    modalities = body.get("modalities", ["text"])
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
        raise BadRequest(f"modalities={modalities!r}: use [text] or [text, audio]", "modalities")
    fmt = (body.get("audio") or {}).get("format", "wav") if isinstance(body.get("audio") or {}, dict) else None
    if fmt not in OUTPUT_FORMATS:
        raise BadRequest(f"audio.format={fmt!r}: stepeval serve answers in {OUTPUT_FORMATS}", "audio.format")
    if not isinstance(body.get("stream", False), bool):
        raise BadRequest("stream must be true or false", "stream")


def error(status: int, message: str, kind: str, param: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status)


def batch_unsupported(backend: Backend) -> str | None:
    """None when the backend can answer several turns in one call, else why not (shown by /health)."""
    if not callable(getattr(backend, "respond_batch", None)):
        return f"{type(backend).__name__} answers one turn per call (no respond_batch)"
    check = getattr(backend, "batch_unsupported", None)
    return check() if callable(check) else None


@dataclass
class _Waiting:
    history: list[Message]
    context: TurnContext
    future: asyncio.Future


class Batcher:
    """Groups concurrent turns: the first waits at most ``max_wait_s`` for others, up to ``max_batch_size``.

    ``max_concurrent`` batches run at once (worker threads); turns arriving meanwhile form the next batch.
    """

    def __init__(self, backend: Backend, pool: ThreadPoolExecutor, max_batch_size: int, max_wait_s: float, max_concurrent: int):
        self.backend, self.pool = backend, pool
        self.max_batch_size, self.max_wait_s = max(1, max_batch_size), max(0.0, max_wait_s)
        self.max_concurrent = max(1, max_concurrent)
        self.batches = self.turns = self.largest = 0
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._runner: asyncio.Task | None = None

    async def respond(self, history: list[Message], context: TurnContext) -> Reply:
        if self._queue is None:  # created on the server's own event loop
            self._queue = asyncio.Queue()
            self._runner = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(history, context, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        slots = asyncio.Semaphore(self.max_concurrent)
        loop = asyncio.get_running_loop()
        while True:
            await slots.acquire()
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                try:  # turns already queued join at once; otherwise wait what is left of max_wait_s
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            asyncio.create_task(self._answer(batch, slots))

    async def _answer(self, batch: list[_Waiting], slots: asyncio.Semaphore) -> None:
        items = [(w.history, w.context) for w in batch]
        self.batches += 1
        self.turns += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.pool, self.backend.respond_batch, items)
            if len(results) != len(batch):
                raise RuntimeError(f"respond_batch returned {len(results)} replies for {len(batch)} turns")
        except Exception as err:  # the whole batch failed: each request gets the error
            results = [err] * len(batch)
        finally:
            slots.release()
        for waiting, result in zip(batch, results, strict=True):
            if waiting.future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)

    def stats(self) -> dict:
        return {"batches": self.batches, "turns": self.turns, "largest": self.largest}

    def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()


def build_app(backend: Backend, name: str, max_concurrent: int = 1, max_batch_size: int = 8, max_wait_ms: float = 10.0) -> Any:
    """The starlette app. A backend that can batch gets concurrent turns grouped (``Batcher``); another runs one
    turn per call in ``max_concurrent`` worker threads, the rest wait their turn."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    pool = ThreadPoolExecutor(max_workers=max(1, max_concurrent), thread_name_prefix="serve")
    started = int(time.time())
    why_not = batch_unsupported(backend) if max_batch_size > 1 else f"--max-batch-size {max_batch_size}"
    batcher = Batcher(backend, pool, max_batch_size, max_wait_ms / 1000, max_concurrent) if why_not is None else None
    incremental = streams_incrementally(backend)
    head = {"X-Stepeval-Hardware": hardware()}  # recorded with the client's timings when the run declares none

    async def chat(request: Request) -> Any:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return error(400, f"request body is not JSON: {err}", "invalid_request_error")
        try:
            history = parse_messages(body)
            check_request(body)
            context = turn_context(body, history)
        except BadRequest as err:
            return error(400, str(err), "invalid_request_error", err.param)
        loop = asyncio.get_running_loop()
        if body.get("stream") and incremental:
            return await streamed(body, history, context)
        try:
            if batcher is not None:
                reply = await batcher.respond(history, context)
            else:
                reply = await loop.run_in_executor(pool, backend.respond, history, context)
        except Exception as err:  # the backend failed on this turn: the client records it and goes on
            return error(500, f"backend {name} failed: {type(err).__name__}: {err}", "server_error")
        if body.get("stream"):  # made whole, sent as chunks
            fmt = (body.get("audio") or {}).get("format", "wav")
            if fmt == "pcm16" and reply.audio is not None and reply.sample_rate != PCM16_RATE:  # as a whole, like above
                reply.audio = audio_io.resample(np.asarray(reply.audio, np.float32), int(reply.sample_rate), PCM16_RATE)
                reply.sample_rate = PCM16_RATE
            writer = ChunkWriter(body, name)
            events = [writer.start()] + [e for piece in split_reply(reply) for e in writer.piece(piece)]
            return sse(iter_list(events + writer.end(reply.usage)))
        return JSONResponse(completion(reply, body, name), headers=head)

    async def streamed(body: dict, history: list[Message], context: TurnContext) -> Any:
        """Pieces sent as the backend yields them (in a worker thread); the response head waits for the first
        piece, so a backend that fails before it still answers HTTP 500. A later failure is an ``error`` event and
        no ``[DONE]``: the client sees a cut stream, never a short reply."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                for piece in backend.respond_stream(history, context):
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except Exception as err:  # noqa: BLE001 - handed to the response
                loop.call_soon_threadsafe(queue.put_nowait, err)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        loop.run_in_executor(pool, work)
        first = await queue.get()
        if isinstance(first, Exception):
            return error(500, f"backend {name} failed: {type(first).__name__}: {first}", "server_error")
        writer = ChunkWriter(body, name)

        async def events() -> AsyncIterator[bytes]:
            item, usage = first, None
            yield writer.start()
            while item is not done:
                if isinstance(item, Exception):
                    message = f"backend {name} failed: {type(item).__name__}: {item}"
                    yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n".encode()
                    return
                for event in writer.piece(item):
                    yield event
                usage = item.usage or usage
                item = await queue.get()
            for event in writer.end(usage):
                yield event

        return sse(events())

    def sse(events: Any) -> Any:
        return StreamingResponse(events, media_type="text/event-stream", headers={**head, "Cache-Control": "no-cache"})

    async def health(request: Request) -> Any:
        batching = {"enabled": batcher is not None, "reason": why_not, "max_batch_size": max_batch_size}
        batching["max_wait_ms"] = max_wait_ms
        if batcher is not None:
            batching.update(batcher.stats())
        body = {"status": "ok", "model": name, "backend": backend.describe(), "max_concurrent": max_concurrent}
        streaming = {"incremental": incremental, "timings": stream_timings(backend), "hardware": head["X-Stepeval-Hardware"]}
        return JSONResponse({**body, "batching": batching, "streaming": streaming})

    async def models(request: Request) -> Any:
        entry = {"id": name, "object": "model", "created": started, "owned_by": "stepeval"}
        return JSONResponse({"object": "list", "data": [entry]})

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            batcher.close()
        pool.shutdown(wait=False, cancel_futures=True)

    return Starlette(routes=routes, lifespan=lifespan)


async def iter_list(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stepeval serve", description="Serve a backend as OpenAI-compatible audio chat.")
    parser.add_argument("model", help="a model option (e.g. parrot; `stepeval run --help` lists them)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.backend.delay_s=0.5")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-concurrent", type=int, default=1, help="inferences (or batches) at once; more queue (default 1)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="turns per batch, for backends that batch (default 8)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a turn waits for batch-mates (default 10)")
    args = parser.parse_intermixed_args(argv)
    try:
        import uvicorn
    except ImportError:
        print("stepeval serve: needs uvicorn and starlette: pip install 'stepeval[serve]'", file=sys.stderr)
        return 2
    try:
        model = compose_model(args.model, args.overrides)
        backend = load_backend(model)
    except Exception as err:  # config, import or check failure: one clear line, before binding the port
        print(f"stepeval serve: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    why_not = batch_unsupported(backend) if args.max_batch_size > 1 else f"--max-batch-size {args.max_batch_size}"
    batching = f"batches of up to {args.max_batch_size} (wait {args.max_wait_ms:g} ms)"
    if why_not is not None:
        batching = f"no batching: {why_not}"
    if streams_incrementally(backend):
        batching += "; streams as it generates (time to first audio is measured)"
    else:
        batching += "; stream=true sends the whole reply as chunks once made (no time to first audio of its own)"
    print(
        f"stepeval serve: {model.name} ({backend.describe().get('class')}) on http://{args.host}:{args.port}/v1; {batching}",
        flush=True,
    )
    app = build_app(backend, str(model.name), args.max_concurrent, args.max_batch_size, args.max_wait_ms)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The app under uvicorn on a thread of this process (benchmarks, tests): yields its base URL (``.../v1``)."""
    import socket
    import threading

    import uvicorn

    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="stepeval-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"stepeval serve did not start on {host}:{port}")
            time.sleep(0.02)
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
