"""What a stage is, and the one runner that applies the one reuse rule.

A stage covers units of work (a turn, or a whole conversation where turns depend on each other);
each unit names the keys it produces and the fingerprint each key's record must carry. The runner
loads the stage's log, reuses every stored record whose fingerprint matches and whose status is
final (anything but ``failed`` or ``skipped``; the stage may add a check, e.g. the reply audio still exists),
computes the rest, appends each new record durably, counts, and shows progress.

Resume after a crash, caching across configurations and re-scoring without regenerating are this
one rule: a rerun computes exactly the records that are missing, stale or failed.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tqdm import tqdm

from stepeval.records import FAILED, SKIPPED, Key, Record, record_type
from stepeval.secrets import scrub
from stepeval.store import GroupCommitter, RunStore

Emit = Callable[[Record], Awaitable[None]]


@dataclass
class Unit:
    """One piece of work: the records it produces, keyed, with the fingerprint each must carry."""

    fingerprints: dict[Key, str]


U = TypeVar("U", bound=Unit)


@dataclass
class StageStats:
    """How much of a stage was reused, computed, or could not be computed."""

    stage: str
    reused: int = 0
    computed: int = 0
    failed: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # status -> count over the current records
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.reused + self.computed + self.failed + self.skipped

    def line(self) -> str:
        text = f"{self.stage}: {self.total} records: {self.reused} reused, {self.computed} computed"
        if self.failed or self.skipped:
            text += f", {self.failed} failed, {self.skipped} skipped after a failure"
        extra = [f"{n} {status}" for status, n in sorted(self.statuses.items()) if status not in ("ok", FAILED, "skipped") and n]
        return text + (f" ({', '.join(extra)})" if extra else "")


@dataclass
class StageResult:
    """A stage's counts and the records the current configuration uses, by key."""

    stats: StageStats
    current: dict[Key, Record]

    @property
    def fingerprints(self) -> dict[Key, str]:
        return {key: record.fingerprint for key, record in self.current.items()}


class Stage(ABC, Generic[U]):
    """A stage of the run: which units it covers and how to compute one.

    Subclasses set ``name`` (the log: ``records/<name>.jsonl``), ``concurrency`` (units in flight) and
    ``unit_name`` (for the progress bar), and implement ``units`` and ``compute``.
    """

    name: str = "stage"
    unit_name: str = "item"
    concurrency: int = 1

    @abstractmethod
    def units(self) -> Sequence[U]:
        """The work this stage covers for the current configuration, in order."""

    @abstractmethod
    async def compute(self, unit: U, stored: dict[Key, Record], emit: Emit) -> None:
        """Produce the unit's missing records and ``await emit(record)`` each one (it is durable when
        emit returns). ``stored`` holds the unit's reusable records; a unit that needs none of them
        recomputed (a conversation whose later turns are missing, say) builds on them."""

    def usable(self, record: Record) -> bool:
        """A further check on a stored record beyond its fingerprint and status."""
        return True


def reusable(stage: Stage, stored: dict | None, fingerprint: str) -> Record | None:
    """The reuse rule, stated once: same fingerprint, a final status (not failed or skipped), and the
    stage's own check."""
    if stored is None or stored.get("fingerprint") != fingerprint:
        return None
    record = record_type(stage.name).from_json(stored)
    if not record.final or not stage.usable(record):
        return None
    return record


def run_stage(stage: Stage, store: RunStore, progress: bool = True) -> StageResult:
    return asyncio.run(run_stage_async(stage, store, progress))


async def run_stage_async(stage: Stage, store: RunStore, progress: bool = True) -> StageResult:
    """Load the stage's log, reuse what the rule allows, compute the rest, and count."""
    log = store.log(stage.name)
    index = log.index()
    committer = GroupCommitter(log)
    stats = StageStats(stage.name)
    current: dict[Key, Record] = {}
    units = list(stage.units())
    todo: list[tuple[Unit, dict[Key, Record]]] = []
    for unit in units:
        stored = {}
        for key, fp in unit.fingerprints.items():
            record = reusable(stage, index.get(key, fp), fp)
            if record is not None:
                stored[key] = record
        current.update(stored)
        if len(stored) == len(unit.fingerprints):
            stats.reused += len(stored)
        else:
            todo.append((unit, stored))

    total = sum(len(u.fingerprints) for u, _ in todo)
    bar = tqdm(total=total, desc=stage.name, unit=stage.unit_name, disable=not progress or not total, dynamic_ncols=True)
    semaphore = asyncio.Semaphore(max(1, stage.concurrency))

    async def one(unit: Unit, stored: dict[Key, Record]) -> None:
        emitted: set[Key] = set()

        async def emit(record: Record) -> None:
            if record.error:
                record.error = scrub(record.error)
            await committer.append(record.to_json())
            emitted.add(record.key)
            current[record.key] = record
            if record.status == FAILED:
                stats.failed += 1
                stats.errors.append(f"{record.conversation_id} turn {record.turn}: {record.error}")
            elif record.status == SKIPPED:
                stats.skipped += 1
            else:
                stats.computed += 1
            bar.update(1)

        async with semaphore:
            await stage.compute(unit, stored, emit)
        stats.reused += sum(1 for key in stored if key not in emitted)
        bar.update(sum(1 for key in stored if key not in emitted))

    tasks = [asyncio.ensure_future(one(u, s)) for u, s in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # one unit's fatal error (a judge that refuses every request) stops the stage
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        bar.close()
    for record in current.values():
        stats.statuses[record.status] = stats.statuses.get(record.status, 0) + 1
    return StageResult(stats, current)
