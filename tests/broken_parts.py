"""Parts that fail or lack something on purpose, for the tests of exit statuses and not-applicable metrics."""

from __future__ import annotations

import numpy as np

from stepeval.asr.engines import Transcript
from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext


class NoNetworkASR:
    """An ASR engine whose weights cannot be fetched: every transcription fails, as Whisper large-v3 does
    on a machine without network once it gets past the check."""

    def __init__(self, model: str = "large-v3"):
        self.model = model

    def check(self) -> None:
        """Passes: the failure comes per clip, as it does when a download is attempted lazily."""

    def identity(self) -> dict:
        return {"engine": "no-network", "model": self.model}

    def transcribe(self, samples: np.ndarray, rate: int, language: str | None = None) -> Transcript:
        raise ConnectionError(f"cannot download {self.model}: no network")


class TextOnly(Backend):
    """A model without speech output: it answers in text alone."""

    speaks = False

    def __init__(self, text: str | None = None, audio_path: str | None = None, delay_s: float = 0.0):
        self.text = text or "a text reply"  # (audio_path and delay_s: the canned config's keys, unused)

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        return Reply(text=self.text)
