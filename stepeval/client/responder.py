"""A responder answers a turn asynchronously; the replay engine needs nothing else from a model."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext


class Responder(Protocol):
    speaks: bool

    async def respond(self, history: list[Message], context: TurnContext) -> Reply: ...

    def describe(self) -> dict: ...

    # optional: ``prepare_clip(audio, rate)``, work on a user clip that can be done before its turn, off the event loop

    async def aclose(self) -> None: ...


class InProcess:
    """Runs a (blocking) backend in worker threads, at most ``workers`` turns at once."""

    def __init__(self, backend: Backend, workers: int = 4):
        self.backend = backend
        self.speaks = backend.speaks
        self.takes_text = bool(getattr(backend, "takes_text", False))
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="backend")

    async def respond(self, history: list[Message], context: TurnContext) -> Reply:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.backend.respond, history, context)

    def describe(self) -> dict:
        return self.backend.describe()

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
