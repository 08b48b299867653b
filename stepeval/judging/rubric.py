"""Judge rubrics as versioned data files: the grading prompt and the allowed grades in one file.

A rubric is ``rubrics/<metric>.v<N>.md``: YAML front matter (metric, version, modality, scale,
field, allowed) then the system prompt. Its sha256 covers both, so any edit to the prompt or the
grades changes the fingerprint of exactly that metric's judge records.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGED = Path(__file__).resolve().parent / "rubrics"
SCALES = {"yes_no", "likert", "pairwise"}  # pairwise: A, B or tie between two replies (the arena)
PAIRWISE = ("A", "B", "tie")
MODALITIES = {"text", "audio"}
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n(.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class Rubric:
    name: str  # the file stem, e.g. "factuality.v1": what the config lists
    metric: str  # the column it fills, e.g. "factuality"
    version: int
    modality: str  # "text": reads transcripts; "audio": hears the reply
    scale: str  # "yes_no" (1.0/0.0, majority of samples), "likert" (mean of samples), "pairwise" (A 1.0, B 0.0, tie 0.5)
    field: str  # the JSON key holding the grade
    allowed: tuple  # the grades the judge may give; anything else leaves the item unscored
    prompt: str
    sha256: str
    path: Path

    def value(self, grade: object) -> float:
        """The stored number for an allowed grade."""
        if self.scale == "yes_no":
            return 1.0 if grade == "yes" else 0.0
        if self.scale == "pairwise":  # the share of the win that goes to reply A
            return {"A": 1.0, "B": 0.0, "tie": 0.5}[grade]  # type: ignore[index]
        return float(grade)  # type: ignore[arg-type]

    def describe(self) -> dict:
        return {"file": self.path.name, "metric": self.metric, "version": self.version, "sha256": self.sha256}

    def response_schema(self) -> dict:
        """JSON schema for endpoints with structured output: a rationale first, then the grade."""
        kind = "string" if all(isinstance(a, str) for a in self.allowed) else "integer"
        return {
            "name": f"{self.metric}_grade",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"rationale": {"type": "string"}, self.field: {"type": kind, "enum": list(self.allowed)}},
                "required": ["rationale", self.field],
                "additionalProperties": False,
            },
        }


def rubrics_dir(configured: str | None) -> Path:
    if not configured:
        return PACKAGED
    folder = Path(configured).expanduser()
    if not folder.is_dir():
        raise ValueError(f"judge.rubrics_dir={configured!r} is not a folder")
    return folder


def load(folder: Path, name: str) -> Rubric:
    """Load ``<folder>/<name>.md``; every problem names the file and the field."""
    path = folder / f"{name}.md"
    if not path.is_file():
        found = sorted(p.stem for p in folder.glob("*.md"))
        raise ValueError(f"judge.metrics: rubric {name!r} not found as {path}; available: {found}")
    raw = path.read_bytes()
    match = FRONT_MATTER.match(raw.decode("utf-8").replace("\r\n", "\n"))
    if not match:
        raise ValueError(f"{path}: a rubric starts with '---' YAML front matter, closed by '---'")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: front matter is not valid YAML: {err}") from err
    for key in ("metric", "version", "modality", "scale", "field", "allowed"):
        if key not in meta:
            raise ValueError(f"{path}: front matter lacks {key!r}")
    if meta["scale"] not in SCALES:
        raise ValueError(f"{path}: scale={meta['scale']!r}; expected one of {sorted(SCALES)}")
    if meta["modality"] not in MODALITIES:
        raise ValueError(f"{path}: modality={meta['modality']!r}; expected one of {sorted(MODALITIES)}")
    allowed = tuple(meta["allowed"] or ())
    if meta["scale"] == "yes_no" and set(allowed) != {"yes", "no"}:
        raise ValueError(f"{path}: a yes_no rubric allows exactly ['yes', 'no'], not {list(allowed)}")
    if meta["scale"] == "pairwise" and list(allowed) != list(PAIRWISE):
        raise ValueError(f"{path}: a pairwise rubric allows exactly {list(PAIRWISE)}, not {list(allowed)}")
    if meta["scale"] == "likert" and (not allowed or not all(type(a) is int for a in allowed)):
        raise ValueError(f"{path}: a likert rubric allows a list of integers, not {list(allowed)}")
    prompt = match.group(2).strip()
    if not prompt:
        raise ValueError(f"{path}: the rubric has no prompt after the front matter")
    return Rubric(
        name=name,
        metric=str(meta["metric"]),
        version=int(meta["version"]),
        modality=str(meta["modality"]),
        scale=str(meta["scale"]),
        field=str(meta["field"]),
        allowed=allowed,
        prompt=prompt,
        sha256=hashlib.sha256(raw).hexdigest(),
        path=path,
    )


def load_all(folder: Path, names: list[str]) -> list[Rubric]:
    rubrics = [load(folder, n) for n in names]
    seen: dict[str, str] = {}
    for r in rubrics:
        if r.metric in seen:
            raise ValueError(f"judge.metrics: {seen[r.metric]!r} and {r.name!r} both fill metric {r.metric!r}; list one")
        seen[r.metric] = r.name
    return rubrics
