"""The multi-turn replay engine: conversations in parallel, turns in order, every turn saved.

Each finished turn is written (audio file first, then its record, fsynced) before the next
starts, so a kill loses only the turns in flight. A turn whose stored record has the same
fingerprint is reused, not asked again.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from stepeval import audio as audio_io
from stepeval.client import history as history_mod
from stepeval.client.responder import Responder
from stepeval.store import GroupCommitter, RunStore, fingerprint
from stepeval.types import Conversation, Reply, TurnContext

STAGE = "replay"


def _read_user_turn(path) -> tuple[np.ndarray, int, str]:
    samples, rate = audio_io.read(path)
    return samples, rate, audio_io.file_sha256(path)


@dataclass
class StageStats:
    """How much of a stage was reused, computed, or could not be computed."""

    stage: str
    reused: int = 0
    computed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        total = self.reused + self.computed + self.failed + self.skipped
        text = f"{self.stage}: {total} records: {self.reused} reused, {self.computed} computed"
        if self.failed or self.skipped:
            text += f", {self.failed} failed, {self.skipped} skipped after a failure"
        return text


@dataclass
class ReplaySettings:
    model_fingerprint: str
    history: str = "audio"
    concurrency: int = 8
    seed: int = 0
    system_prompt: str | None = None


class ReplayEngine:
    def __init__(self, responder: Responder, store: RunStore, settings: ReplaySettings, progress: bool = True):
        self.responder = responder
        self.store = store
        self.settings = settings
        self.progress = progress
        self.log = store.log(STAGE)
        self.committer = GroupCommitter(self.log)
        self.stats = StageStats(STAGE)

    async def run(self, conversations: list[Conversation]) -> StageStats:
        existing = self.log.load()
        semaphore = asyncio.Semaphore(max(1, self.settings.concurrency))
        total = sum(len(c.turns) for c in conversations)
        bar = tqdm(total=total, desc="replay", unit="turn", disable=not self.progress, dynamic_ncols=True)

        async def one(conv: Conversation) -> None:
            async with semaphore:
                await self._conversation(conv, existing, bar)

        try:
            await asyncio.gather(*(one(c) for c in conversations))
        finally:
            bar.close()
        return self.stats

    async def _conversation(self, conv: Conversation, existing: dict, bar: tqdm) -> None:
        earlier: list[history_mod.Exchange] = []
        previous_fp = ""
        failed_at: int | None = None
        for turn in conv.turns:
            user_audio, user_rate, user_sha = await asyncio.to_thread(_read_user_turn, turn.audio_path)
            fp = fingerprint(
                self.settings.model_fingerprint,
                self.settings.history,
                self.settings.system_prompt,
                self.settings.seed,
                user_sha,
                turn.text if self.settings.history == "transcript" else None,
                previous_fp,
            )
            base = {
                "conversation_id": conv.id,
                "turn": turn.index,
                "stage": STAGE,
                "fingerprint": fp,
                "category": conv.category,
                "language": conv.language,
            }
            if failed_at is not None:
                await self._append({**base, "status": "skipped", "error": f"turn {failed_at} failed earlier"})
                self.stats.skipped += 1
                bar.update(1)
                continue
            record = self._reusable(existing.get((conv.id, turn.index)), fp)
            if record is not None:
                self.stats.reused += 1
            else:
                messages = history_mod.build(self.settings.history, earlier, user_audio, user_rate, self.settings.system_prompt)
                context = TurnContext(conv.id, turn.index, self.settings.seed)
                record = await self._ask(base, messages, context)
            bar.update(1)
            if record["status"] != "ok":
                failed_at = turn.index
                continue
            earlier.append(history_mod.Exchange(user_audio, user_rate, turn.text, record.get("text") or record.get("transcript")))
            previous_fp = fp

    def _reusable(self, record: dict | None, fp: str) -> dict | None:
        if record is None or record.get("fingerprint") != fp or record.get("status") != "ok":
            return None
        rel = record.get("audio")
        if rel and not (self.store.root / rel).exists():
            return None  # the audio vanished: redo the turn rather than trust a dangling record
        return record

    async def _ask(self, base: dict, messages: list, context: TurnContext) -> dict:
        started = time.perf_counter()
        try:
            reply = await self.responder.respond(messages, context)
            record = await asyncio.to_thread(self._save, base, reply)  # encode + fsync off the event loop
        except asyncio.CancelledError:
            raise
        except Exception as err:  # any model failure is recorded; the run goes on
            detail = "".join(traceback.format_exception_only(type(err), err)).strip()
            record = {**base, "status": "failed", "error": detail}
            self.stats.failed += 1
            self.stats.errors.append(f"{base['conversation_id']} turn {base['turn']}: {detail}")
        else:
            self.stats.computed += 1
        record.setdefault("timings", {})["wall_s"] = round(time.perf_counter() - started, 4)
        await self._append(record)
        return record

    def _save(self, base: dict, reply: Reply) -> dict:
        record = {
            **base,
            "status": "ok",
            "text": reply.text,
            "transcript": reply.transcript,
            "timings": dict(reply.timings),
            "usage": dict(reply.usage),
            "extra": dict(reply.extra),
            "audio": None,
        }
        if reply.audio is not None:
            if not reply.sample_rate:
                raise ValueError("reply has audio but no sample rate")
            samples = np.asarray(reply.audio, dtype=np.float32)
            path = self.store.reply_audio_path(base["conversation_id"], base["turn"])
            record["audio_sha256"] = audio_io.write_wav_atomic(path, samples, reply.sample_rate)
            record["audio"] = self.store.relative(path)
            record["sample_rate"] = reply.sample_rate
            record["duration_s"] = round(audio_io.duration(samples, reply.sample_rate), 4)
        elif reply.text is None:
            raise ValueError("reply has neither text nor audio")
        return record

    async def _append(self, record: dict) -> None:
        await self.committer.append(record)
