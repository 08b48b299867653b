"""Strict parsing of a judge's reply against its rubric's allowed grades, and sample aggregation.

A reply that is not one JSON object with a rationale and an allowed grade (or that is a refusal)
yields no grade: the item stays unscored and the raw reply is kept. Nothing is guessed, nothing
becomes 0.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from stepeval.judging.rubric import Rubric

UNPARSEABLE = "unparseable judge reply"
TIED = "judge samples tied (use an odd judge.samples)"
FENCE = re.compile(r"\A```(?:json)?\s*\n?(.*?)\n?```\Z", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    grade: object | None  # the allowed grade as the judge wrote it ("yes", 4), or None
    value: float | None  # the stored number (1.0/0.0 for yes/no), or None
    rationale: str | None
    error: str | None  # why there is no grade

    def to_json(self) -> dict:
        return {"grade": self.grade, "value": self.value, "rationale": self.rationale, "parse_error": self.error}


def _invalid(error: str, rationale: str | None = None) -> Parsed:
    return Parsed(None, None, rationale, error)


def parse_reply(content: str | None, rubric: Rubric, refusal: str | None = None, finish_reason: str | None = None) -> Parsed:
    """The grade in ``content``: exactly one JSON object (optionally in one ```json fence) holding a
    string ``rationale`` and ``rubric.field`` equal to one of ``rubric.allowed`` (JSON type included:
    "4" is not 4, 4.5 is not allowed)."""
    if refusal:
        return _invalid(f"refusal: {refusal}")
    if finish_reason == "content_filter":
        return _invalid("reply withheld by the endpoint's content filter")
    text = (content or "").strip()
    if not text:
        return _invalid("empty reply")
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        cut = " (cut off at max_tokens)" if finish_reason == "length" else ""
        return _invalid(f"not a JSON object{cut}: {err.msg} at char {err.pos}")
    if not isinstance(obj, dict):
        return _invalid(f"not a JSON object: got {type(obj).__name__}")
    rationale = obj.get("rationale")
    if not isinstance(rationale, str):
        return _invalid("no string 'rationale'")
    if rubric.field not in obj:
        return _invalid(f"no {rubric.field!r} key", rationale)
    grade = obj[rubric.field]
    if isinstance(grade, str) and rubric.scale == "yes_no":
        grade = grade.strip().lower()
    if isinstance(grade, str) and rubric.scale == "pairwise":
        grade = {"a": "A", "b": "B", "tie": "tie"}.get(grade.strip().lower(), grade)
    allowed = any(type(grade) is type(a) and grade == a for a in rubric.allowed)
    if not allowed:
        return _invalid(f"{rubric.field}={json.dumps(grade)} is not one of {list(rubric.allowed)}", rationale)
    return Parsed(grade, rubric.value(grade), rationale, None)


def aggregate(parsed: list[Parsed], rubric: Rubric) -> tuple[float | None, str | None]:
    """(value, why missing): the mean of a likert scale's parsed samples, the majority of yes/no.

    Samples that did not parse are left out (the record keeps them); no parsed sample, or a
    yes/no tie, leaves the item unscored."""
    values = [p.value for p in parsed if p.value is not None]
    if not values:
        return None, UNPARSEABLE
    if rubric.scale == "likert":
        return round(sum(values) / len(values), 6), None
    if rubric.scale == "pairwise":  # the majority side; an even split is a tie (0.5), which is a verdict here
        share = sum(values) / len(values)
        return (1.0 if share > 0.5 else 0.0 if share < 0.5 else 0.5), None
    counts = Counter(values)
    if counts[1.0] == counts[0.0]:
        return None, TIED
    return (1.0 if counts[1.0] > counts[0.0] else 0.0), None
