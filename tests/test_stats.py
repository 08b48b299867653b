"""Cluster bootstrap intervals and the paired comparison, on synthetic scores with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepeval.reporting.stats import cluster_bootstrap, paired_compare, sign_flip_p


def frame(values_by_conversation: dict[str, list[float]], metric: str = "m") -> pd.DataFrame:
    rows = [
        {"conversation_id": cid, "turn": turn, "category": "c", "metric": metric, "value": value, "stage": "score"}
        for cid, values in values_by_conversation.items()
        for turn, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


def synthetic(rng: np.random.Generator, conversations: int, shift: float = 0.0) -> dict[str, list[float]]:
    """Scores with a per-conversation effect (turns of one conversation are correlated) and 1-4 turns each."""
    out = {}
    for i in range(conversations):
        effect = rng.normal(0.0, 1.0)
        out[f"c{i}"] = list(shift + effect + rng.normal(0.0, 0.5, size=int(rng.integers(1, 5))))
    return out


def test_interval_is_the_pooled_mean_with_counts_and_a_recorded_seed():
    data = {"a": [1.0, 2.0, np.nan], "b": [3.0], "c": [np.nan], "d": [0.0, 4.0]}
    cell = cluster_bootstrap(frame(data), seed=7)
    assert cell.mean == pytest.approx((1 + 2 + 3 + 0 + 4) / 5)
    assert (cell.scored, cell.missing, cell.conversations) == (5, 2, 3)  # "c" has no scored turn
    assert cell.seed == 7 and cell.resamples > 0
    assert cell.low <= cell.mean <= cell.high
    # same seed, same interval; another seed may differ but stays around the mean
    assert cluster_bootstrap(frame(data), seed=7) == cell


def test_resampling_keeps_a_conversations_turns_together():
    # 4 conversations of 50 identical turns: a turn-level bootstrap would see 200 independent values and
    # give a width of ~0.14; only 4 independent units exist, so the interval must stay wide
    data = {"a": [0.0] * 50, "b": [0.0] * 50, "c": [1.0] * 50, "d": [1.0] * 50}
    cell = cluster_bootstrap(frame(data))
    assert cell.mean == pytest.approx(0.5)
    assert cell.high - cell.low >= 0.5
    turn_level = cluster_bootstrap(frame({f"t{i}": [v] for i, v in enumerate([0.0] * 100 + [1.0] * 100)}))
    assert turn_level.high - turn_level.low < 0.2


def test_interval_width_shrinks_as_conversations_are_added():
    widths = []
    for size in (8, 32, 128, 512):
        rng = np.random.default_rng(size)
        cell = cluster_bootstrap(frame(synthetic(rng, size)), seed=1)
        widths.append(cell.high - cell.low)
    assert all(later < earlier for earlier, later in zip(widths, widths[1:], strict=False)), widths
    assert widths[-1] < widths[0] / 4  # ~1/sqrt(n): 64 times the conversations, ~8 times narrower


def test_no_interval_from_a_single_conversation_and_nothing_from_no_scores():
    one = cluster_bootstrap(frame({"a": [1.0, 0.0, 1.0]}))
    assert one.mean == pytest.approx(2 / 3) and one.low is None and one.high is None
    empty = cluster_bootstrap(frame({"a": [np.nan], "b": [np.nan]}))
    assert empty.mean is None and (empty.scored, empty.missing, empty.conversations) == (0, 2, 0)


def test_constant_scores_give_a_zero_width_interval_at_the_value():
    cell = cluster_bootstrap(frame({f"c{i}": [5.595562] * (i % 3 + 1) for i in range(10)}))
    assert cell.low == cell.high == cell.mean == pytest.approx(5.595562)


def test_a_run_against_itself_has_no_difference():
    data = frame(synthetic(np.random.default_rng(3), 20))
    result = paired_compare(data, data.copy(), "m")
    assert result.difference == 0.0
    assert (result.low, result.high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert (result.conversations, result.excluded_turns, result.excluded_conversations) == (20, 0, 0)


def test_a_planted_difference_is_found_with_its_size():
    rng = np.random.default_rng(11)
    base = synthetic(rng, 40)
    cand = {cid: [v + 0.3 + rng.normal(0.0, 0.1) for v in values] for cid, values in base.items()}
    result = paired_compare(frame(base), frame(cand), "m")
    assert result.difference == pytest.approx(0.3, abs=0.05)
    assert result.low > 0.2 and result.high < 0.4
    assert result.p_value < 0.01
    assert "sign-flip" in result.p_method


def test_noise_without_a_shift_is_not_significant():
    rng = np.random.default_rng(5)
    base = synthetic(rng, 12)
    cand = {cid: [v + rng.normal(0.0, 0.05) for v in values] for cid, values in base.items()}
    result = paired_compare(frame(base), frame(cand), "m")
    assert result.p_value > 0.05
    assert result.low < 0 < result.high


def test_turns_missing_in_either_run_are_excluded_and_counted():
    base = frame({"a": [1.0, 1.0], "b": [1.0, np.nan], "c": [0.0], "d": [1.0]})
    cand = frame({"a": [0.0, 0.0], "b": [0.0, 0.0], "c": [np.nan]})  # "d" absent from the candidate
    result = paired_compare(base, cand, "m")
    # paired: a0, a1, b0 -> differences -1, -1, -1
    assert result.turns == 3 and result.conversations == 2
    assert result.excluded_turns == 3  # b1 (missing in baseline), c0 (missing in candidate), d0 (absent)
    assert result.excluded_conversations == 2  # c and d
    assert result.difference == pytest.approx(-1.0)
    assert result.baseline_mean == pytest.approx(1.0) and result.candidate_mean == pytest.approx(0.0)


def test_no_paired_turn_gives_no_result_but_the_counts():
    result = paired_compare(frame({"a": [1.0]}), frame({"a": [np.nan]}), "m")
    assert result.difference is None and result.p_value is None and result.excluded_turns == 1


def test_exact_sign_flip_p_value():
    # three conversations, each +1: of the 8 sign patterns only all-plus and all-minus reach |mean| = 1
    rng = np.random.default_rng(0)
    p, method = sign_flip_p(np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0]), 100, rng)
    assert p == pytest.approx(2 / 8) and "exact" in method
    # beyond the exact limit the p-value is estimated and never 0
    p, method = sign_flip_p(np.ones(30), np.ones(30), 500, rng)
    assert p == pytest.approx(1 / 501) and "random" in method


def test_a_metric_emitted_twice_for_one_turn_is_an_error():
    doubled = pd.concat([frame({"a": [1.0]}), frame({"a": [0.0]}).assign(stage="judge-m")])
    with pytest.raises(ValueError, match="'m'.*judge-m.*score"):
        paired_compare(doubled, doubled, "m")
