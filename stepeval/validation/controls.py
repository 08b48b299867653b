"""Derived controls: a run's own replies altered in ways a content-aware judge must notice.

- ``shuffle``: each reply swapped for a reply from another conversation of the same category (an
  answer to another question; another category only where the category has one conversation).
  Relevance and factuality must drop.
- ``truncate``: each reply cut to its first fifth (words; characters for text without spaces).
  Chat score and instruction following must drop.
- ``wer``: synthetic word errors (substitutions, deletions, insertions in equal shares) at a few
  rates: a measurement, not a pass/fail check: how far each score moves per point of WER, i.e. how
  much ASR errors in the transcript the judge reads would move the benchmark.

Each check is the project's paired test over conversations (``reporting.stats.paired_compare``):
it passes only if the control's score is lower than the original's and the sign-flip p-value is
below alpha. All randomness is seeded per item, so a rerun derives the same items (and hits the cache).
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


def verdict(result: dict, expected: str, alpha: float) -> tuple[str, str]:
    """(status, why) of a control check from its paired result."""
    diff, p = result.get("difference"), result.get("p_value")
    if diff is None or p is None:
        return "failed", "no item was scored both as original and as control"
    went = "down" if diff < 0 else ("up" if diff > 0 else "unchanged")
    if went != expected:
        return "failed", f"expected the score to go {expected}; it went {went} ({diff:+.3g})"
    if p >= alpha:
        return "failed", f"went {went} ({diff:+.3g}) but not significantly (p = {p:.3g} >= {alpha})"
    return "passed", f"went {went} ({diff:+.3g}), p = {p:.3g} < {alpha}"


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
