"""``stepeval serve``: one backend behind the OpenAI-compatible audio chat format.

The model loads once, in its own environment (venv, container, GPUs); the harness reaches it
with the same wire client it uses for vLLM or OpenAI. Requests queue for a fixed number of
worker threads (``--max-concurrent``, default 1: most models run one inference at a time).

    stepeval serve parrot --port 8000
    stepeval serve canned model.backend.delay_s=0.5 --host 0.0.0.0 --port 8000
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
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
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


def check_request(body: dict) -> None:
    modalities = body.get("modalities", ["text"])
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
        raise BadRequest(f"modalities={modalities!r}: use [text] or [text, audio]", "modalities")
    fmt = (body.get("audio") or {}).get("format", "wav") if isinstance(body.get("audio") or {}, dict) else None
    if fmt not in OUTPUT_FORMATS:
        raise BadRequest(f"audio.format={fmt!r}: stepeval serve answers in {OUTPUT_FORMATS}", "audio.format")
    if body.get("stream"):
        raise BadRequest("stream=true is not supported by stepeval serve; send stream=false", "stream")


def error(status: int, message: str, kind: str, param: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status)


def build_app(backend: Backend, name: str, max_concurrent: int = 1) -> Any:
    """The starlette app; backend calls run in ``max_concurrent`` worker threads, the rest wait their turn."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    pool = ThreadPoolExecutor(max_workers=max(1, max_concurrent), thread_name_prefix="serve")
    started = int(time.time())

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
        try:
            reply = await loop.run_in_executor(pool, backend.respond, history, context)
        except Exception as err:  # the backend failed on this turn: the client records it and goes on
            return error(500, f"backend {name} failed: {type(err).__name__}: {err}", "server_error")
        return JSONResponse(completion(reply, body, name))

    async def health(request: Request) -> Any:
        return JSONResponse({"status": "ok", "model": name, "backend": backend.describe(), "max_concurrent": max_concurrent})

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
        pool.shutdown(wait=False, cancel_futures=True)

    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stepeval serve", description="Serve a backend as OpenAI-compatible audio chat.")
    parser.add_argument("model", help="a model option (e.g. parrot; `stepeval run --help` lists them)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.backend.delay_s=0.5")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-concurrent", type=int, default=1, help="inferences at once; more requests queue (default 1)")
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
    print(f"stepeval serve: {model.name} ({backend.describe().get('class')}) on http://{args.host}:{args.port}/v1", flush=True)
    app = build_app(backend, str(model.name), args.max_concurrent)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
