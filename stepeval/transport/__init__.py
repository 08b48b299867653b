"""One OpenAI-compatible transport for models (the wire client) and judges.

The bottom layer for everything that talks HTTP to an endpoint: URLs with their credentials
split off and hidden (``urls``), client construction and the pre-flight ``GET /models``
(``clients``), what an error means and how to say it (``errors``: retryable or not, Retry-After),
our retry loop with backoff (``retry``), and rate and concurrency limits (``limits``).
Imports only the base modules (``stepeval.secrets``, ``stepeval.types``).
"""

from stepeval.transport.clients import check_models, check_models_async, open_client
from stepeval.transport.errors import (
    AttemptError,
    AttemptTimeout,
    EndpointError,
    EndpointNotFound,
    EndpointRefusesKey,
    EndpointUnreachable,
    Kind,
    ReplyCut,
    TransportError,
    UnknownModel,
    classify,
    describe,
    is_connect_failure,
    retry_after,
)
from stepeval.transport.limits import Limits, StartGate
from stepeval.transport.retry import Attempts, RetryPolicy, call_with_retries
from stepeval.transport.urls import EndpointURL

__all__ = [
    "AttemptError",
    "AttemptTimeout",
    "Attempts",
    "EndpointError",
    "EndpointNotFound",
    "EndpointRefusesKey",
    "EndpointURL",
    "EndpointUnreachable",
    "Kind",
    "Limits",
    "ReplyCut",
    "RetryPolicy",
    "StartGate",
    "TransportError",
    "UnknownModel",
    "call_with_retries",
    "check_models",
    "check_models_async",
    "classify",
    "describe",
    "is_connect_failure",
    "open_client",
    "retry_after",
]
