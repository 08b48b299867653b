"""Typed records: what each stage writes to its log, one class per stage, with a schema version.

A record is keyed by (conversation id, turn) within its stage's log and carries the fingerprint of
everything that produced it. ``status`` is ``ok`` or another final outcome (``no_input``, ``unparseable``, ``tied``) that is
reused like ``ok``; ``failed`` and ``skipped`` (a turn after a failed one) are never reused: a rerun
retries them.

On disk a record is one JSON object per line. Reading accepts the first on-disk format (no
``schema`` key, score records without a ``status``), so runs made before the typed records reopen
and resume without recomputation; writing always uses the current ``SCHEMA``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

SCHEMA = 2
FAILED = "failed"
SKIPPED = "skipped"
OK = "ok"
RETRIED = frozenset({FAILED, SKIPPED})  # statuses a rerun computes again

Key = tuple[str, int]
R = TypeVar("R", bound="Record")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@dataclass
class Record:
    """Fields every stage's record has."""

    conversation_id: str
    turn: int
    stage: str
    fingerprint: str
    status: str = OK
    error: str | None = None
    schema: int = SCHEMA

    kind: ClassVar[str] = "record"

    @property
    def key(self) -> Key:
        return (self.conversation_id, self.turn)

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def final(self) -> bool:
        """Reusable on a rerun (given a matching fingerprint)."""
        return self.status not in RETRIED

    def to_json(self) -> dict[str, Any]:
        """The on-disk form: every field, ``None`` for the empty ones (so a reader sees the full schema).

        What ``dataclasses.asdict`` returns, without its ``deepcopy`` of every scalar (a tenth of a millisecond a
        record, on the replay's event loop): containers are copied, the strings and numbers in them are immutable."""
        return {name: _plain(getattr(self, name)) for name in _field_names(type(self))}

    @classmethod
    def from_json(cls: type[R], raw: dict[str, Any]) -> R:
        """From either on-disk format; keys this schema does not know are kept out (not guessed at)."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in raw.items() if k in names}
        data.setdefault("schema", 1)
        data["turn"] = int(data["turn"])
        return cls(**data)


@dataclass
class ReplayRecord(Record):
    """One model reply: its text channel, its own transcript, the saved audio and how it went."""

    category: str = "unknown"
    language: str | None = None
    text: str | None = None
    transcript: str | None = None
    audio: str | None = None  # path relative to the run folder
    audio_sha256: str | None = None
    sample_rate: int | None = None
    duration_s: float | None = None
    speaks: bool = True  # False: the model has no speech output (speech metrics are not applicable)
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    served_by: str | None = None  # the endpoint (a fleet's "<model> replica <i>") and the URL that answered
    # latency (docs/latency.md): timings the turn could not give, with why (never a 0 in ``timings``), and the
    # protocol they were measured under (clock, streamed, endpoint, concurrency, in flight, hardware, mode).
    # Neither enters a fingerprint; records written before them read with both empty.
    timings_missing: dict[str, str] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "replay"


@dataclass
class AsrRecord(Record):
    """A transcript of a reply (``asr``) or of a user turn (``user_asr``)."""

    text: str | None = None
    language: str | None = None
    language_probability: float | None = None
    engine: str | None = None

    kind: ClassVar[str] = "asr"


@dataclass
class ScoreRecord(Record):
    """Objective metrics of one reply: a number, or ``None`` with the reason in ``missing``.

    ``not_applicable`` names metrics that have no meaning for this reply (a text-only model has no
    speech to rate): they are left out of tables as not applicable, never counted as missing.
    ``counts`` holds the raw counts behind rates ({metric: {"edits": e, "units": n}}), so tables can
    give corpus-level error rates beside the mean of per-turn rates.
    """

    category: str = "unknown"
    language: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    kind: ClassVar[str] = "score"

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ScoreRecord:
        record = super().from_json(raw)
        if "status" not in raw:  # first format: a score record had no status and was always final
            record.status = OK
        return record


@dataclass
class JudgeRecord(Record):
    """One judge verdict on one turn for one rubric, with exactly what the judge read."""

    category: str = "unknown"
    language: str | None = None
    judge: dict[str, Any] = field(default_factory=dict)  # model, endpoint, settings, rubric, rubric_sha256
    user_source: str | None = None
    reads: str | None = None
    reply_source: str | None = None
    audio_user: str | None = None
    input_sha256: str | None = None
    input: str | None = None
    aggregation: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    cost_usd: float | None = None
    response_format: str | None = None

    kind: ClassVar[str] = "judge"


def record_type(stage: str) -> type[Record]:
    """The record class of a log, from its stage name (``judge-<metric>`` logs hold judge records)."""
    if stage.startswith("judge-"):
        return JudgeRecord
    return {"replay": ReplayRecord, "asr": AsrRecord, "user_asr": AsrRecord, "score": ScoreRecord}.get(stage, Record)
