"""History policies: what a model sees of the earlier turns of a conversation.

* ``audio``: every earlier user turn as audio; earlier replies as the model's own text
  (its transcript when it only spoke).
* ``transcript``: earlier user turns as text (the dataset transcript), only the latest user
  turn as audio (Step-Audio's context management).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from stepeval import audio as audio_io
from stepeval.types import Message

POLICIES = ("audio", "transcript")


@dataclass
class Exchange:
    """One completed turn: the user's audio and transcript, and the model's reply."""

    user_audio: np.ndarray | None  # None: the turn was sent as text (input=text)
    user_rate: int | None
    user_text: str | None
    reply_text: str | None


def build(
    policy: str,
    earlier: list[Exchange],
    current_audio: np.ndarray | None,
    current_rate: int | None,
    system_prompt: str | None = None,
    current_text: str | None = None,
) -> list[Message]:
    """The messages for one turn. Without ``current_audio`` (``input=text``) the user turn is ``current_text``, and
    an earlier turn without audio goes as its text under either policy (there is no audio to send)."""
    if policy not in POLICIES:
        raise ValueError(f"history={policy!r}: use one of {POLICIES}")
    messages: list[Message] = [Message("system", text=system_prompt)] if system_prompt else []
    for exchange in earlier:
        if policy == "audio" and exchange.user_audio is not None:
            messages.append(Message("user", audio=exchange.user_audio, sample_rate=exchange.user_rate))
        else:
            messages.append(Message("user", text=exchange.user_text or ""))
        messages.append(Message("assistant", text=exchange.reply_text or ""))
    if current_audio is None:
        messages.append(Message("user", text=current_text or ""))
    else:
        messages.append(Message("user", audio=current_audio, sample_rate=current_rate))
    return messages


# id(array) -> (weak reference to it, sample rate, {form: encoding}); an entry leaves when its array dies
_ENCODED: dict[int, tuple[weakref.ref, int, dict[str, str | bytes]]] = {}


def _remembered(audio: np.ndarray, rate: int) -> dict[str, str | bytes] | None:
    """The encodings kept for this clip (None: it may change, so nothing is kept)."""
    if not isinstance(audio, np.ndarray) or audio.flags.writeable:
        return None
    key = id(audio)
    hit = _ENCODED.get(key)
    if hit is not None and hit[0]() is audio and hit[1] == rate:
        return hit[2]
    forms: dict[str, str | bytes] = {}
    _ENCODED[key] = (weakref.ref(audio, lambda _ref, key=key: _ENCODED.pop(key, None)), rate, forms)
    return forms


def wav_base64(audio: np.ndarray, rate: int) -> str:
    """The clip as base64 16-bit WAV, encoded once per clip, not once per turn it is sent in.

    With the ``audio`` policy every earlier user clip goes out again on every later turn (8 turns of
    history: 8 WAV encodes and base64s per request, the largest part of the harness's CPU per turn).
    Only read-only arrays are remembered (the replay stage makes the clips it reads read-only), so a
    clip cannot change after it was encoded; anything else is encoded each time, as before.
    """
    forms = _remembered(audio, rate)
    if forms is None:
        return audio_io.to_base64_wav(audio, rate)
    if "base64" not in forms:
        forms["base64"] = audio_io.to_base64_wav(audio, rate)
    return forms["base64"]


def wav_base64_json(audio: np.ndarray, rate: int) -> bytes:
    """``wav_base64`` as a JSON string literal (quotes included: base64 needs no escaping), kept like it."""
    forms = _remembered(audio, rate)
    if forms is None:
        return b'"' + audio_io.to_base64_wav(audio, rate).encode("ascii") + b'"'
    if "json" not in forms:
        forms["json"] = b'"' + wav_base64(audio, rate).encode("ascii") + b'"'
    return forms["json"]


def frozen(audio: np.ndarray) -> np.ndarray:
    """The array, made read-only (so ``wav_base64`` may remember its encoding)."""
    audio.flags.writeable = False
    return audio
