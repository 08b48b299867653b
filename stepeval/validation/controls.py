"""Derived controls: a run's own replies altered in ways a content-aware judge must notice.

- ``shuffle``: each reply swapped for a reply from another conversation of the same category (an
  answer to another question; another category only where the category has one conversation).
  Relevance and factuality must drop.
- ``truncate``: each reply cut to its first fifth (words; characters for text without spaces).
  Chat score and instruction following must drop.
- ``wer``: synthetic word errors (substitutions, deletions, insertions in equal shares) at a few
  rates: how far each score moves per point of WER (how much ASR errors in the transcript the judge
  reads would move the benchmark). Scores must fall: a rise fails.

Each check is the project's paired test over conversations (``reporting.stats.paired_compare``):
it passes only if the control's score is lower than the original's and the sign-flip p-value is
below alpha; a significant move the other way fails loudly, and too little signal (``Thresholds``)
is inconclusive. All randomness is seeded per item, so a rerun derives the same items (and hits the cache).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import jiwer
import numpy as np
import pandas as pd

from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_compare
from stepeval.validation.agreement import bootstrap
from stepeval.validation.items import Item

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
DEFAULT_WER_RATES = (0.1, 0.2, 0.4)
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Control:
    name: str
    expected: str  # "down": the control's mean must be lower than the original's
    metrics: tuple[str, ...]  # the metrics this control checks (where the judge has them)
    description: str


CONTROLS = {
    "shuffle": Control(
        "shuffle",
        "down",
        ("relevance", "factuality"),
        "replies swapped across conversations of the same category (answers to other questions)",
    ),
    "truncate": Control("truncate", "down", ("chat_score", "instruction_following"), "replies cut to their first fifth"),
}
WER = "wer"


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded by the run seed and the item, so derivations do not depend on item order."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def tokens(text: str) -> tuple[list[str], str]:
    """(tokens, joiner): characters for text in a script written without spaces, else words."""
    if CJK.search(text) and len(text.split()) < max(2, len(text) // 8):
        return [c for c in text if not c.isspace()], ""
    return text.split(), " "


def truncate(text: str) -> str:
    """The first fifth of the reply's tokens (at least one)."""
    toks, joiner = tokens(text)
    return joiner.join(toks[: max(1, len(toks) // 5)])


def with_word_errors(text: str, rate: float, rng: np.random.Generator, vocabulary: list[str]) -> str:
    """Each token, with probability ``rate``, substituted, deleted, or followed by an inserted token."""
    toks, joiner = tokens(text)
    out: list[str] = []
    for tok in toks:
        if rng.random() >= rate:
            out.append(tok)
            continue
        op = rng.integers(3)
        other = str(vocabulary[rng.integers(len(vocabulary))]) if vocabulary else "uh"
        if op == 0:
            out.append(other if other != tok else "uh")
        elif op == 2:
            out.extend([tok, other])
    return joiner.join(out)


def realized_wer(reference: str, hypothesis: str) -> float | None:
    """WER (CER for text without spaces) of the altered reply against the original; None for an empty original."""
    ref, _ = tokens(reference)
    if not ref:
        return None
    hyp, _ = tokens(hypothesis)
    return float(jiwer.wer(" ".join(ref), " ".join(hyp) if hyp else ""))


def shuffled(items: list[Item], seed: int) -> dict[tuple[str, int], tuple[str, tuple[str, int], bool]]:
    """unit -> (replacement reply, the unit it came from, whether it crossed categories).

    Replacements come from other conversations with a different reply text; an item with no such
    reply anywhere gets none (the run's replies are all alike: the control cannot be built)."""
    out = {}
    for item in items:
        key = item.reply.strip().lower()
        others = [o for o in items if o.conversation_id != item.conversation_id and o.reply.strip().lower() != key]
        same = [o for o in others if o.category == item.category]
        pool = same or others
        if pool:
            pick = pool[rng_for(seed, "shuffle", item.unit).integers(len(pool))]
            out[item.unit] = (pick.reply, pick.unit, not same)
    return out


def _frame(values: dict[tuple[str, int], float | None], metric: str, stage: str) -> pd.DataFrame:
    rows = [
        {"conversation_id": c, "turn": t, "metric": metric, "value": math.nan if v is None else v, "stage": stage}
        for (c, t), v in values.items()
    ]
    return pd.DataFrame(rows, columns=["conversation_id", "turn", "metric", "value", "stage"])


def paired(
    original: dict,
    control: dict,
    metric: str,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict:
    """Control minus original, paired by turn, clustered by conversation (the project's paired test)."""
    result = paired_compare(_frame(original, metric, "original"), _frame(control, metric, "control"), metric, resamples, seed)
    return result.to_dict()


@dataclass(frozen=True)
class Thresholds:
    """When a check has enough signal to pass or fail (docs/judging.md gives the sources of the defaults).

    ``min_items``: items scored both as original and as control; ``min_conversations`` (None: the least
    number at which the exact sign-flip test can still reach ``alpha`` with one conversation not moving,
    2/2^(n-1) < alpha: fewer, and a judge that misses a single conversation could not pass); ``max_unusable``:
    the share of a rubric's items the controls cannot use (nothing judged, no transcript, an empty one)
    above which every check of the rubric is inconclusive; ``agreement``: least kappa (yes/no: Cohen's,
    1-5: quadratic-weighted) or Krippendorff's alpha per agreement kind."""

    alpha: float = DEFAULT_ALPHA
    min_items: int = 10
    min_conversations: int | None = None
    max_unusable: float = 0.5
    agreement: tuple[tuple[str, float], ...] = (
        ("self-consistency", 0.8),  # Krippendorff (2004): alpha >= 0.8 for reliable data; a judge repeated must be at least that
        ("inter-judge", 0.61),  # Landis & Koch (1977): 0.61-0.80 "substantial" agreement
        ("judge-human", 0.61),  # Landis & Koch (1977)
        ("judge-and-humans", 0.667),  # Krippendorff (2004): 0.667 the least for tentative conclusions
    )

    def conversations_needed(self) -> int:
        if self.min_conversations is not None:
            return self.min_conversations
        return max(2, math.floor(math.log2(2.0 / self.alpha)) + 2)

    def agreement_threshold(self, kind: str) -> float | None:
        return dict(self.agreement).get(kind)


def too_little(turns: int, conversations: int, unusable: float, th: Thresholds) -> str | None:
    """Why a check's signal is too little to pass or fail on, or None."""
    needed = th.conversations_needed()
    if unusable > th.max_unusable:
        return f"{unusable:.0%} of the items are unusable (no transcript, nothing judged; > {th.max_unusable:.0%})"
    if turns < th.min_items or conversations < needed:
        return (
            f"{turns} item(s) in {conversations} conversation(s) scored both ways "
            f"(at least {th.min_items} items in {needed} conversations needed)"
        )
    return None


def verdict(result: dict, expected: str, alpha: float | Thresholds, unusable: float = 0.0) -> tuple[str, str]:
    """(status, why) of a control check from its paired result: ``passed`` (moved the expected way,
    significantly), ``failed`` (moved the other way significantly: loudly; or did not move significantly
    with enough signal), ``inconclusive`` (too little signal to tell)."""
    th = alpha if isinstance(alpha, Thresholds) else Thresholds(alpha=alpha)
    diff, p = result.get("difference"), result.get("p_value")
    if diff is None or p is None:
        return "inconclusive", "no item was scored both as original and as control"
    went = "down" if diff < 0 else ("up" if diff > 0 else "unchanged")
    if went not in (expected, "unchanged") and p < th.alpha:
        return "failed", f"WENT {went.upper()} SIGNIFICANTLY ({diff:+.3g}, p = {p:.3g}): the judge rewards the control"
    short = too_little(int(result.get("turns") or 0), int(result.get("conversations") or 0), unusable, th)
    if went == expected and p < th.alpha:
        return "passed", f"went {went} ({diff:+.3g}), p = {p:.3g} < {th.alpha}"
    if short:
        return "inconclusive", f"too little signal: {short}; went {went} ({diff:+.3g}, p = {p:.3g})"
    if went != expected:
        return "failed", f"expected the score to go {expected}; it went {went} ({diff:+.3g})"
    return "failed", f"went {went} ({diff:+.3g}) but not significantly (p = {p:.3g} >= {th.alpha})"


def check_entry(name: str, control, metric: str, found_items: int, derived: dict, paired: dict, th, unusable: float) -> dict:
    """A control check's entry in the validation: its verdict and the paired comparison's figures
    (``control``: anything with ``expected`` and ``description``: text and listening controls alike)."""
    status, why = verdict(paired, control.expected, th, unusable)
    return {
        "name": f"{name}/{metric}",
        "control": name,
        "metric": metric,
        "description": control.description,
        "expected": control.expected,
        "status": status,
        "why": why,
        "items": found_items,
        "derived": len(derived),
        "unusable_share": round(unusable, 4),
        **{k: paired[k] for k in ("difference", "low", "high", "p_value", "p_method", "baseline_mean", "candidate_mean")},
        **{k: paired[k] for k in ("conversations", "turns", "excluded_turns")},
    }


def sensitivity_verdict(slope: dict, conversations: int, unusable: float, th: Thresholds) -> tuple[str, str]:
    """Scores must FALL with word errors: passed when the slope's interval lies below 0, failed loudly when
    it lies above 0, failed when flat with enough signal, inconclusive with too little."""
    value, low, high = slope.get("per_wer_point"), slope.get("low"), slope.get("high")
    if value is None:
        return "inconclusive", f"no item was scored both with and without word errors ({slope.get('note')})"
    figure = f"{value:+.3g} per WER point"
    if low is not None and low > 0:
        return "failed", f"ROSE WITH WORD ERRORS ({figure}, 95% [{low:.3g}, {high:.3g}]): the judge rewards errors"
    if high is not None and high < 0:
        return "passed", f"fell with word errors ({figure}, 95% [{low:.3g}, {high:.3g}])"
    short = too_little(int(slope.get("items") or 0), conversations, unusable, th)
    interval = f"95% [{low:.3g}, {high:.3g}]" if low is not None else "no interval"
    if short:
        return "inconclusive", f"too little signal: {short}; {figure} ({interval})"
    return "failed", f"did not fall significantly with word errors ({figure}, {interval})"


def agreement_verdict(entry: dict, threshold: float, th: Thresholds) -> tuple[str, str, dict | None]:
    """(status, why, the coefficient judged) of an agreement entry against ``threshold``: passed when the
    interval's low end reaches it, failed when its high end is below it, else inconclusive."""
    wanted = ("cohen_kappa",) if entry.get("scale") == "yes_no" else ("weighted_kappa_quadratic", "spearman")
    if len(entry.get("raters") or []) > 2:
        wanted = ("krippendorff_alpha_nominal", "krippendorff_alpha_ordinal")
    coefficients = entry.get("coefficients") or []
    found = [c for c in coefficients if c["name"] in wanted and c.get("value") is not None]
    if not found:  # chance-corrected coefficients are undefined where both gave one grade throughout: raw agreement
        found = [c for c in coefficients if c["name"] == "percent_agreement" and c.get("value") is not None]
    if not found:
        return "inconclusive", f"no {' or '.join(wanted)} on these items ({entry.get('note') or 'undefined'})", None
    c = found[0]
    short = too_little(int(entry.get("items") or 0), int(entry.get("conversations") or 0), 0.0, th)
    low, high = c.get("low"), c.get("high")
    figure = f"{c['name']} {c['value']:.3g}" + (f" [{low:.3g}, {high:.3g}]" if low is not None else "")
    if high is not None and high < threshold:
        return "failed", f"{figure} below {threshold}", c
    if low is not None and low >= threshold and not short:
        return "passed", f"{figure} reaches {threshold}", c
    if short:
        return "inconclusive", f"too little signal: {short}; {figure}", c
    return "inconclusive", f"{figure}: the interval straddles {threshold}", c


def sensitivity(
    pairs: list[tuple[tuple[str, int], float, float]],
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict:
    """Score change per WER point: the least-squares slope through the origin of (control - original)
    on the realized WER (in percentage points), pooled over rates, with a conversation bootstrap."""
    if not pairs:
        return {"per_wer_point": None, "low": None, "high": None, "items": 0, "note": "no scored pair"}
    units = [u for u, _, _ in pairs]
    wer = np.array([w * 100.0 for _, w, _ in pairs])
    diff = np.array([d for _, _, d in pairs])

    def slope(index: np.ndarray) -> float | None:
        denominator = float(np.sum(wer[index] ** 2))
        return None if denominator == 0 else float(np.sum(wer[index] * diff[index]) / denominator)

    value = slope(np.arange(len(pairs)))
    low, high, note = bootstrap(units, slope, seed, resamples)
    return {"per_wer_point": value, "low": low, "high": high, "items": len(pairs), "note": note}
