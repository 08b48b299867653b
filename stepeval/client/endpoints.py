"""Replicas of one model: each an OpenAI-compatible endpoint with its own concurrency limit.

Every request goes to the least busy endpoint (in flight / limit) that has a free slot; when all
are full it waits. A failed attempt frees its slot, so its retry may land on another replica.

An endpoint's slots are spread over several SDK clients of at most ``LANES_PER_CLIENT``
connections each: the HTTP connection pool's bookkeeping grows with the square of its
connections, and one pool of hundreds costs more CPU than the requests themselves.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import openai

from stepeval.secrets import register_secret
from stepeval.transport import EndpointURL, open_client

LANES_PER_CLIENT = 16


@dataclass
class Endpoint:
    index: int
    base_url: str  # as configured; replaced by its printable form (credentials hidden) once parsed
    api_key: str | None = field(repr=False)
    limit: int
    timeout_s: float
    in_flight: int = 0
    served: int = 0
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

    @property
    def capacity(self) -> int:
        return sum(e.limit for e in self.endpoints)

    def _pick(self) -> Endpoint | None:
        open_ = [e for e in self.endpoints if e.in_flight < e.limit]
        if not open_:
            return None
        tick = next(self._order)  # ties rotate, so idle replicas share the first requests
        return min(open_, key=lambda e: (e.in_flight / e.limit, (e.index - tick) % len(self.endpoints)))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        async with self._free:
            await self._free.wait_for(lambda: any(e.in_flight < e.limit for e in self.endpoints))
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

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            for client in endpoint.clients.values():
                await client.close()
            endpoint.clients.clear()
