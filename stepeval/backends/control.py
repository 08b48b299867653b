"""Control systems: the floor and sanity checks every sound metric must rank correctly.

``silence`` says nothing, ``noise`` says nothing intelligible, ``parrot`` speaks the user's own
audio back, ``canned`` gives the same off-topic spoken answer to everything.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stepeval import audio as audio_io
from stepeval.backends.base import Backend, last_user
from stepeval.types import Message, Reply, TurnContext

ASSETS = Path(__file__).resolve().parent / "assets"


class _Control(Backend):
    takes_text = True  # they ignore what the user said (parrot, which repeats it, needs audio)

    def __init__(self, delay_s: float = 0.0):
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.delay_s = delay_s  # simulated latency, for resume tests and demos

    def _wait(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)


class Silence(_Control):
    def __init__(self, seconds: float = 2.0, sample_rate: int = 16000, delay_s: float = 0.0):
        super().__init__(delay_s)
        self.seconds, self.sample_rate = seconds, sample_rate

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        self._wait()
        return Reply(audio=np.zeros(int(self.seconds * self.sample_rate), np.float32), sample_rate=self.sample_rate)

    def describe(self) -> dict:
        return {**super().describe(), "seconds": self.seconds, "sample_rate": self.sample_rate}


class Noise(_Control):
    """White noise, seeded by (run seed, conversation, turn) so reruns are identical."""

    def __init__(self, seconds: float = 2.0, level: float = 0.1, sample_rate: int = 16000, delay_s: float = 0.0):
        super().__init__(delay_s)
        self.seconds, self.level, self.sample_rate = seconds, level, sample_rate

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        self._wait()
        seed = zlib.crc32(f"{context.seed}/{context.conversation_id}/{context.turn}".encode())
        rng = np.random.default_rng(seed)
        samples = rng.normal(0.0, self.level, int(self.seconds * self.sample_rate)).astype(np.float32)
        return Reply(audio=np.clip(samples, -1, 1), sample_rate=self.sample_rate)

    def describe(self) -> dict:
        return {**super().describe(), "seconds": self.seconds, "level": self.level, "sample_rate": self.sample_rate}


class Parrot(_Control):
    """Speaks the user's latest turn back: on-language, fluent, and never an answer.

    Streamed (``respond_stream``, what ``stepeval serve`` uses for ``stream: true``), the reply comes in
    ``chunk_s`` pieces ``chunk_delay_s`` apart after ``delay_s``: a known timeline for latency tests and
    sweeps. Neither changes the reply, so neither is part of ``describe``."""

    def __init__(self, delay_s: float = 0.0, chunk_s: float = 0.24, chunk_delay_s: float = 0.0):
        super().__init__(delay_s)
        if chunk_s <= 0 or chunk_delay_s < 0:
            raise ValueError(f"chunk_s must be > 0 and chunk_delay_s >= 0, got {chunk_s}, {chunk_delay_s}")
        self.chunk_s, self.chunk_delay_s = chunk_s, chunk_delay_s

    takes_text = False  # it has nothing to repeat

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        self._wait()
        return Reply(audio=self._echo(history).copy(), sample_rate=last_user(history).sample_rate)

    def respond_stream(self, history: list[Message], context: TurnContext) -> Iterator[Reply]:
        audio, rate = self._echo(history), last_user(history).sample_rate
        self._wait()
        step = max(1, int(self.chunk_s * rate))
        for start in range(0, max(audio.size, 1), step):
            if start and self.chunk_delay_s:
                time.sleep(self.chunk_delay_s)
            yield Reply(audio=audio[start : start + step].copy(), sample_rate=rate)

    @staticmethod
    def _echo(history: list[Message]) -> np.ndarray:
        user = last_user(history)
        if user.audio is None:
            raise ValueError("parrot needs the user's audio, and the latest user message has none")
        return user.audio


class Canned(_Control):
    """The same off-topic spoken answer (with its text) to every turn."""

    def __init__(self, audio_path: str | None = None, text: str | None = None, delay_s: float = 0.0):
        super().__init__(delay_s)
        self.audio_path = Path(audio_path) if audio_path else ASSETS / "canned_reply.wav"
        if not self.audio_path.exists():
            raise FileNotFoundError(f"canned reply audio {self.audio_path} does not exist (model.backend.audio_path)")
        self.audio, self.sample_rate = audio_io.read(self.audio_path)
        default_text = ASSETS / "canned_reply.txt"
        self.text = text if text is not None else (default_text.read_text(encoding="utf-8").strip() if not audio_path else None)

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        self._wait()
        return Reply(text=self.text, audio=self.audio.copy(), sample_rate=self.sample_rate)

    def describe(self) -> dict:
        return {**super().describe(), "audio_sha256": audio_io.file_sha256(self.audio_path), "text": self.text}
