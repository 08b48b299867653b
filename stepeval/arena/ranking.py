"""Ranking systems from pairwise verdicts: Bradley-Terry strengths, win rates and rank probabilities, each with a
bootstrap over conversations.

Bradley-Terry: P(i beats j) = 1 / (1 + exp(-(s_i - s_j))). Strengths are fitted by ``choix.opt_pairwise`` (maximum
likelihood with a weak L2 penalty, ``ALPHA``, that keeps them finite when a system wins every comparison) and
centred on 0. **Ties count as half a win for each side**: every decided comparison enters the fit twice, a tie once
in each direction, which gives the likelihood of half wins (Rao-Kupper and Davidson model ties with an extra
parameter instead; half wins are what Chatbot Arena and MT-Bench's win rates use).

Turns of one conversation share a topic and the systems' histories, so intervals resample whole conversations
(as ``reporting.stats`` does for absolute scores). One seeded generator: the same verdicts and seed give the same
intervals on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.01  # L2 penalty on the strengths: finite strengths for a system that never loses; negligible otherwise
RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Outcome:
    """One debiased comparison: ``score`` is what system ``i`` earned against ``j`` (1 win, 0 loss, 0.5 tie)."""

    conversation_id: str
    i: int
    j: int
    score: float


def bradley_terry(n: int, outcomes: Sequence[Outcome], alpha: float = ALPHA) -> np.ndarray:
    """Strengths (log scale, mean 0) of ``n`` systems; a system in no comparison gets 0."""
    import choix

    data: list[tuple[int, int]] = []
    for o in outcomes:
        if o.score == 1.0:
            data += [(o.i, o.j), (o.i, o.j)]
        elif o.score == 0.0:
            data += [(o.j, o.i), (o.j, o.i)]
        else:
            data += [(o.i, o.j), (o.j, o.i)]
    if not data:
        return np.zeros(n)
    params = np.asarray(choix.opt_pairwise(n, data, alpha=alpha), dtype=float)
    return params - params.mean()


def win_matrix(n: int, outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray]:
    """(share of the points system i earned against j, number of comparisons); NaN where they never met."""
    points = np.zeros((n, n))
    games = np.zeros((n, n))
    for o in outcomes:
        points[o.i, o.j] += o.score
        points[o.j, o.i] += 1.0 - o.score
        games[o.i, o.j] += 1
        games[o.j, o.i] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, points / np.where(games > 0, games, 1), np.nan), games


def ranks(strengths: np.ndarray) -> np.ndarray:
    """Rank of each system (1 = strongest); equal strengths share the better rank."""
    order = -strengths
    return np.array([1 + int(np.sum(order < order[k] - 1e-12)) for k in range(strengths.size)])


@dataclass
class Ranking:
    systems: list[str]
    strengths: np.ndarray
    strength_low: np.ndarray
    strength_high: np.ndarray
    rank: np.ndarray
    rank_probability: np.ndarray  # share of bootstrap replicates that put each system at its estimated rank
    win_rate: np.ndarray
    win_low: np.ndarray
    win_high: np.ndarray
    games: np.ndarray
    comparisons: int
    conversations: int
    resamples: int
    seed: int
    level: float

    def to_json(self) -> dict:
        def clean(a: np.ndarray) -> list:
            return [None if not np.isfinite(v) else round(float(v), 6) for v in np.ravel(a)]

        n = len(self.systems)
        return {
            "systems": [
                {
                    "system": s,
                    "strength": clean(self.strengths[[k]])[0],
                    "low": clean(self.strength_low[[k]])[0],
                    "high": clean(self.strength_high[[k]])[0],
                    "rank": int(self.rank[k]),
                    "rank_probability": clean(self.rank_probability[[k]])[0],
                }
                for k, s in enumerate(self.systems)
            ],
            "win_rate": {
                a: {
                    b: {
                        "rate": clean(self.win_rate[[i], [j]])[0],
                        "low": clean(self.win_low[[i], [j]])[0],
                        "high": clean(self.win_high[[i], [j]])[0],
                        "comparisons": int(self.games[i, j]),
                    }
                    for j, b in enumerate(self.systems)
                    if j != i
                }
                for i, a in enumerate(self.systems)
            }
            if n
            else {},
            "comparisons": self.comparisons,
            "conversations": self.conversations,
            "model": f"Bradley-Terry (choix.opt_pairwise), ties as half wins, L2 alpha={ALPHA:g}",
            "interval": {"method": "bootstrap over conversations", "resamples": self.resamples, "level": self.level},
            "seed": self.seed,
        }


def rank_systems(
    systems: list[str], outcomes: Sequence[Outcome], resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Ranking:
    """Strengths, win rates and their bootstrap intervals over conversations."""
    n = len(systems)
    strengths = bradley_terry(n, outcomes)
    rates, games = win_matrix(n, outcomes)
    estimate = ranks(strengths)
    by_conversation: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_conversation.setdefault(o.conversation_id, []).append(o)
    groups = list(by_conversation.values())
    rng = np.random.default_rng(seed)
    draws_s = np.full((resamples, n), np.nan)
    draws_w = np.full((resamples, n, n), np.nan)
    at_rank = np.zeros(n)
    for r in range(resamples if groups else 0):
        picked = rng.integers(0, len(groups), len(groups))
        sample = [o for g in picked for o in groups[g]]
        draws_s[r] = bradley_terry(n, sample)
        draws_w[r] = win_matrix(n, sample)[0]
        at_rank += ranks(draws_s[r]) == estimate
    tail = (1 - level) / 2 * 100

    def bounds(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not groups:
            shape = draws.shape[1:]
            return np.full(shape, np.nan), np.full(shape, np.nan)
        with np.errstate(invalid="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN cell: the pair never met
                return np.nanpercentile(draws, tail, axis=0), np.nanpercentile(draws, 100 - tail, axis=0)

    s_low, s_high = bounds(draws_s)
    w_low, w_high = bounds(draws_w)
    return Ranking(
        systems=list(systems),
        strengths=strengths,
        strength_low=s_low,
        strength_high=s_high,
        rank=estimate,
        rank_probability=at_rank / resamples if groups else np.full(n, np.nan),
        win_rate=rates,
        win_low=w_low,
        win_high=w_high,
        games=games,
        comparisons=len(outcomes),
        conversations=len(groups),
        resamples=resamples,
        seed=seed,
        level=level,
    )
