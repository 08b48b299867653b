"""Moved: retries, Retry-After, backoff, error descriptions and rate limits live in ``stepeval.transport``
(shared with the wire client); ``JudgeEndpointError`` in ``stepeval.judging.llm_judge``. These names
stay importable here only until ``stepeval/stages/judge.py`` imports them from there; then delete this file."""

from stepeval.judging.llm_judge import JudgeEndpointError
from stepeval.transport import Limits, RetryPolicy
from stepeval.transport import retry_after as retry_after_seconds

__all__ = ["JudgeEndpointError", "Limits", "RetryPolicy", "retry_after_seconds"]
