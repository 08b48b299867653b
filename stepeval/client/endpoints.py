"""Replicas of one model: each an OpenAI-compatible endpoint with its own concurrency limit.

Every request goes to the least busy endpoint (in flight / limit) that has a free slot; when all
are full it waits. A failed attempt frees its slot, so its retry may land on another replica.
An endpoint that refuses or drops a connection is *down* (a dead endpoint fails fast, so it would
always look least busy and draw every retry): no request goes to it until a probe of ``GET /models``
answers again, unless every endpoint is down. A replica that came back at another address (a SLURM
job requeued on another node) is followed there (``move_endpoint``).

An endpoint's slots are spread over several SDK clients of at most ``LANES_PER_CLIENT``
connections each: the HTTP connection pool's bookkeeping grows with the square of its
connections, and one pool of hundreds costs more CPU than the requests themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import openai

from stepeval.secrets import register_secret
from stepeval.transport import EndpointURL, open_client

LANES_PER_CLIENT = 16
PROBE_INTERVAL_S = 0.5  # how often a down endpoint is asked whether it serves again

# old base URL -> new one, for replicas that came back elsewhere (set by the fleet's monitor thread)
_MOVED: dict[str, str] = {}


def move_endpoint(old_base_url: str, new_base_url: str) -> None:
    """Requests meant for ``old_base_url`` go to ``new_base_url`` once the endpoint is found down there."""
    _MOVED[old_base_url.rstrip("/")] = new_base_url.rstrip("/")


@dataclass
class Endpoint:
    index: int
    base_url: str  # as configured; replaced by its printable form (credentials hidden) once parsed
    api_key: str | None = field(repr=False)
    limit: int
    timeout_s: float
    in_flight: int = 0
    served: int = 0
    name: str | None = None  # what the records call it (a fleet's "<model> replica <i>"); default "endpoint <i>"
    down: bool = False  # a connection to it failed; back when a probe answers
    url: EndpointURL = field(init=False, repr=False)
    clients: dict[int, openai.AsyncOpenAI] = field(default_factory=dict, repr=False)
    free_lanes: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.url = EndpointURL.parse(self.base_url, f"endpoint {self.index} base_url")
        register_secret(self.api_key)  # scrubbed from every message, should a server echo it
        self.base_url = self.url.display  # what error messages show: never a key
        self.free_lanes = list(range(self.limit - 1, -1, -1))  # pop() hands out lane 0 first

    @property
    def where(self) -> str:
        return f"endpoint {self.index} ({self.url.display})"

    @property
    def served_by(self) -> str:
        """The replay record's name for this endpoint: its name and where it was reached (no credentials)."""
        return f"{self.name or f'endpoint {self.index}'} at {self.url.display}"

    def open(self, lane: int = 0) -> openai.AsyncOpenAI:
        group = lane // LANES_PER_CLIENT
        if group not in self.clients:
            self.clients[group] = open_client(self.url, self.api_key, self.timeout_s)
        return self.clients[group]

    def __repr__(self) -> str:  # never shows the key
        return f"Endpoint({self.index}: {self.url.display})"


@dataclass
class Slot:
    endpoint: Endpoint
    lane: int

    def client(self) -> openai.AsyncOpenAI:
        return self.endpoint.open(self.lane)


class EndpointPool:
    def __init__(self, endpoints: list[Endpoint]):
        if not endpoints:
            raise ValueError("no endpoints configured (model.base_url or model.endpoints)")
        self.endpoints = endpoints
        self._free = asyncio.Condition()
        self._order = itertools.count()
        self._probes: dict[int, asyncio.Task] = {}
        self._retired: list[openai.AsyncOpenAI] = []  # SDK clients of endpoints that moved, closed with the pool

    @property
    def capacity(self) -> int:
        return sum(e.limit for e in self.endpoints)

    def _usable(self) -> list[Endpoint]:
        """The endpoints that are up; all of them when none is (their turns fail fast and back off)."""
        up = [e for e in self.endpoints if not e.down]
        return up or self.endpoints

    def _pick(self) -> Endpoint | None:
        open_ = [e for e in self._usable() if e.in_flight < e.limit]
        if not open_:
            return None
        tick = next(self._order)  # ties rotate, so idle replicas share the first requests
        return min(open_, key=lambda e: (e.in_flight / e.limit, (e.index - tick) % len(self.endpoints)))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        async with self._free:
            await self._free.wait_for(lambda: any(e.in_flight < e.limit for e in self._usable()))
            endpoint = self._pick()
            assert endpoint is not None
            endpoint.in_flight += 1
            lane = endpoint.free_lanes.pop()
        try:
            yield Slot(endpoint, lane)
        finally:
            async with self._free:
                endpoint.in_flight -= 1
                endpoint.served += 1
                endpoint.free_lanes.append(lane)
                self._free.notify(1)

    def mark_down(self, endpoint: Endpoint) -> None:
        """A connection to ``endpoint`` failed: send nothing more there until a probe finds it serving again."""
        if endpoint.down or len(self.endpoints) < 2:
            return
        endpoint.down = True
        self._probes[endpoint.index] = asyncio.get_running_loop().create_task(self._probe(endpoint))

    async def _probe(self, endpoint: Endpoint) -> None:
        from stepeval.transport import EndpointError, check_models_async

        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            moved = _MOVED.get(endpoint.url.base)
            if moved is not None and moved != endpoint.url.base:
                self._move(endpoint, moved)
            try:
                await check_models_async(endpoint.url, endpoint.api_key, endpoint.where, timeout_s=2.0)
            except EndpointError:
                continue
            async with self._free:
                endpoint.down = False
                self._free.notify_all()
            self._probes.pop(endpoint.index, None)
            return

    def _move(self, endpoint: Endpoint, base_url: str) -> None:
        """The endpoint's replica serves at ``base_url`` now (the query and credentials stay)."""
        old = endpoint.url
        endpoint.url = dataclasses.replace(old, base=base_url, display=old.display.replace(old.base, base_url, 1))
        endpoint.base_url = endpoint.url.display
        self._retired += endpoint.clients.values()  # they hold the old base URL (the aiohttp path joins it per request)
        endpoint.clients.clear()

    async def aclose(self) -> None:
        for task in self._probes.values():
            task.cancel()
        self._probes.clear()
        for client in self._retired:
            await client.close()
        for endpoint in self.endpoints:
            for client in endpoint.clients.values():
                await client.close()
            endpoint.clients.clear()
