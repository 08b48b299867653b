"""Agreement coefficients against published worked examples and hand computations.

Sources of the expected numbers (none comes from the code under test):
- Krippendorff, K. (2011), "Computing Krippendorff's Alpha-Reliability", Annenberg School for
  Communication, Departmental Papers 43: example A (binary, 2 observers): alpha = 0.095; example C
  (4 observers, 12 units, missing values): nominal 0.743, ordinal 0.815, interval 0.849.
- Cohen's kappa textbook table (Wikipedia "Cohen's kappa", worked example): 50 items, yes/yes 20,
  yes/no 5, no/yes 10, no/no 15: p_o = 0.70, p_e = 0.50, kappa = 0.40.
- Weighted kappa and Spearman: computed by hand in this file from their textbook formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stepeval.judging.rubric import PACKAGED, load
from stepeval.validation import agreement

NAN = math.nan
# Krippendorff (2011), example C: rows are observers A-D, columns units 1-12, NaN = not coded
KRIPPENDORFF_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]
KRIPPENDORFF_A = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_the_published_example_with_missing_values(level, published):
    assert agreement.krippendorff_alpha(np.array(KRIPPENDORFF_C, dtype=float), level) == pytest.approx(published, abs=5e-4)


def test_krippendorff_alpha_binary_two_observers_matches_the_paper():
    assert agreement.krippendorff_alpha(np.array(KRIPPENDORFF_A, dtype=float), "nominal") == pytest.approx(0.095, abs=5e-4)


def nominal_alpha_by_hand(a: list[int], b: list[int]) -> float:
    """Two observers, no missing data: 1 - (n - 1) * D_o / sum_c n_c (n - n_c) over the coincidence matrix."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True)] + [(y, x) for x, y in zip(a, b, strict=True)]
    n = len(pairs)
    disagree = sum(x != y for x, y in pairs)
    counts = {v: sum(x == v for x, _ in pairs) for v in set(a) | set(b)}
    expected = sum(c * (n - c) for c in counts.values())
    return 1 - (n - 1) * disagree / expected


def test_krippendorff_binary_example_by_hand_formula():
    assert nominal_alpha_by_hand(*KRIPPENDORFF_A) == pytest.approx(0.095, abs=5e-4)  # the formula reproduces the paper
    assert agreement.krippendorff_alpha(np.array(KRIPPENDORFF_A, dtype=float), "nominal") == pytest.approx(
        nominal_alpha_by_hand(*KRIPPENDORFF_A)
    )


def test_cohen_kappa_textbook_table():
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert agreement.percent_agreement(a, b) == pytest.approx(0.70)
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.40)


def test_weighted_kappa_by_hand():
    a = [1, 2, 3, 4, 5, 5, 3, 2]
    b = [1, 3, 3, 5, 4, 5, 1, 2]
    k = 5
    observed = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        observed[x - 1, y - 1] += 1
    observed /= len(a)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    for weights, w in (("quadratic", (i - j) ** 2), ("linear", np.abs(i - j))):
        by_hand = 1 - (w * observed).sum() / (w * expected).sum()
        assert agreement.weighted_kappa(a, b, [1, 2, 3, 4, 5], weights) == pytest.approx(by_hand)
    # and worked out on paper: quadratic weights, sum w*O = (1 + 1 + 1 + 4) / 8; sum w*E = E[(X - Y)^2] for
    # independent X ~ a, Y ~ b = var(a) + var(b) + (mean a - mean b)^2 = 1.859375 + 2.25 + 0.015625 = 4.125
    assert agreement.weighted_kappa(a, b, [1, 2, 3, 4, 5]) == pytest.approx(1 - (7 / 8) / 4.125)


def test_spearman_by_hand_without_ties():
    a = [10, 20, 30, 40, 50]
    b = [1, 3, 2, 5, 4]
    d2 = sum((ra - rb) ** 2 for ra, rb in zip([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], strict=True))
    assert agreement.spearman(a, b) == pytest.approx(1 - 6 * d2 / (5 * (25 - 1)))  # = 0.8


def test_undefined_coefficients_are_missing_not_zero():
    assert agreement.cohen_kappa([1, 1, 1], [1, 1, 1]) is None
    assert agreement.spearman([3, 3, 3], [1, 2, 3]) is None
    assert agreement.krippendorff_alpha(np.array([[1.0, 1.0], [1.0, 1.0]]), "nominal") is None


def test_bootstrap_resamples_whole_conversations():
    # two conversations: one where the raters always agree, one where they always disagree; any resample
    # keeps a conversation's items together, so percent agreement can only be 0, 1/3, 1/2... of whole blocks
    units = [("c1", 0), ("c1", 1), ("c2", 0), ("c2", 1)]
    a, b = np.array([1, 0, 1, 0]), np.array([1, 0, 0, 1])
    low, high, _ = agreement.bootstrap(units, lambda i: float(np.mean(a[i] == b[i])), seed=3, resamples=400)
    assert (low, high) == (0.0, 1.0)
    draws = set()
    rng_units = agreement._clusters(units)
    assert [list(c) for c in rng_units] == [[0, 1], [2, 3]]
    for pick in ([0, 0], [0, 1], [1, 1]):
        index = np.concatenate([rng_units[p] for p in pick])
        draws.add(float(np.mean(a[index] == b[index])))
    assert draws == {0.0, 0.5, 1.0}


def test_entry_for_two_raters_on_a_likert_rubric():
    rubric = load(PACKAGED, "chat_score.v1")
    judge = {("c1", 0): 5.0, ("c1", 1): 4.0, ("c2", 0): 2.0, ("c3", 0): 1.0, ("c3", 1): None}
    human = {("c1", 0): 5.0, ("c1", 1): 3.0, ("c2", 0): 2.0, ("c3", 0): 2.0, ("c3", 1): 4.0}
    entry = agreement.entry("judge-human", rubric, ["judge", "ann"], judge, human, resamples=200)
    assert (entry["items"], entry["conversations"]) == (4, 3)  # the unscored judge item is left out
    values = {c["name"]: c["value"] for c in entry["coefficients"]}
    assert values["percent_agreement"] == pytest.approx(0.5)
    assert values["spearman"] == pytest.approx(agreement.spearman([5, 4, 2, 1], [5, 3, 2, 2]))
    sample_means = {**judge, ("c1", 1): 4.5}
    entry = agreement.entry("judge-human", rubric, ["judge", "ann"], sample_means, human, resamples=50)
    kappa = next(c for c in entry["coefficients"] if c["name"] == "weighted_kappa_quadratic")
    assert kappa["value"] is None and "sample means" in kappa["note"]


@pytest.mark.parametrize("weights, labels", [(None, [0.0, 1.0]), ("quadratic", [1.0, 2.0, 3.0, 4.0, 5.0]), ("linear", [1, 2, 3])])
def test_vectorised_bootstrap_kappas_equal_scikit_learn_on_the_same_resamples(weights, labels):
    """The interval's replicates come from summed confusion matrices; each must equal scikit-learn's kappa
    of the same resampled items (drawn here with the same generator and counts)."""
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(7)
    units = [(f"c{c}", t) for c in range(8) for t in range(rng.integers(1, 4))]
    a = rng.choice(labels, size=len(units)).astype(float)
    b = np.where(rng.random(len(units)) < 0.6, a, rng.choice(labels, size=len(units))).astype(float)
    draws = agreement.kappa_replicates(units, a, b, labels, weights, seed=11, resamples=40)
    clusters = agreement._clusters(units)
    counts = np.random.default_rng(11).multinomial(len(clusters), np.full(len(clusters), 1 / len(clusters)), size=40)
    expected = []
    for row in counts:
        index = np.concatenate([np.repeat(clusters[c], n) for c, n in enumerate(row) if n])
        value = cohen_kappa_score(a[index], b[index], labels=labels, weights=weights)
        if np.isfinite(value):
            expected.append(value)
    assert draws == pytest.approx(np.array(expected))
