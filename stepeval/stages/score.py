"""The objective-signal stage: per-reply metrics that need no LLM (``signals.scoring``).

A unit is one conversation, because speaker consistency compares a reply with the conversation's
other replies. A reply's fingerprint is the signals' identity (version, options, which models could
load here), its replay fingerprint and status, its transcript's fingerprint, and, where speaker consistency
runs, the conversation's reply audio hashes. Scoring that raised is recorded as failed and retried on the next run; a model
without speech output gets its speech metrics marked not applicable, never missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from stepeval.records import FAILED, AsrRecord, Key, ReplayRecord, ScoreRecord
from stepeval.signals import scoring
from stepeval.stages.base import Emit, Stage, Unit
from stepeval.store import fingerprint

STAGE = "score"
TEXT_ONLY = "not applicable: the model has no speech output (text-only)"


@dataclass
class ConversationReplies(Unit):
    replays: list[ReplayRecord]


class ScoreStage(Stage[ConversationReplies]):
    name = STAGE
    unit_name = "reply"

    def __init__(
        self,
        run_root: Path,
        replays: Mapping[Key, ReplayRecord],
        transcripts: Mapping[Key, AsrRecord] | None,
        options: scoring.SignalOptions,
        concurrency: int = 1,
        executor: Executor | None = None,
    ):
        self.concurrency = concurrency  # conversations scored at once (threads.Plan.scoring_workers)
        self.executor = executor  # None: worker threads of this process
        self.run_root = run_root
        self.replays = replays
        self.transcripts = transcripts  # None: ASR not run
        self.options = options
        self.identity = scoring.identity(options)
        # the other replies' audio matters to a turn's scores only through speaker consistency
        self.compares_voices = options.speaker and not scoring.unavailable_reasons(options).get("speaker")

    def units(self) -> list[ConversationReplies]:
        conversations: dict[str, list[ReplayRecord]] = {}
        for record in self.replays.values():
            conversations.setdefault(record.conversation_id, []).append(record)
        return [self.unit(replays) for replays in conversations.values()]

    def unit(self, replays: list[ReplayRecord]) -> ConversationReplies:
        """One conversation's replies (every turn final, and its transcripts where ASR runs)."""
        replays = sorted(replays, key=lambda r: r.turn)  # the voices list is part of the fingerprint: dataset order
        # where speaker consistency cannot run, a turn redone elsewhere in the conversation changes none of this
        # turn's scores: its record is reused
        voices = [r.audio_sha256 for r in replays] if self.compares_voices else None
        fps = {}
        for r in replays:
            asr = self._transcript(r.key)
            fps[r.key] = fingerprint(self.identity, r.fingerprint, r.status, asr and asr.fingerprint, voices)
        return ConversationReplies(fps, replays)

    def _transcript(self, key: Key) -> AsrRecord | None:
        return None if self.transcripts is None else self.transcripts.get(key)

    async def compute(self, unit: ConversationReplies, stored: dict[Key, ScoreRecord], emit: Emit) -> None:
        replays = [r.to_json() for r in unit.replays]
        asrs = {r.key: (t.to_json() if (t := self._transcript(r.key)) else None) for r in unit.replays}
        args = (replays, asrs, self.run_root, self.options)
        if self.executor is None:
            scored = await asyncio.to_thread(scoring.score_conversation, *args)
        else:  # a scoring process: its models and its Python run beside ASR's, not under the same GIL
            scored = await asyncio.get_running_loop().run_in_executor(self.executor, scoring.score_conversation, *args)
        for record in self._records(unit, scored):
            if record.key not in stored:
                await emit(record)

    def _records(self, unit: ConversationReplies, scored: dict) -> list[ScoreRecord]:
        out = []
        for r in unit.replays:
            base = {
                "conversation_id": r.conversation_id,
                "turn": r.turn,
                "stage": STAGE,
                "fingerprint": unit.fingerprints[r.key],
                "category": r.category,
                "language": r.language,
            }
            if r.status == "ok" and not r.speaks:
                out.append(ScoreRecord(**base, not_applicable=dict.fromkeys(self.options.metrics(), TEXT_ONLY)))
                continue
            turn = scored[r.key]
            out.append(
                ScoreRecord(
                    **base,
                    status=FAILED if turn.error else "ok",
                    error=turn.error,
                    metrics=turn.values,
                    missing=turn.missing,
                    counts=turn.counts,
                )
            )
        return out
