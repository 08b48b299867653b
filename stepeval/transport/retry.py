"""Our retry loop (the SDK's own retries are off, so every attempt is ours and recorded).

Only ``Kind.RETRY`` errors are retried. The wait is the server's ``Retry-After`` when it gives one
(capped at ``retry_after_max_s``), else exponential backoff with jitter: a uniform draw from
[cap/2, cap], cap = min(max_s, base_s * 2^attempt), so callers recovering together spread out.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from stepeval.transport.errors import (
    AttemptError,
    Kind,
    StreamFailed,
    TransportError,
    classify,
    describe,
    retry_after,
    status_of,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_s: float = 1.0
    max_s: float = 60.0
    retry_after_max_s: float = 300.0
    # a 5xx repeated this many times in a row with the same message is taken as the request's fault
    # (some servers answer an unsupported parameter with a bare 500); None: retry every 5xx
    same_5xx_limit: int | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_s < 0 or self.max_s < 0:
            raise ValueError("max_retries, backoff base and max must be >= 0")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        cap = min(self.max_s, self.base_s * (2**attempt))
        return cap / 2 + (rng or random).uniform(0, cap / 2)


@dataclass
class Attempts:
    """What happened before the outcome: how many attempts, and each retried error with its wait."""

    count: int = 0
    errors: list[str] = field(default_factory=list)
    waits_s: list[float] = field(default_factory=list)

    def retries(self) -> list[dict]:
        return [{"error": e, "wait_s": w} for e, w in zip(self.errors, self.waits_s, strict=False)]


def wait_for(err: BaseException, attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    import openai

    cause = err.cause if isinstance(err, AttemptError) else err
    if isinstance(cause, openai.APIStatusError):
        told = retry_after(cause.response.headers if cause.response is not None else None)
        if told is not None:
            return min(told, policy.retry_after_max_s)
    return policy.backoff(attempt, rng)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    where: str,
    attempts: Attempts | None = None,
    *,
    timeout_s: float | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """``call()`` until it succeeds or fails for good; raises ``TransportError`` (kind, status, message).

    ``call`` may raise ``AttemptError(cause, where)`` to name the endpoint an attempt went to."""
    import openai  # imported on first use: a run that talks to no endpoint never loads the SDK

    attempts = attempts if attempts is not None else Attempts()
    repeated: tuple[int | None, str] | None = None
    same = 0
    for attempt in range(policy.max_retries + 1):
        attempts.count += 1
        try:
            return await call()
        except (openai.OpenAIError, TimeoutError, AttemptError, StreamFailed) as err:
            kind = classify(err)
            note = describe(err, where, timeout_s)
            status = status_of(err)
            if kind is Kind.RETRY and status is not None and status >= 500 and policy.same_5xx_limit:
                key = (status, note)
                same = same + 1 if key == repeated else 1
                repeated = key
                if same >= policy.same_5xx_limit:
                    kind = Kind.INVALID
                    note += f" (the same answer {same} times in a row: taken as a rejection of the request)"
            if kind is not Kind.RETRY or attempt == policy.max_retries:
                tried = f" after {attempts.count} attempt(s)" if attempts.count > 1 else ""
                raise TransportError(f"{note}{tried}", kind, status, attempts.count) from None
            wait = wait_for(err, attempt, policy, rng)
            attempts.errors.append(note)
            attempts.waits_s.append(round(wait, 3))
        await sleep(wait)
    raise AssertionError("unreachable")
