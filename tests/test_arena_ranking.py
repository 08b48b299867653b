"""Bradley-Terry strengths, win rates and the debiasing of two-order verdicts, checked against values computed
independently of the project's code (closed forms and Zermelo's maximum-likelihood condition)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stepeval.arena import plan
from stepeval.arena.pairwise import Answer, decide
from stepeval.arena.ranking import Outcome, bradley_terry, rank_systems, win_matrix


def games(i: int, j: int, wins: int, losses: int, ties: int = 0, conversation: str = "c") -> list[Outcome]:
    return (
        [Outcome(f"{conversation}{k}", i, j, 1.0) for k in range(wins)]
        + [Outcome(f"{conversation}w{k}", i, j, 0.0) for k in range(losses)]
        + [Outcome(f"{conversation}t{k}", i, j, 0.5) for k in range(ties)]
    )


def test_two_systems_match_the_closed_form():
    # the textbook two-player case: the MLE strength gap is log(wins / losses); a tie is half a win each
    s = bradley_terry(2, games(0, 1, wins=30, losses=10), alpha=1e-6)
    assert s[0] - s[1] == pytest.approx(math.log(3.0), abs=1e-3)
    s = bradley_terry(2, games(0, 1, wins=12, losses=4, ties=8), alpha=1e-6)
    assert s[0] - s[1] == pytest.approx(math.log(16 / 8), abs=1e-3)
    assert s.sum() == pytest.approx(0.0, abs=1e-9)  # centred


def test_three_systems_satisfy_zermelos_condition():
    """At the maximum of the likelihood each system's observed wins equal its expected wins (Zermelo 1929)."""
    results = games(0, 1, 7, 3) + games(1, 2, 6, 4) + games(0, 2, 8, 2)
    s = bradley_terry(3, results, alpha=1e-6)
    p = 1 / (1 + np.exp(-(s[:, None] - s[None, :])))
    wins = {0: 7 + 8, 1: 3 + 6, 2: 4 + 2}
    played = {(0, 1): 10, (1, 2): 10, (0, 2): 10}
    for k in range(3):
        expected = sum(n * (p[k, b] if a == k else p[k, a]) for (a, b), n in played.items() if k in (a, b))
        assert expected == pytest.approx(wins[k], abs=1e-2)
    assert s[0] > s[1] > s[2]


def test_win_matrix_counts_ties_as_half():
    rates, count = win_matrix(2, games(0, 1, wins=2, losses=1, ties=1))
    assert rates[0, 1] == pytest.approx(2.5 / 4) and rates[1, 0] == pytest.approx(1.5 / 4)
    assert count[0, 1] == 4 and math.isnan(rates[0, 0])


def test_bootstrap_intervals_cover_the_estimate_and_ranks_are_probable():
    results = []
    for c in range(12):  # a clear order over 12 conversations
        results += [Outcome(f"c{c}", 0, 1, 1.0), Outcome(f"c{c}", 1, 2, 1.0), Outcome(f"c{c}", 0, 2, 1.0)]
        if c % 4 == 0:
            results.append(Outcome(f"c{c}", 0, 1, 0.0))
    ranking = rank_systems(["a", "b", "c"], results, resamples=300, seed=1)
    assert list(ranking.rank) == [1, 2, 3]
    assert np.all(ranking.strength_low <= ranking.strengths) and np.all(ranking.strengths <= ranking.strength_high)
    assert ranking.strength_low[0] > ranking.strength_high[2]
    assert ranking.rank_probability[2] > 0.8
    again = rank_systems(["a", "b", "c"], results, resamples=300, seed=1)
    assert np.array_equal(again.strength_low, ranking.strength_low)  # seeded: the same on every machine


def answer(grade):
    return Answer(grade, "ok" if grade else "unparseable", None if grade else "unparseable judge reply", None, False)


def test_order_dependent_verdicts_are_ties_and_position_bias_is_counted():
    agree = decide(answer("A"), answer("B"))  # x first: A; x second: B -> x won in both orders
    assert (agree.score, agree.position_biased, agree.order_dependent) == (1.0, False, False)
    assert decide(answer("B"), answer("A")).score == 0.0
    biased = decide(answer("A"), answer("A"))  # always the first position
    assert (biased.score, biased.position_biased, biased.order_dependent) == (0.5, True, True)
    flip = decide(answer("tie"), answer("B"))
    assert (flip.score, flip.position_biased, flip.order_dependent) == (0.5, False, True)
    missing = decide(answer(None), answer("B"))
    assert missing.score is None and missing.missing == "unparseable judge reply"


def test_a_budget_covers_every_pair_evenly_and_a_new_system_keeps_a_prefix():
    turns = {(f"c{k}", 0) for k in range(20)}
    three = plan.plan({"a": turns, "b": turns, "c": turns}, {}, max_pairs=30)
    per_pair = {}
    for comparison in three:
        per_pair.setdefault((comparison.x, comparison.y), []).append(comparison.key)
    assert sorted(per_pair) == [("a", "b"), ("a", "c"), ("b", "c")] and {len(v) for v in per_pair.values()} == {10}
    four = plan.plan({"a": turns, "b": turns, "c": turns, "d": turns}, {}, max_pairs=30)
    for (x, y), keys in per_pair.items():
        kept = [c.key for c in four if (c.x, c.y) == (x, y)]
        assert kept == keys[: len(kept)] and len(kept) == 5  # a prefix: its answers are in the cache
    controls = plan.plan({"a": turns, "b": turns, "a+copy": turns}, {"a+copy": "a"})
    assert {(c.x, c.y) for c in controls} == {("a", "b"), ("a", "a+copy")}
