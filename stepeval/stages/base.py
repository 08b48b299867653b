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
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from tqdm import tqdm

from stepeval.records import FAILED, SKIPPED, Key, Record, record_type
from stepeval.secrets import scrub
from stepeval.stages.progress import bar as progress_bar
from stepeval.store import GroupCommitter, RunStore


class Emit(Protocol):
    """Makes a record durable (and current): ``files``, the (path, bytes) it points to, are written first."""

    def __call__(self, record: Record, files: Sequence[tuple[Path, bytes]] = ()) -> Awaitable[None]: ...


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
    run = StageRun(stage, store, progress)
    await run.submit_all(list(stage.units()))
    return run.result()


OnRecord = Callable[[Record], None]


class StageRun:
    """One stage's log, counts and progress bar, fed units all at once (``run_stage_async``) or one
    by one as the stages before it finish theirs (``stages.flow``): the reuse rule and the records
    are the same either way.

    ``on_record`` is called with each of the stage's records as it becomes current, reused or
    computed, so a later stage can start on it at once. ``semaphore`` may be shared by several
    stages (the judge's rubrics share ``judge.concurrency``). ``busy_s`` is the wall time during
    which at least one of its units was being computed (the overlap benchmark sums it).
    """

    def __init__(
        self,
        stage: Stage,
        store: RunStore,
        progress: bool = True,
        on_record: OnRecord | None = None,
        semaphore: asyncio.Semaphore | None = None,
        position: int | None = None,
    ):
        self.stage = stage
        self.log = store.log(stage.name)
        self.index = self.log.index()
        self.committer = GroupCommitter(self.log)
        self.stats = StageStats(stage.name)
        self.current: dict[Key, Record] = {}
        self.on_record = on_record
        self.semaphore = semaphore or asyncio.Semaphore(max(1, stage.concurrency))
        self.busy_s = 0.0
        self._active = 0
        self._since = 0.0
        self._progress = progress
        self._position = position
        self._bar: tqdm | None = None  # shown once there is something to compute

    def _grow(self, n: int) -> None:
        if self._bar is None:
            self._bar = progress_bar(  # plain lines where stderr is not a terminal
                total=0,
                desc=self.stage.name,
                unit=self.stage.unit_name,
                disable=not self._progress,
                dynamic_ncols=True,
                position=self._position,
            )
        self._bar.total += n
        self._bar.refresh()

    def _current(self, record: Record) -> None:
        self.current[record.key] = record
        if self.on_record is not None:
            self.on_record(record)

    def _busy(self, delta: int) -> None:
        now = time.perf_counter()
        if self._active:
            self.busy_s += now - self._since
        self._since = now
        self._active += delta

    async def submit(self, unit: Unit) -> None:
        """Reuse the unit's records the rule allows and compute the rest; returns once every record
        of the unit is current (``self.current``) and durable."""
        stored = {}
        for key, fp in unit.fingerprints.items():
            record = reusable(self.stage, self.index.get(key, fp), fp)
            if record is not None:
                stored[key] = record
        for record in stored.values():
            self._current(record)
        if len(stored) == len(unit.fingerprints):
            self.stats.reused += len(stored)
            return
        self._grow(len(unit.fingerprints))
        emitted: set[Key] = set()
        stats = self.stats

        async def emit(record: Record, files: Sequence[tuple[Path, bytes]] = ()) -> None:
            if record.error:
                record.error = scrub(record.error)
            await self.committer.append(record.to_json(), files)
            emitted.add(record.key)
            if record.status == FAILED:
                stats.failed += 1
                stats.errors.append(f"{record.conversation_id} turn {record.turn}: {record.error}")
            elif record.status == SKIPPED:
                stats.skipped += 1
            else:
                stats.computed += 1
            self._current(record)
            self._bar.update(1)

        async with self.semaphore:
            self._busy(+1)
            try:
                await self.stage.compute(unit, stored, emit)
            finally:
                self._busy(-1)
        kept = sum(1 for key in stored if key not in emitted)
        stats.reused += kept
        self._bar.update(kept)

    async def submit_all(self, units: Sequence[Unit]) -> None:
        tasks = [asyncio.ensure_future(self.submit(u)) for u in units]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one unit's fatal error (a judge that refuses every request) stops the stage
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def result(self) -> StageResult:
        """The counts over the current records (call once the stage has no more units)."""
        self.close()
        self.stats.statuses = {}
        for record in self.current.values():
            self.stats.statuses[record.status] = self.stats.statuses.get(record.status, 0) + 1
        return StageResult(self.stats, self.current)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
