"""History policies: what a model sees of the earlier turns of a conversation.

* ``audio``: every earlier user turn as audio; earlier replies as the model's own text
  (its transcript when it only spoke).
* ``transcript``: earlier user turns as text (the dataset transcript), only the latest user
  turn as audio (Step-Audio's context management).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepeval.types import Message

POLICIES = ("audio", "transcript")


@dataclass
class Exchange:
    """One completed turn: the user's audio and transcript, and the model's reply."""

    user_audio: np.ndarray
    user_rate: int
    user_text: str | None
    reply_text: str | None


def build(
    policy: str,
    earlier: list[Exchange],
    current_audio: np.ndarray,
    current_rate: int,
    system_prompt: str | None = None,
) -> list[Message]:
    if policy not in POLICIES:
        raise ValueError(f"history={policy!r}: use one of {POLICIES}")
    messages: list[Message] = [Message("system", text=system_prompt)] if system_prompt else []
    for exchange in earlier:
        if policy == "audio":
            messages.append(Message("user", audio=exchange.user_audio, sample_rate=exchange.user_rate))
        else:
            messages.append(Message("user", text=exchange.user_text or ""))
        messages.append(Message("assistant", text=exchange.reply_text or ""))
    messages.append(Message("user", audio=current_audio, sample_rate=current_rate))
    return messages
