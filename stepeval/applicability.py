"""Which metrics mean something for which categories, and which direction is better: configuration
(``stepeval/conf/metrics/*.yaml``), applied when scores are aggregated so that changing it needs no recompute.

A metric not listed applies everywhere and has no direction. Category names are compared after
lower-casing and folding spaces, hyphens, underscores and slashes (``role-playing`` ==
``Role Playing``); ``category_aliases`` maps other spellings (the real dataset's names) onto them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ALL = "all"
_FOLD = re.compile(r"[\s_\-/]+")


def canonical(category: str) -> str:
    return _FOLD.sub(" ", str(category).strip().lower()).strip()


@dataclass(frozen=True)
class Rule:
    categories: frozenset[str] | None  # None: every category
    higher_is_better: bool | None  # None: descriptive, no better direction


class Applicability:
    def __init__(self, rules: Mapping[str, Mapping] | None = None, category_aliases: Mapping[str, list] | None = None):
        self.rules: dict[str, Rule] = {}
        for metric, raw in (rules or {}).items():
            self.rules[str(metric)] = _rule(str(metric), raw)
        self.aliases: dict[str, str] = {}
        for category, spellings in (category_aliases or {}).items():
            if isinstance(spellings, str) or not all(isinstance(s, str) for s in spellings or []):
                raise ValueError(f"metrics.category_aliases.{category}: expected a list of category names")
            for spelling in spellings or []:
                self.aliases[canonical(spelling)] = canonical(category)

    @classmethod
    def from_config(cls, node: Mapping | None) -> Applicability:
        """From the ``metrics`` config group (a mapping with ``rules`` and ``category_aliases``)."""
        node = dict(node or {})
        return cls(node.get("rules") or {}, node.get("category_aliases") or {})

    @classmethod
    def from_run(cls, run_dir: Path) -> Applicability:
        """From the run's manifest (``config.metrics``); a run without one applies every metric everywhere."""
        from stepeval.store import load_manifest

        manifest = load_manifest(run_dir)
        if not manifest:
            return cls()
        return cls.from_config((manifest.get("config") or {}).get("metrics"))

    def category(self, name: str) -> str:
        folded = canonical(name)
        return self.aliases.get(folded, folded)

    def known_categories(self) -> set[str]:
        """Every category a rule names (canonical), plus every alias target."""
        named = {c for rule in self.rules.values() if rule.categories for c in rule.categories}
        return named | set(self.aliases.values())

    def unknown_categories(self, categories: list[str]) -> list[str]:
        """Dataset categories no rule names: metrics limited to named categories would silently vanish for them."""
        if not any(rule.categories for rule in self.rules.values()):
            return []
        known = self.known_categories()
        return [c for c in categories if self.category(c) not in known]

    def dropped_for(self, category: str) -> list[str]:
        """The metrics that do not apply to ``category`` under these rules."""
        return sorted(m for m in self.rules if not self.applies(m, category))

    def applies(self, metric: str, category: str) -> bool:
        rule = self.rules.get(metric)
        return rule is None or rule.categories is None or self.category(category) in rule.categories

    def higher_is_better(self, metric: str) -> bool | None:
        rule = self.rules.get(metric)
        return None if rule is None else rule.higher_is_better

    def filter(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Drop rows of metrics for categories they do not apply to; ``frame.attrs['not_applicable']``
        lists what was dropped ({metric: [categories]})."""
        if frame.empty or not self.rules:
            return frame
        pairs = frame[["metric", "category"]].drop_duplicates()
        keep_pairs = {(m, c) for m, c in pairs.itertuples(index=False) if self.applies(m, c)}
        mask = [(m, c) in keep_pairs for m, c in zip(frame["metric"], frame["category"], strict=True)]
        kept = frame[mask].reset_index(drop=True)
        dropped: dict[str, list[str]] = {}
        for m, c in sorted(set(map(tuple, pairs.itertuples(index=False))) - keep_pairs):
            dropped.setdefault(m, []).append(c)
        kept.attrs["not_applicable"] = dropped
        return kept


def _rule(metric: str, raw: Mapping) -> Rule:
    where = f"metrics.rules.{metric}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping with applies_to and higher_is_better")
    unknown = set(raw) - {"applies_to", "higher_is_better", "description"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected applies_to, higher_is_better, description")
    applies_to = raw.get("applies_to", [ALL])
    if isinstance(applies_to, str):
        applies_to = [applies_to]
    if not applies_to or not all(isinstance(c, str) and c.strip() for c in applies_to):
        raise ValueError(f"{where}.applies_to: expected '{ALL}' or a non-empty list of category names, got {applies_to!r}")
    folded = {canonical(c) for c in applies_to}
    if ALL in folded and len(folded) > 1:
        raise ValueError(f"{where}.applies_to: '{ALL}' cannot be combined with category names ({sorted(applies_to)})")
    direction = raw.get("higher_is_better")
    if direction is not None and not isinstance(direction, bool):
        raise ValueError(f"{where}.higher_is_better: expected true, false or null, got {direction!r}")
    return Rule(None if ALL in folded else frozenset(folded), direction)
