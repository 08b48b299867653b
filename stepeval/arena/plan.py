"""Which comparisons an arena asks for: every pair of systems on the turns both have, within a budget.

With ``max_pairs`` set, each pair of systems gets an equal share of the budget, and the turns a pair is compared on
are taken in an order fixed by the two systems' names (seeded): every system is covered evenly, the same budget
picks the same turns on every run, and adding a system only shrinks the other pairs' shares to a prefix of what
they had, so their answers come from the cache. Control systems are compared with the system they were made from
only.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass

from stepeval.records import Key


@dataclass(frozen=True)
class Comparison:
    key: Key
    x: str
    y: str


def system_pairs(systems: list[str], controls: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs to compare: every two measured systems, and each control with its origin."""
    measured = [s for s in systems if s not in controls]
    pairs = list(itertools.combinations(measured, 2))
    pairs += [(origin, control) for control, origin in controls.items()]
    return pairs


def plan(replies: dict[str, set[Key]], controls: dict[str, str], max_pairs: int | None = None, seed: int = 0) -> list[Comparison]:
    """The comparisons to ask, pair by pair; ``replies`` maps each system to the turns it has a reply for."""
    pairs = system_pairs(list(replies), controls)
    share = None if not max_pairs else max(1, math.floor(max_pairs / max(1, len(pairs))))
    out: list[Comparison] = []
    for x, y in pairs:
        shared = sorted(replies[x] & replies[y])
        order = random.Random(_pair_seed(x, y, seed)).sample(shared, len(shared))
        out += [Comparison(key, x, y) for key in (order if share is None else order[:share])]
    return out


def _pair_seed(x: str, y: str, seed: int) -> int:
    text = "\x00".join(sorted((x, y))) + f"\x00{seed}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)
