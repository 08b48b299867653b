"""The nouns every stage shares: conversations going in, replies and records coming out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class UserTurn:
    """One user utterance: its audio file and, where the dataset has one, its transcript."""

    index: int
    audio_path: Path
    text: str | None = None


@dataclass(frozen=True)
class Conversation:
    """A multi-turn conversation; turns are replayed strictly in order."""

    id: str
    category: str
    language: str
    turns: tuple[UserTurn, ...]
    language_source: str = "dataset"  # "dataset" or "detected" (from the transcript's script)


@dataclass(frozen=True)
class TurnContext:
    """Which turn is being answered; deterministic backends (noise, recorded) key on it."""

    conversation_id: str
    turn: int
    seed: int = 0


@dataclass
class Message:
    """One entry of the history a model sees: user or assistant, text and/or audio."""

    role: str  # "system" | "user" | "assistant"
    text: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None


@dataclass
class Reply:
    """What a model returned for one turn, normalised across wire formats and backends."""

    text: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    transcript: str | None = None  # the model's own transcript of its audio, if it gives one
    encoded: bytes | None = None  # the audio file as the model sent it, where storing it as is keeps ``audio`` exactly
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class TurnFailed(Exception):
    """A turn that could not be produced; recorded with its message, the run goes on."""
