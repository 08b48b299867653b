"""The replay stage: conversations in parallel, turns in order, every turn saved.

A unit is one conversation. Each finished turn is written (audio file first, then its record,
fsynced, in the run's group commit) before the next starts, so a kill loses only the turns in flight. A turn's fingerprint
chains the model, history policy, system prompt, seed, the user audio's sha256 and the previous
turn's fingerprint, so all of a conversation's fingerprints are known before any model call.
A turn that fails (the model, or unusable user audio) is recorded with its reason; the
conversation's later turns are recorded as skipped, and both are retried on the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stepeval import audio as audio_io
from stepeval.client import history as history_mod
from stepeval.client import timing
from stepeval.client.responder import Responder
from stepeval.records import FAILED, SKIPPED, Key, ReplayRecord
from stepeval.stages.base import Emit, Stage, Unit
from stepeval.store import FULL, RunStore, fingerprint
from stepeval.types import Conversation, Reply, TurnContext

STAGE = "replay"


@dataclass
class ReplaySettings:
    model_fingerprint: str
    history: str = "audio"
    concurrency: int = 8
    seed: int = 0
    system_prompt: str | None = None
    # the input condition (stepeval.conditions.InputCondition); None or clean: the user's audio as recorded
    condition: Any = None
    latency: dict = field(default_factory=dict)  # protocol facts the responder cannot know (hardware, mode)

    @property
    def degraded(self) -> bool:
        return self.condition is not None and not self.condition.clean

    @property
    def sends_text(self) -> bool:
        return self.condition is not None and self.condition.sends_text


@dataclass
class ConversationUnit(Unit):
    conversation: Conversation
    user_sha256: dict[int, str | None]  # turn index -> sha256 of the user audio (None: unreadable)
    unreadable: dict[int, str]  # turn index -> why the user audio cannot be used


class ReplayStage(Stage[ConversationUnit]):
    name = STAGE
    unit_name = "turn"

    def __init__(self, responder: Responder, store: RunStore, settings: ReplaySettings, conversations: Sequence[Conversation]):
        self.responder = responder
        self.store = store
        self.settings = settings
        self.conversations = conversations
        self.concurrency = settings.concurrency

    def units(self) -> list[ConversationUnit]:
        return [self._unit(conv) for conv in self.conversations]

    def _unit(self, conv: Conversation) -> ConversationUnit:
        s = self.settings
        fps: dict[Key, str] = {}
        shas: dict[int, str | None] = {}
        unreadable: dict[int, str] = {}
        previous = ""
        for turn in conv.turns:
            if s.sends_text:  # input=text: the transcript is what is sent, the audio is never read
                shas[turn.index] = None
                if not (turn.text or "").strip():
                    unreadable[turn.index] = f"input=text: no transcript for {conv.id} turn {turn.index}"
            else:
                try:
                    shas[turn.index] = audio_io.file_sha256(turn.audio_path)
                except OSError as err:
                    shas[turn.index] = None
                    unreadable[turn.index] = f"user audio {turn.audio_path}: {err.strerror or err}"
            text = turn.text if s.history == "transcript" or (s.degraded and s.condition.needs_text) else None
            parts = [s.model_fingerprint, s.history, s.system_prompt, s.seed, shas[turn.index] or "unreadable", text, previous]
            if s.degraded:  # a clean run's fingerprints stay as they were; a degraded one never matches them
                parts.append(s.condition.identity())
            fp = fingerprint(*parts)
            fps[(conv.id, turn.index)] = fp
            previous = fp
        return ConversationUnit(fps, conv, shas, unreadable)

    def usable(self, record: ReplayRecord) -> bool:
        # the audio vanished: redo the turn rather than trust a dangling record
        return not record.audio or (self.store.root / record.audio).exists()

    async def compute(self, unit: ConversationUnit, stored: dict[Key, ReplayRecord], emit: Emit) -> None:
        conv = unit.conversation
        earlier: list[history_mod.Exchange] = []
        failed_at: int | None = None
        # every clip of the conversation in one trip to a worker thread (a trip costs about what reading a clip does)
        prepare = getattr(self.responder, "prepare_clip", None)  # the wire client encodes each clip there too
        if self.settings.sends_text:
            clips = _text_turns(conv.turns, unit.unreadable)
        else:
            transform = _transform(self.settings, conv) if self.settings.degraded else None
            clips = await asyncio.to_thread(_read_user_clips, conv.turns, unit.unreadable, prepare, transform)
        for turn in conv.turns:
            key = (conv.id, turn.index)
            base = {
                "conversation_id": conv.id,
                "turn": turn.index,
                "stage": STAGE,
                "fingerprint": unit.fingerprints[key],
                "category": conv.category,
                "language": conv.language,
            }
            if failed_at is not None:
                await emit(ReplayRecord(**base, status=SKIPPED, error=f"turn {failed_at} failed earlier"))
                continue
            clip = clips[turn.index]
            if isinstance(clip, Exception):
                await emit(ReplayRecord(**base, status=FAILED, error=f"user audio unusable: {clip}"))
                failed_at = turn.index
                continue
            user_audio, user_rate = clip
            record = stored.get(key)
            if record is None:
                messages = history_mod.build(
                    self.settings.history,
                    earlier,
                    user_audio,
                    user_rate,
                    self.settings.system_prompt,
                    current_text=turn.text if user_audio is None else None,
                )
                record, files = await self._ask(base, messages, TurnContext(conv.id, turn.index, self.settings.seed))
                try:
                    await emit(record, files)  # the reply's audio file, then its record, durable in one group commit
                except OSError as err:  # its audio could not be saved: this turn failed
                    if err.errno in FULL:  # no room left: every later turn would fail the same way; the run stops
                        raise
                    record = ReplayRecord(**base, status=FAILED, error=f"reply not saved: {err}")
                    await emit(record)
            if record.status != "ok":
                failed_at = turn.index
                continue
            earlier.append(history_mod.Exchange(user_audio, user_rate, turn.text, record.text or record.transcript))

    async def _ask(self, base: dict, messages: list, context: TurnContext) -> tuple[ReplayRecord, list[tuple[Path, bytes]]]:
        """The turn's record and the files it points to (written by ``emit``, before the record)."""
        started = time.perf_counter()
        files: list[tuple[Path, bytes]] = []
        try:
            reply = await self.responder.respond(messages, context)
            record = self._record(base, reply, files)  # a 16-bit WAV encodes in tens of microseconds: no thread hop
        except asyncio.CancelledError:
            raise
        except Exception as err:  # any model failure is recorded; the run goes on
            detail = "".join(traceback.format_exception_only(type(err), err)).strip()
            record, files = ReplayRecord(**base, status=FAILED, error=detail), []
        record.timings["wall_s"] = round(time.perf_counter() - started, 4)
        if record.status == "ok":
            for key, value in self.settings.latency.items():  # declared (model.hardware) over server-reported
                if value is not None or key not in record.latency:
                    record.latency[key] = value
            declared = self.settings.latency.get("hardware") is not None
            record.latency["hardware_source"] = "declared" if declared else "server" if record.latency.get("hardware") else None
        return record, files

    def _record(self, base: dict, reply: Reply, files: list[tuple[Path, bytes]]) -> ReplayRecord:
        record = ReplayRecord(
            **base,
            text=reply.text,
            transcript=reply.transcript,
            speaks=bool(getattr(self.responder, "speaks", True)),
            timings=dict(reply.timings),
            usage=dict(reply.usage),
            extra={k: v for k, v in reply.extra.items() if k != "served_by"},
            served_by=reply.extra.get("served_by"),
        )
        record.timings_missing = dict(record.extra.pop("timings_missing", None) or {})
        record.latency = dict(record.extra.pop("latency", None) or {})
        if reply.audio is not None:
            if not reply.sample_rate:
                raise ValueError("reply has audio but no sample rate")
            samples = np.asarray(reply.audio, dtype=np.float32)
            path = self.store.reply_audio_path(base["conversation_id"], base["turn"])
            # a mono 16-bit WAV as received is kept as it came (the same samples, no re-encoding), else encoded
            data = reply.encoded if reply.encoded is not None else audio_io.encode_wav(samples, reply.sample_rate)
            files.append((path, data))
            record.audio_sha256 = hashlib.sha256(data).hexdigest()
            record.audio = self.store.relative(path)
            record.sample_rate = reply.sample_rate
            record.duration_s = round(audio_io.duration(samples, reply.sample_rate), 4)
        elif reply.text is None:
            raise ValueError("reply has neither text nor audio")
        has_text = bool(reply.text or reply.transcript)
        streamed = bool(record.latency.get("streamed"))
        timing.finish(record.timings, record.timings_missing, reply.audio, reply.sample_rate, has_text, streamed)
        return record


Transform = Callable[[np.ndarray, int, Any], tuple[np.ndarray, int]]


def _transform(settings: ReplaySettings, conv: Conversation) -> Transform:
    """The input condition applied to one turn's clip, seeded by (run seed, condition, conversation, turn)."""
    condition = settings.condition

    def apply(samples: np.ndarray, rate: int, turn: Any) -> tuple[np.ndarray, int]:
        out, out_rate = condition.apply(
            samples, rate, seed=settings.seed, conversation_id=conv.id, turn=turn.index, text=turn.text, language=conv.language
        )
        return history_mod.frozen(np.ascontiguousarray(out, dtype=np.float32)), out_rate

    return apply


def _text_turns(turns: Sequence, unreadable: dict[int, str]) -> dict[int, tuple[None, None] | Exception]:
    """input=text: nothing to read; a turn without a transcript fails (found while fingerprinting)."""
    return {t.index: ValueError(unreadable[t.index]) if t.index in unreadable else (None, None) for t in turns}


def _read_user_clips(
    turns: Sequence,
    unreadable: dict[int, str],
    prepare: Callable[[np.ndarray, int], None] | None = None,
    transform: Transform | None = None,
) -> dict[int, tuple[np.ndarray, int] | Exception]:
    """Each turn's clip, or why it cannot be sent (a damaged clip fails its own turn, not the ones before it);
    ``transform`` (the input condition) degrades it, so the history holds the degraded clip too;
    ``prepare`` (the responder's) is given each clip that can be sent."""
    clips: dict[int, tuple[np.ndarray, int] | Exception] = {}
    for turn in turns:
        try:
            if turn.index in unreadable:
                raise ValueError(unreadable[turn.index])  # found unreadable while fingerprinting
            clips[turn.index] = _read_user_audio(turn.audio_path)
            if transform is not None:
                clips[turn.index] = transform(*clips[turn.index], turn)
        except (audio_io.UnusableAudio, OSError, ValueError, RuntimeError) as err:
            clips[turn.index] = err
            continue
        if prepare is not None:
            prepare(*clips[turn.index])
    return clips


def _read_user_audio(path: Path) -> tuple[np.ndarray, int]:
    """The user's clip as the model will hear it; damaged audio (non-finite samples, a header that
    promises more than the data holds) is refused, never sent. Read-only, so its wire encoding is
    made once for every later turn that sends it again (``history.wav_base64``)."""
    samples, rate = audio_io.read_checked(path)
    return history_mod.frozen(samples), rate
