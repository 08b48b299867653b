"""What a failed request means, and one line that says so (never a header, never a key).

Three kinds: ``RETRY`` (it may go away: 408, 409, 429, 5xx, timeouts, dropped or refused
connections), ``INVALID`` (this request will fail the same way every time: 400, 422, any other
4xx, and a 5xx whose body says the request is invalid: some servers answer an unsupported
parameter with 500), and ``FATAL`` (every request to this endpoint will fail: 401 and 403, a
wrong key; 404, a wrong URL or model name).
"""

from __future__ import annotations

import email.utils
import enum
import json
import re
import time
from typing import TYPE_CHECKING, Any

from stepeval import secrets

if TYPE_CHECKING:
    import openai

RETRY_STATUS = frozenset({408, 409, 429})
FATAL_STATUS = frozenset({401, 403, 404})
# words in a 5xx body that mean the request, not the server, is at fault
INVALID_BODY = re.compile(
    r"invalid|not supported|unsupported|unrecognized|unknown (field|parameter|argument|key|value)|validation error"
    r"|bad request|malformed|not allowed|extra inputs are not permitted|does not support",
    re.IGNORECASE,
)
MESSAGE_CHARS = 300


class Kind(enum.Enum):
    RETRY = "retry"
    INVALID = "invalid"
    FATAL = "fatal"


class AttemptTimeout(TimeoutError):
    """Our own deadline for an attempt passed (its message says which)."""


class StreamFailed(Exception):
    """The server sent an error inside a streamed reply."""


class ReplyCut(StreamFailed):
    """The reply ended before it was finished: a stream with no finish reason (whether or not ``[DONE]``
    came), a connection closed mid-body, a whole reply with ``finish_reason`` null. Always retried: what
    arrived is part of a reply, never a verdict (llama-cpp-python's ``interrupt_requests``, a server
    killed mid-reply and a proxy's timeout all look like this)."""


class AttemptError(Exception):
    """One attempt's error with where it went (an endpoint may differ between attempts)."""

    def __init__(self, cause: BaseException, where: str):
        super().__init__(str(cause))
        self.cause, self.where = cause, where


class TransportError(Exception):
    """A request that failed for good: ``kind``, ``status`` and a one-line ``message`` naming the endpoint."""

    def __init__(self, message: str, kind: Kind, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.message, self.kind, self.status, self.attempts = message, kind, status, attempts


class EndpointError(Exception):
    """The pre-flight check found an endpoint no request can succeed against."""


class EndpointUnreachable(EndpointError, ConnectionError):
    pass


class EndpointRefusesKey(EndpointError, PermissionError):
    pass


class EndpointNotFound(EndpointError, ValueError):
    pass


class UnknownModel(EndpointError, ValueError):
    pass


def body_text(err: openai.APIStatusError) -> str:
    """The server's own words: ``error.message`` of an OpenAI-style body, else the body as sent."""
    body: Any = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            extra = [str(inner[k]) for k in ("type", "code") if inner.get(k) and str(inner[k]) not in inner["message"]]
            return inner["message"] + (f" ({', '.join(extra)})" if extra else "")
        if isinstance(inner, str):
            return inner
        return json.dumps(body, ensure_ascii=False)
    if isinstance(body, str) and body:
        return body
    try:
        return err.response.text or err.message
    except Exception:
        return str(err.message)


def classify(err: BaseException) -> Kind:
    import openai

    if isinstance(err, AttemptError):
        return classify(err.cause)
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status in FATAL_STATUS:
            return Kind.FATAL
        if status in RETRY_STATUS:
            return Kind.RETRY
        if status >= 500:
            return Kind.INVALID if INVALID_BODY.search(body_text(err)) else Kind.RETRY
        return Kind.INVALID
    if isinstance(err, ReplyCut):
        return Kind.RETRY
    if isinstance(err, StreamFailed):
        return Kind.INVALID if INVALID_BODY.search(str(err)) else Kind.RETRY
    if isinstance(err, (openai.APIConnectionError, TimeoutError)):  # APITimeoutError is a connection error
        return Kind.RETRY
    return Kind.INVALID


def is_connect_failure(err: BaseException) -> bool:
    """No connection could be made at all (refused, unreachable, DNS, connect timeout): the server is
    not there, as opposed to a server that answered badly or dropped a reply midway."""
    import openai

    err = err.cause if isinstance(err, AttemptError) else err
    if not isinstance(err, openai.APIConnectionError):  # APITimeoutError is one too
        return False
    cause = err.__cause__
    return cause is not None and type(cause).__name__ in ("ConnectError", "ConnectTimeout")


def status_of(err: BaseException) -> int | None:
    import openai

    err = err.cause if isinstance(err, AttemptError) else err
    return err.status_code if isinstance(err, openai.APIStatusError) else None


def describe(err: BaseException, where: str, timeout_s: float | None = None) -> str:
    """``<where>: <what went wrong>`` in one scrubbed line."""
    import openai

    if isinstance(err, AttemptError):
        where, err = err.where, err.cause
    if isinstance(err, openai.APIStatusError):
        text = " ".join(body_text(err).split())
        what = f"HTTP {err.status_code}: {text[:MESSAGE_CHARS]}"
    elif isinstance(err, AttemptTimeout):
        what = f"timed out: {err}"
    elif isinstance(err, (openai.APITimeoutError, TimeoutError)):
        what = "timed out: no reply" + (f" within timeout_s={timeout_s:g}" if timeout_s else "")
    elif isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        what = f"connection failed: {type(cause).__name__ if cause else 'error'}: {cause or err}"
    elif isinstance(err, ReplyCut):
        what = f"reply cut off: {str(err)[:MESSAGE_CHARS]}"
    elif isinstance(err, StreamFailed):
        what = f"error in the streamed reply: {str(err)[:MESSAGE_CHARS]}"
    else:
        what = f"{type(err).__name__}: {err}"
    return secrets.scrub(f"{where}: {what}")


def retry_after(headers: Any) -> float | None:
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
