"""Agreement between raters (a judge twice, two judges, a judge and people), with intervals.

The coefficients come from maintained libraries (scikit-learn's Cohen's kappa, SciPy's Spearman,
the ``krippendorff`` package), checked in the tests against published worked examples. Items of
one conversation are not independent, so every interval resamples whole conversations (the same
cluster bootstrap the score tables use), with a recorded seed.

yes/no verdicts: percent agreement, Cohen's kappa (and nominal alpha for many raters).
1-5 scores: exact agreement, quadratic-weighted kappa, Spearman's rho (and ordinal alpha).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import krippendorff
import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from stepeval.reporting.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED

Unit = tuple[str, int]  # (conversation id, turn): an item's key; the conversation is the resampling cluster


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def percent_agreement(a: Sequence, b: Sequence) -> float | None:
    return float(np.mean(np.asarray(a) == np.asarray(b))) if len(a) else None


def cohen_kappa(a: Sequence, b: Sequence, labels: Sequence | None = None) -> float | None:
    """Cohen's kappa (None where undefined: both raters gave one and the same label throughout)."""
    if not len(a):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _finite(cohen_kappa_score(list(a), list(b), labels=list(labels) if labels is not None else None))


def weighted_kappa(a: Sequence, b: Sequence, labels: Sequence, weights: str = "quadratic") -> float | None:
    """Weighted kappa over ordered ``labels`` (disagreement weighted by squared or absolute distance in rank)."""
    if not len(a):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _finite(cohen_kappa_score(list(a), list(b), labels=list(labels), weights=weights))


def spearman(a: Sequence, b: Sequence) -> float | None:
    """Spearman's rho (None where undefined: fewer than two items or a constant rater)."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _finite(spearmanr(a, b).statistic)


def krippendorff_alpha(matrix: np.ndarray, level: str) -> float | None:
    """Krippendorff's alpha; ``matrix`` is raters x units with NaN where a rater did not rate a unit."""
    matrix = np.asarray(matrix, dtype=float)
    pairable = np.sum(np.sum(~np.isnan(matrix), axis=0) >= 2)
    values = matrix[~np.isnan(matrix)]
    if pairable < 1 or len(np.unique(values)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _finite(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


@dataclass
class Coefficient:
    name: str
    value: float | None
    low: float | None = None
    high: float | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _clusters(units: Sequence[Unit]) -> list[np.ndarray]:
    groups: dict[str, list[int]] = {}
    for index, (conversation, _) in enumerate(units):
        groups.setdefault(conversation, []).append(index)
    return [np.asarray(v) for _, v in sorted(groups.items())]


def bootstrap(
    units: Sequence[Unit],
    statistic: Callable[[np.ndarray], float | None],
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> tuple[float | None, float | None, str | None]:
    """Percentile interval of ``statistic(indices)`` resampling conversations with replacement.

    Resamples where the statistic is undefined (e.g. every drawn item has one label) are left out
    and counted in the note; fewer than two conversations give no interval."""
    clusters = _clusters(units)
    if len(clusters) < 2:
        return None, None, f"no interval: {len(clusters)} conversation(s)"
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        picked = rng.integers(0, len(clusters), size=len(clusters))
        value = statistic(np.concatenate([clusters[i] for i in picked]))
        if value is not None:
            draws.append(value)
    if len(draws) < resamples / 2:
        return None, None, f"no interval: undefined in {resamples - len(draws)} of {resamples} resamples"
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    note = f"undefined in {resamples - len(draws)} of {resamples} resamples (left out)" if len(draws) < resamples else None
    return float(low), float(high), note


def kappa_replicates(
    units: Sequence[Unit], a: np.ndarray, b: np.ndarray, labels: Sequence, weights: str | None, seed: int, resamples: int
) -> np.ndarray:
    """Cohen's kappa (weighted or not) of ``resamples`` conversation resamples, all at once.

    A resample's confusion matrix is the sum of its drawn conversations' confusion matrices, so the
    kappas come from one tensor product instead of thousands of library calls; the formula is
    scikit-learn's (1 - sum(w * observed) / sum(w * expected)) and the tests check both agree."""
    index = {float(v): i for i, v in enumerate(labels)}
    k = len(labels)
    clusters = _clusters(units)
    per_cluster = np.zeros((len(clusters), k, k))
    for c, members in enumerate(clusters):
        for m in members:
            per_cluster[c, index[float(a[m])], index[float(b[m])]] += 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(clusters), np.full(len(clusters), 1.0 / len(clusters)), size=resamples).astype(float)
    confusion = np.einsum("rc,cij->rij", counts, per_cluster)
    rows, cols = confusion.sum(axis=2), confusion.sum(axis=1)
    expected = rows[:, :, None] * cols[:, None, :] / confusion.sum(axis=(1, 2))[:, None, None]
    i, j = np.indices((k, k))
    w = {None: (i != j).astype(float), "linear": np.abs(i - j).astype(float), "quadratic": ((i - j) ** 2).astype(float)}[weights]
    denominator = (w * expected).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        kappas = 1.0 - (w * confusion).sum(axis=(1, 2)) / denominator
    return kappas[np.isfinite(kappas) & (denominator > 0)]


def _kappa(name: str, units, a, b, labels, weights, seed, resamples, level) -> Coefficient:
    """A kappa from scikit-learn, its interval from ``kappa_replicates``."""
    value = weighted_kappa(a, b, labels, weights) if weights else cohen_kappa(a, b, labels=labels)
    if value is None:
        return Coefficient(name, None, note="undefined on these items (both raters gave one and the same grade throughout)")
    if len(_clusters(units)) < 2:
        return Coefficient(name, value, note="no interval: 1 conversation")
    draws = kappa_replicates(units, a, b, labels, weights, seed, resamples)
    if len(draws) < resamples / 2:
        return Coefficient(name, value, note=f"no interval: undefined in {resamples - len(draws)} of {resamples} resamples")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    note = f"undefined in {resamples - len(draws)} of {resamples} resamples (left out)" if len(draws) < resamples else None
    return Coefficient(name, value, float(low), float(high), note)


def _coefficient(name: str, units, statistic, seed, resamples, level) -> Coefficient:
    value = statistic(np.arange(len(units)))
    if value is None:
        return Coefficient(name, None, note="undefined on these items (a rater gave one grade throughout, or too few items)")
    low, high, note = bootstrap(units, statistic, seed, resamples, level)
    return Coefficient(name, value, low, high, note)


def pairwise(
    units: Sequence[Unit],
    a: Sequence[float],
    b: Sequence[float],
    scale: str,
    allowed: Sequence,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> list[Coefficient]:
    """Coefficients for two raters over the same items (both rated: no missing values here).

    ``scale`` is the rubric's (``yes_no``: values 1.0/0.0; ``likert``: the allowed integers). Weighted
    kappa needs grades: where a value is not one (a mean of several judge samples) it is left out
    with the reason, and only Spearman is given for the scale."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    args = (seed, resamples, level)
    out = [_coefficient("percent_agreement", units, lambda i: percent_agreement(a_arr[i], b_arr[i]), *args)]
    if scale == "yes_no":
        out.append(_kappa("cohen_kappa", units, a_arr, b_arr, [0.0, 1.0], None, *args))
        out.append(_coefficient("krippendorff_alpha_nominal", units, lambda i: _alpha2(a_arr[i], b_arr[i], "nominal"), *args))
        return out
    grades = [float(g) for g in allowed]
    if set(a_arr) <= set(grades) and set(b_arr) <= set(grades):
        out.append(_kappa("weighted_kappa_quadratic", units, a_arr, b_arr, grades, "quadratic", *args))
    else:
        out.append(Coefficient("weighted_kappa_quadratic", None, note="values are not single grades (sample means)"))
    out.append(_coefficient("spearman", units, lambda i: spearman(a_arr[i], b_arr[i]), *args))
    out.append(_coefficient("krippendorff_alpha_ordinal", units, lambda i: _alpha2(a_arr[i], b_arr[i], "ordinal"), *args))
    return out


def _alpha2(a: np.ndarray, b: np.ndarray, level: str) -> float | None:
    return krippendorff_alpha(np.vstack([a, b]), level)


def nominal(
    units: Sequence[Unit],
    a: Sequence[float],
    b: Sequence[float],
    labels: Sequence[float],
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> list[Coefficient]:
    """Percent agreement and Cohen's kappa over unordered class ``labels`` (integers: e.g. an A/B verdict's x, y,
    tie as 0, 1, 2), with intervals over conversations."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    args = (seed, resamples, level)
    return [
        _coefficient("percent_agreement", units, lambda i: percent_agreement(a_arr[i], b_arr[i]), *args),
        _kappa("cohen_kappa", units, a_arr, b_arr, list(labels), None, *args),
    ]


def many(
    units: Sequence[Unit],
    matrix: np.ndarray,
    scale: str,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> Coefficient:
    """Krippendorff's alpha over any number of raters (rows; NaN: not rated), nominal for yes/no, ordinal for 1-5."""
    level_name = "nominal" if scale == "yes_no" else "ordinal"
    matrix = np.asarray(matrix, dtype=float)
    return _coefficient(
        f"krippendorff_alpha_{level_name}", units, lambda i: krippendorff_alpha(matrix[:, i], level_name), seed, resamples, level
    )


def entry(
    kind: str, rubric, raters: list[str], a: dict, b: dict, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES
) -> dict:
    """Two raters' values ({unit: value}, None: unscored) on one rubric, as a validation.json agreement entry."""
    units = sorted(u for u in a if u in b and a[u] is not None and b[u] is not None)
    head = {
        "kind": kind,
        "metric": rubric.metric,
        "scale": rubric.scale,
        "raters": raters,
        "items": len(units),
        "conversations": len({c for c, _ in units}),
    }
    if len(units) < 2:
        return {**head, "coefficients": [], "note": "fewer than two items rated by both"}
    found = pairwise(units, [a[u] for u in units], [b[u] for u in units], rubric.scale, rubric.allowed, seed, resamples)
    return {**head, "coefficients": [c.to_dict() for c in found]}


def many_entry(
    kind: str, rubric, raters: list[str], columns: list[dict], seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES
) -> dict:
    """Krippendorff's alpha over many raters; units rated by at least two of them."""
    units = sorted({u for col in columns for u, v in col.items() if v is not None})
    units = [u for u in units if sum(col.get(u) is not None for col in columns) >= 2]
    head = {
        "kind": kind,
        "metric": rubric.metric,
        "scale": rubric.scale,
        "raters": raters,
        "items": len(units),
        "conversations": len({c for c, _ in units}),
    }
    if len(units) < 2:
        return {**head, "coefficients": [], "note": "fewer than two items rated by two or more raters"}
    matrix = np.array([[np.nan if col.get(u) is None else col[u] for u in units] for col in columns], dtype=float)
    return {**head, "coefficients": [many(units, matrix, rubric.scale, seed, resamples).to_dict()]}
