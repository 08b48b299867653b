"""The backend protocol: the one method every model family and control system implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from stepeval.types import Message, Reply, TurnContext

__all__ = ["Backend", "TurnContext"]


class Backend(ABC):
    """Answers one user turn given the conversation so far (``history`` ends with that user turn).

    Backends are synchronous and may block (model inference); the replay engine runs them in
    worker threads in-process, or ``stepeval serve`` exposes them over the wire format.
    """

    #: whether the backend produces speech; text-only models get speech metrics marked not applicable
    speaks: bool = True
    #: whether a user turn may come as text instead of audio (``input=text``); a backend that needs audio refuses it
    takes_text: bool = False

    @abstractmethod
    def respond(self, history: list[Message], context: TurnContext) -> Reply: ...

    def check(self) -> None:
        """Fail fast, before any turn runs, if something the backend needs is missing."""

    def describe(self) -> dict:
        """What identifies this backend's outputs (goes into the replay fingerprint and manifest)."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}"}


def last_user(history: list[Message]) -> Message:
    for message in reversed(history):
        if message.role == "user":
            return message
    raise ValueError("history holds no user message")
