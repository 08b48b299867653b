"""Confidence intervals and paired tests that respect conversations.

The turns of one conversation share a topic, a speaker and the model's own history, so they
are not independent draws. Every interval here therefore resamples whole *conversations*
(cluster bootstrap): a conversation's turn values always travel together. The estimate is the
pooled mean over turns (the same number the summary tables show), so resampling weights each
conversation by how many scored turns it has.

Randomness comes from one ``numpy.random.Generator`` seeded with a recorded seed: the same
input and seed give the same interval on every machine.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
# sign flips are enumerated exactly up to this many conversations (2**16 patterns); sampled beyond
EXACT_FLIP_LIMIT = 16


@dataclass
class Interval:
    """Pooled mean over scored turns with a cluster-bootstrap interval over conversations."""

    mean: float | None
    low: float | None
    high: float | None
    scored: int  # turns with a value
    missing: int  # turns whose value is missing (NaN), never averaged in
    conversations: int  # conversations with at least one scored turn
    level: float = DEFAULT_LEVEL
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PairedResult:
    """Candidate minus baseline on the turns both runs scored."""

    metric: str
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    conversations: int  # conversations with at least one turn scored in both runs
    turns: int  # turns scored in both runs
    excluded_turns: int  # turns scored in only one of the runs (or in neither)
    excluded_conversations: int  # conversations with no turn scored in both runs
    baseline_mean: float | None = None  # over the paired turns only
    candidate_mean: float | None = None
    level: float = DEFAULT_LEVEL
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    p_method: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _clusters(frame: pd.DataFrame, value: str = "value") -> tuple[np.ndarray, np.ndarray]:
    """Per conversation: sum and count of the non-missing values (conversations without any dropped)."""
    scored = frame.dropna(subset=[value])
    grouped = scored.groupby("conversation_id", sort=True)[value]
    return grouped.sum().to_numpy(dtype=float), grouped.count().to_numpy(dtype=float)


def _bootstrap_means(sums: np.ndarray, counts: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Pooled means of ``resamples`` resamples of the conversations (multinomial weights = draws with replacement)."""
    n = len(sums)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    return (weights @ sums) / (weights @ counts)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)


def _clamp(bounds: tuple[float, float], estimate: float, values: pd.Series) -> tuple[float, float]:
    """Float noise can put a resampled mean of identical values a hair outside them: a mean never leaves
    [min, max] of its values, and an interval never excludes its own estimate."""
    low, high = max(bounds[0], float(values.min())), min(bounds[1], float(values.max()))
    return min(low, estimate), max(high, estimate)


def cluster_bootstrap(
    frame: pd.DataFrame,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Interval for the pooled mean of ``frame['value']`` (one metric), resampling conversations.

    ``frame`` needs ``conversation_id`` and ``value`` (NaN = missing). With fewer than two scored
    conversations no interval can be estimated and ``low``/``high`` are None.
    """
    values = frame["value"].astype(float)
    scored, missing = int(values.notna().sum()), int(values.isna().sum())
    sums, counts = _clusters(frame)
    base = {"scored": scored, "missing": missing, "conversations": len(sums), "level": level, "resamples": resamples}
    if not len(sums):
        return Interval(None, None, None, seed=seed, **base)
    scored_values = values.dropna()
    # float noise can put the mean of identical values a hair off them: a mean never leaves [min, max]
    mean = min(max(float(sums.sum() / counts.sum()), float(scored_values.min())), float(scored_values.max()))
    if len(sums) < 2:
        return Interval(mean, None, None, seed=seed, **base)
    rng = np.random.default_rng(seed)
    low, high = _clamp(_percentiles(_bootstrap_means(sums, counts, resamples, rng), level), mean, scored_values)
    return Interval(mean, low, high, seed=seed, **base)


def metric_frame(frame: pd.DataFrame, metric: str, label: str = "run") -> pd.DataFrame:
    """One metric's rows; two rows for one turn (two stages emitting the same name) is an error, not a silent pick."""
    part = frame[frame["metric"] == metric]
    dupes = part[part.duplicated(["conversation_id", "turn"], keep=False)]
    if len(dupes):
        first = dupes.iloc[0]
        stages = sorted(set(dupes["stage"].dropna()))
        raise ValueError(
            f"{label}: metric {metric!r} has {len(dupes)} rows for repeated turns (e.g. {first['conversation_id']} "
            f"turn {first['turn']}) from stages {stages}: two score logs emit the same metric name"
        )
    return part


def pair_turns(baseline: pd.DataFrame, candidate: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Turns scored in both runs (one metric each), and how many turns/conversations fell out.

    Returns (paired frame with ``conversation_id``, ``turn``, ``baseline``, ``candidate``, ``diff``;
    excluded turns; excluded conversations).
    """
    keys = ["conversation_id", "turn"]
    left = baseline[[*keys, "value"]].rename(columns={"value": "baseline"})
    right = candidate[[*keys, "value"]].rename(columns={"value": "candidate"})
    merged = left.merge(right, on=keys, how="outer")
    ok = merged["baseline"].notna() & merged["candidate"].notna()
    paired = merged[ok].copy()
    paired["diff"] = paired["candidate"] - paired["baseline"]
    all_conversations = set(merged["conversation_id"])
    used = set(paired["conversation_id"])
    return paired, int((~ok).sum()), len(all_conversations - used)


def sign_flip_p(sums: np.ndarray, counts: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, str]:
    """Two-sided p-value of the pooled mean difference under "no difference": each conversation's
    summed difference is equally likely to have either sign. Exact enumeration for few conversations."""
    total = counts.sum()
    observed = abs(sums.sum() / total)
    tolerance = 1e-12 * max(1.0, float(np.abs(sums).sum()))
    n = len(sums)
    if n <= EXACT_FLIP_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        stats = np.abs(signs @ sums) / total
        return float(np.mean(stats >= observed - tolerance)), f"exact sign-flip over {len(signs)} patterns"
    signs = rng.choice((1.0, -1.0), size=(resamples, n))
    stats = np.abs(signs @ sums) / total
    hits = int(np.sum(stats >= observed - tolerance))
    return (hits + 1) / (resamples + 1), f"sign-flip, {resamples} random patterns"


def paired_compare(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    metric: str,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> PairedResult:
    """Candidate minus baseline for ``metric``, on the same conversations and turns.

    ``baseline``/``candidate`` are ``records.turn_scores`` frames (all metrics; filtered here).
    The interval is a paired cluster bootstrap (a conversation's turn differences resampled
    together); the p-value is a sign-flip permutation test over conversations.
    """
    base = metric_frame(baseline, metric, "baseline")
    cand = metric_frame(candidate, metric, "candidate")
    paired, excluded_turns, excluded_conversations = pair_turns(base, cand)
    sums, counts = _clusters(paired, "diff")
    common = {
        "metric": metric,
        "conversations": len(sums),
        "turns": len(paired),
        "excluded_turns": excluded_turns,
        "excluded_conversations": excluded_conversations,
        "level": level,
        "resamples": resamples,
        "seed": seed,
    }
    if not len(sums):
        return PairedResult(
            difference=None, low=None, high=None, p_value=None, notes=["no turn is scored in both runs"], **common
        )
    rng = np.random.default_rng(seed)
    difference = min(max(float(sums.sum() / counts.sum()), float(paired["diff"].min())), float(paired["diff"].max()))
    means = {"baseline_mean": float(paired["baseline"].mean()), "candidate_mean": float(paired["candidate"].mean())}
    p_value, method = sign_flip_p(sums, counts, resamples, rng)
    if len(sums) < 2:
        note = "one paired conversation: no interval"
        return PairedResult(
            difference=difference, low=None, high=None, p_value=p_value, p_method=method, notes=[note], **means, **common
        )
    low, high = _clamp(_percentiles(_bootstrap_means(sums, counts, resamples, rng), level), difference, paired["diff"])
    return PairedResult(difference=difference, low=low, high=high, p_value=p_value, p_method=method, **means, **common)
