"""A judge client from the ``judge`` config group: one place that turns the config into a ``JudgeClient``,
for the judge stage and for judge validation alike."""

from __future__ import annotations

from omegaconf import DictConfig

from stepeval.judging.llm_judge import JudgeClient, Prices, Settings
from stepeval.transport import Limits, RetryPolicy


def endpoint(judge: DictConfig, modality: str) -> tuple[str | None, str | None]:
    """(model, base_url) of the text judge or, for ``audio``, the listening judge (falling back to the text one's)."""
    if modality == "audio":
        return judge.audio_model or judge.model, judge.audio_base_url or judge.base_url
    return judge.model, judge.base_url


def judge_client(judge: DictConfig, modality: str = "text", limits: Limits | None = None, seed_offset: int = 0) -> JudgeClient:
    """The client for one modality; ``limits`` shared between clients of one account; ``seed_offset`` shifts the
    seed (the self-consistency repeat of judge validation)."""
    model, base_url = endpoint(judge, modality)
    settings = Settings(
        temperature=judge.temperature,
        seed=None if judge.seed is None else int(judge.seed) + seed_offset,
        samples=judge.samples,
        structured_output=judge.structured_output,
        max_tokens=judge.max_tokens,
        timeout_s=judge.timeout_s,
        queue_timeout_s=judge.queue_timeout_s,
        max_waiting=judge.max_waiting,
        stream=judge.stream,
        circuit_failures=judge.get("circuit_failures", 5),
    )
    policy = RetryPolicy(judge.max_retries, judge.backoff_base_s, judge.backoff_max_s, judge.retry_after_max_s)
    prices = Prices(judge.price_input_per_mtok, judge.price_output_per_mtok, judge.price_audio_input_per_mtok)
    limits = limits or Limits(judge.requests_per_minute, judge.tokens_per_minute)
    return JudgeClient(str(model), base_url, judge.api_key, settings, policy, limits, prices)
