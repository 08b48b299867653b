"""arena.json results for the page tests, computed by the arena's own ranking and control code on synthetic
verdicts (nothing hand-written): a strong, a middle and a weak system, a truncated control of the strong one that
loses, and pairs that never met (the control meets only its origin)."""

from __future__ import annotations

import numpy as np

from stepeval.arena import command
from stepeval.arena.ranking import Outcome, rank_systems
from stepeval.judging import rubric as rubric_mod

NAMES = ["strong", "middle", "weak", "strong+truncated"]
# (i, j, P(i wins), P(tie)) per comparison; pairs not listed never meet
PAIRS = [(0, 1, 0.6, 0.2), (1, 2, 0.6, 0.2), (0, 2, 0.75, 0.15), (0, 3, 0.85, 0.1)]
CATEGORIES = ("chitchat", "math")


def outcomes(conversations: int = 16, turns: int = 3, seed: int = 7) -> dict[str, list[Outcome]]:
    """{category: outcomes}; conversations alternate between the two categories."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Outcome]] = {c: [] for c in CATEGORIES}
    for c in range(conversations):
        for _ in range(turns):
            for i, j, win, tie in PAIRS:
                u = rng.random()
                score = 1.0 if u < win else (0.5 if u < win + tie else 0.0)
                out[CATEGORIES[c % 2]].append(Outcome(f"conv{c:02d}", i, j, score))
    return out


def result(sources: dict[str, str] | None = None, resamples: int = 200) -> dict:
    """An arena result with the keys ``stepeval arena`` writes, its figures from ``rank_systems`` and
    ``command.control_verdict``."""
    by_category = outcomes()
    everything = [o for c in CATEGORIES for o in by_category[c]]
    overall = rank_systems(NAMES, everything, resamples, seed=0)
    rubric = rubric_mod.load(rubric_mod.rubrics_dir(None), command.DEFAULT_RUBRIC)
    sources = sources or {}
    judge = {"model": "pair-judge", "base_url": "http://127.0.0.1:9/v1", "temperature": 0.0, "seed": 0}
    return {
        "rubric": rubric.name,
        "rubric_sha256": rubric.sha256,
        "judge": {**judge, "rubric": rubric.name, "rubric_sha256": rubric.sha256},
        "systems": [
            {"system": n, "source": sources.get(n, f"/results/{n}/views/v"), "control_of": "strong" if "+" in n else None}
            for n in NAMES
        ],
        "comparisons_planned": len(everything),
        "requests": {"asked": 2 * len(everything), "reused": 0, "failed": 0},
        "missing": 0,
        "missing_reasons": [],
        "position_bias_rate": 0.125,
        "order_dependent_rate": 0.1875,
        "overall": overall.to_json(),
        "by_category": {c: rank_systems(NAMES, o, resamples, seed=0).to_json() for c, o in by_category.items()},
        "controls": [command.control_verdict(overall, "strong", "strong+truncated", "truncated")],
    }
