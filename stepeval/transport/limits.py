"""How fast and how many: requests and tokens per minute, and the server-start gate.

``StartGate`` keeps at most ``max_waiting`` of our requests sent but not yet started by the server
(a streamed reply's first chunk says it started). A server with one slot that queues (llama.cpp,
llama-cpp-python with ``interrupt_requests`` off) then has one request generating and one waiting,
never four queued behind each other running out their timeouts; a server that batches starts each
request at once, so the gate opens again at once and the caller's own concurrency is the limit.
``peak_running`` is the most requests the server was seen working on at once. ``one_at_a_time()``
also caps requests in flight at one: for a server that ends the running reply whenever another
request waits (llama-cpp-python's default ``interrupt_requests``), nothing may wait.
"""

from __future__ import annotations

import asyncio
from collections import deque


def _limiter(per_minute: float | None):
    if not per_minute:
        return None
    try:
        from aiolimiter import AsyncLimiter
    except ImportError as err:
        raise ImportError("rate limits need aiolimiter: pip install 'stepeval[judges]'") from err
    return AsyncLimiter(per_minute, 60)


class Limits:
    """Requests and tokens per minute (None: unlimited), shared by every client of one account."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None):
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value <= 0:
                raise ValueError(f"judge.{name} must be > 0 or null, got {value}")
        self.requests = _limiter(requests_per_minute)
        self.tokens = _limiter(tokens_per_minute)

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(min(float(estimated_tokens), self.tokens.max_rate))


class StartGate:
    """At most ``max_waiting`` requests sent and not yet started; ``None`` or a server that does not
    stream (``disable()``) turns the gate off."""

    def __init__(self, max_waiting: int | None = 1):
        if max_waiting is not None and max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1 or null, got {max_waiting}")
        self.max_waiting = max_waiting
        self.max_in_flight: int | None = None  # waiting + running; None: no cap beyond max_waiting
        self.waiting = 0
        self.running = 0
        self.peak_running = 0
        self._wakeups: deque[asyncio.Future] = deque()

    def disable(self) -> None:
        self.max_waiting = None
        self._wake()

    def one_at_a_time(self) -> None:
        """From now on a request is sent only when no other is waiting or running."""
        self.max_in_flight = 1

    def _open(self) -> bool:
        if self.max_in_flight is not None and self.waiting + self.running >= self.max_in_flight:
            return False
        return self.max_waiting is None or self.waiting < self.max_waiting

    def _wake(self) -> None:
        while self._wakeups:
            future = self._wakeups.popleft()
            if not future.done():
                future.set_result(None)

    async def enter(self) -> Ticket:
        while not self._open():
            future = asyncio.get_running_loop().create_future()
            self._wakeups.append(future)
            await future
        self.waiting += 1
        return Ticket(self)


class Ticket:
    """One request's place: ``started()`` when the server begins on it, ``leave()`` when it is done."""

    def __init__(self, gate: StartGate):
        self.gate, self.is_started, self.left = gate, False, False

    def started(self) -> None:
        if self.is_started or self.left:
            return
        self.is_started = True
        gate = self.gate
        gate.waiting -= 1
        gate.running += 1
        gate.peak_running = max(gate.peak_running, gate.running)
        gate._wake()

    def leave(self) -> None:
        if self.left:
            return
        self.left = True
        if self.is_started:
            self.gate.running -= 1
        else:
            self.gate.waiting -= 1
        self.gate._wake()
