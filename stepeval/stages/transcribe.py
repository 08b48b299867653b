"""ASR stages: transcripts of the model's replies (``asr``) and, for datasets without user
transcripts, of the user's turns (``user_asr``). One turn per unit, computed in a worker thread
(ASR is CPU/GPU work, not waiting); the fingerprint is the engine's identity and the audio's sha256."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stepeval import audio as audio_io
from stepeval.asr.engines import AsrEngine, transcript_fingerprint
from stepeval.records import FAILED, AsrRecord, Key, ReplayRecord
from stepeval.stages.base import Emit, Stage, Unit
from stepeval.store import fingerprint
from stepeval.types import Conversation

REPLY_LOG = "asr"
USER_LOG = "user_asr"


@dataclass
class AudioUnit(Unit):
    key: Key
    path: Path
    language: str | None  # the conversation's language, for engines that route by it


class _Transcribe(Stage[AudioUnit]):
    unit_name = "clip"

    def __init__(self, engine: AsrEngine):
        self.engine = engine
        self.concurrency = max(1, int(getattr(engine, "workers", 1)))  # transcriptions in parallel (CTranslate2 workers)

    async def compute(self, unit: AudioUnit, stored: dict[Key, AsrRecord], emit: Emit) -> None:
        await emit(await asyncio.to_thread(self._transcribe, unit))

    def _transcribe(self, unit: AudioUnit) -> AsrRecord:
        base = {
            "conversation_id": unit.key[0],
            "turn": unit.key[1],
            "stage": self.name,
            "fingerprint": unit.fingerprints[unit.key],
        }
        try:
            samples, rate = audio_io.read(unit.path)
            if samples.size == 0:  # an empty reply: nothing to hear, whatever the engine would make of it
                return AsrRecord(**base, text="", engine="none: empty reply")
            heard = self.engine.transcribe(samples, rate, language=unit.language)
        except Exception as err:  # recorded as failed; the scores that need it are missing, a rerun retries it
            return AsrRecord(**base, status=FAILED, error=f"{type(err).__name__}: {err}")
        return AsrRecord(
            **base,
            text=heard.text,
            language=heard.language,
            language_probability=heard.language_probability,
            engine=getattr(heard, "engine", None),
        )


class ReplyAsrStage(_Transcribe):
    """Transcripts of every reply that has audio."""

    name = REPLY_LOG

    def __init__(self, engine: AsrEngine, run_root: Path, replays: Mapping[Key, ReplayRecord]):
        super().__init__(engine)
        self.run_root = run_root
        self.replays = replays

    def units(self) -> list[AudioUnit]:
        return [unit for replay in self.replays.values() if (unit := self.unit(replay)) is not None]

    def unit(self, replay: ReplayRecord) -> AudioUnit | None:
        """The reply's transcription, or None when it has no audio (failed, skipped, text-only)."""
        if replay.status != "ok" or not replay.audio:
            return None
        fp = transcript_fingerprint(self.engine, {"audio_sha256": replay.audio_sha256, "language": replay.language})
        return AudioUnit({replay.key: fp}, replay.key, self.run_root / replay.audio, replay.language)


class UserAsrStage(_Transcribe):
    """Transcripts of the user turns that have no dataset transcript (the judges read them)."""

    name = USER_LOG

    def __init__(self, engine: AsrEngine, conversations: Sequence[Conversation]):
        super().__init__(engine)
        self.conversations = conversations
        self._identity: dict | None = None

    def units(self) -> list[AudioUnit]:
        return [unit for conv in self.conversations for unit in self.units_of(conv)]

    def units_of(self, conv: Conversation) -> list[AudioUnit]:
        """The conversation's user turns without a dataset transcript."""
        if self._identity is None:
            self._identity = self.engine.identity()
        units = []
        for turn in conv.turns:
            if turn.text and turn.text.strip():
                continue
            key = (conv.id, turn.index)
            try:
                sha = audio_io.file_sha256(turn.audio_path)
            except OSError:
                sha = "unreadable"  # the transcription fails with the reason and is retried
            units.append(AudioUnit({key: fingerprint(self._identity, sha)}, key, Path(turn.audio_path), None))
        return units
