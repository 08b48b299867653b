"""Replies produced elsewhere (another machine, a vendor's UI), read from a folder.

Layout (documented in the README):

    <folder>/<conversation id>/turn_<k>.wav    the reply audio to user turn k (0-based); any soundfile format
    <folder>/<conversation id>/turn_<k>.txt    optional: the model's text channel for that turn

Conversation ids that are not file-system safe are looked up by their ``safe_name`` too.
"""

from __future__ import annotations

from pathlib import Path

from stepeval import audio as audio_io
from stepeval.backends.base import Backend
from stepeval.store import safe_name
from stepeval.types import Message, Reply, TurnContext, TurnFailed

SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class Recorded(Backend):
    def __init__(self, folder: str):
        if not folder:
            raise ValueError("model=recorded needs model.backend.folder=<folder of replies>")
        self.folder = Path(folder).expanduser()

    def check(self) -> None:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"recorded replies folder {self.folder} does not exist (model.backend.folder)")

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        for name in dict.fromkeys([context.conversation_id, safe_name(context.conversation_id)]):
            base = self.folder / name / f"turn_{context.turn}"
            for suffix in SUFFIXES:
                path = base.with_suffix(suffix)
                if path.exists():
                    audio, rate = audio_io.read(path)
                    text_path = base.with_suffix(".txt")
                    text = text_path.read_text(encoding="utf-8").strip() if text_path.exists() else None
                    return Reply(text=text, audio=audio, sample_rate=rate, extra={"file": str(path)})
        raise TurnFailed(f"no recorded reply at {self.folder / context.conversation_id / f'turn_{context.turn}'}.wav")

    def describe(self) -> dict:
        return {**super().describe(), "folder": str(self.folder.resolve())}
