"""A responder answers a turn asynchronously; the replay engine needs nothing else from a model."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from stepeval.backends.base import Backend
from stepeval.client import timing
from stepeval.types import Message, Reply, TurnContext


class Responder(Protocol):
    speaks: bool

    async def respond(self, history: list[Message], context: TurnContext) -> Reply: ...

    def describe(self) -> dict: ...

    # optional: ``prepare_clip(audio, rate)``, work on a user clip that can be done before its turn, off the event loop

    async def aclose(self) -> None: ...


class InProcess:
    """Runs a (blocking) backend in worker threads, at most ``workers`` turns at once.

    Timings are taken inside the process (docs/latency.md): ``t0`` when a worker thread starts the
    backend call, so the wait for a free worker is ``queue_s``; there is no wire, so no first byte."""

    def __init__(self, backend: Backend, workers: int = 4, hardware: str | None = None):
        self.backend = backend
        self.speaks = backend.speaks
        self.takes_text = bool(getattr(backend, "takes_text", False))
        self.workers = max(1, workers)
        self.hardware = hardware
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="backend")
        self._busy = 0
        self._count = threading.Lock()

    async def respond(self, history: list[Message], context: TurnContext) -> Reply:
        loop = asyncio.get_running_loop()
        marks = timing.Marks(timing.now())
        marks.missing["first_byte_s"] = "in-process backend: no wire"
        reply = await loop.run_in_executor(self._pool, self._timed, history, context, marks)
        timings, missing = marks.timings()
        reply.timings.update(timings)
        reply.extra["timings_missing"] = missing
        reply.extra["latency"] = {
            "clock": "in-process",
            "streamed": False,
            "endpoint": "in-process",
            "concurrency": self.workers,
            "in_flight": marks.in_flight,
            "hardware": self.hardware,
        }
        return reply

    def _timed(self, history: list[Message], context: TurnContext, marks: timing.Marks) -> Reply:
        with self._count:
            self._busy += 1
            marks.in_flight = self._busy  # this turn included: the load it was measured under
        marks.sent = timing.now()
        try:
            return self.backend.respond(history, context)
        finally:
            marks.end = timing.now()
            with self._count:
                self._busy -= 1

    def describe(self) -> dict:
        return self.backend.describe()

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
