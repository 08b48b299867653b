"""Our retry and rate-limit policy for judge calls (the SDK's own retries are turned off).

Retries: exponential backoff with jitter on 408/409/429/5xx, timeouts and connection errors;
a ``Retry-After`` (or ``retry-after-ms``) header from the server wins over the computed wait.
Rate limits: requests and (estimated) tokens per minute, as leaky buckets (aiolimiter).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import openai

T = TypeVar("T")
RETRY_STATUS = {408, 409, 429}
FATAL_STATUS = {401, 403, 404}  # wrong key, no access, wrong model or URL: every call would fail the same way


class JudgeEndpointError(ValueError):
    """The judge endpoint rejects us for a reason no retry fixes (key, permission, model name, URL)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_s: float = 1.0
    max_s: float = 60.0
    retry_after_max_s: float = 300.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``attempt`` (0-based): half of min(max, base * 2^attempt), plus
        a random share of the other half so that concurrent callers spread out."""
        cap = min(self.max_s, self.base_s * (2**attempt))
        return cap / 2 + (rng or random).uniform(0, cap / 2)


def retry_after_seconds(headers: object) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable(err: BaseException) -> bool:
    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRY_STATUS or err.status_code >= 500
    return False


def describe_error(err: BaseException, endpoint: str) -> str:
    """One line naming the endpoint; never the request headers (they hold the API key)."""
    if isinstance(err, openai.APIStatusError):
        message = err.message if isinstance(err.message, str) else str(err.message)
        return f"HTTP {err.status_code} from {endpoint}: {message[:300]}"
    if isinstance(err, openai.APITimeoutError):
        return f"timed out waiting for {endpoint}"
    if isinstance(err, openai.APIConnectionError):
        return f"cannot connect to {endpoint}: {err.__cause__ or err}"
    return f"{type(err).__name__} from {endpoint}: {err}"


def _limiter(per_minute: float | None):
    if not per_minute:
        return None
    try:
        from aiolimiter import AsyncLimiter
    except ImportError as err:
        raise ImportError("judge rate limits need aiolimiter: pip install 'stepeval[judges]'") from err
    return AsyncLimiter(per_minute, 60)


class Limits:
    """Requests and tokens per minute (None: unlimited)."""

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


@dataclass
class Attempts:
    count: int = 0
    waits_s: list[float] | None = None
    errors: list[str] | None = None


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    endpoint: str,
    attempts: Attempts,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``call()`` until it succeeds, a non-retryable error, or ``policy.max_retries`` retries.

    Raises ``JudgeEndpointError`` for 401/403/404, the last error otherwise."""
    attempts.waits_s, attempts.errors = [], []
    for attempt in range(policy.max_retries + 1):
        attempts.count += 1
        try:
            return await call()
        except openai.APIStatusError as err:
            if err.status_code in FATAL_STATUS:
                raise JudgeEndpointError(describe_error(err, endpoint)) from None
            if not retryable(err) or attempt == policy.max_retries:
                raise
            attempts.errors.append(describe_error(err, endpoint))
            asked = retry_after_seconds(err.response.headers)
            wait = min(asked, policy.retry_after_max_s) if asked is not None else policy.backoff(attempt)
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            if attempt == policy.max_retries:
                raise
            attempts.errors.append(describe_error(err, endpoint))
            wait = policy.backoff(attempt)
        attempts.waits_s.append(round(wait, 3))
        await sleep(wait)
    raise AssertionError("unreachable")
