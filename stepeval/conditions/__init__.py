"""Input conditions (``input=`` config group, docs/robustness.md): what happens to the user's audio before it is sent.

An ``InputCondition`` is a kind (``noise``, ``reverb``, ``telephone``, ``text``...) and its parameters. Its
identity (kind + every parameter, defaults included) enters the run name, each turn's replay fingerprint and the
manifest, so a degraded run never reuses clean replies. Every random choice comes from a generator seeded by
(run seed, identity, conversation, turn): the same seed gives the same bytes, and a turn's degradation does not
depend on which other turns ran. The replay stage applies it to every user clip it reads, so the clips kept in
the history are the degraded ones too: the model hears one consistent degraded conversation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stepeval import audio as audio_io
from stepeval.conditions import transforms as tf
from stepeval.types import Conversation

CLEAN = "clean"
TEXT = "text"

# kind -> its parameters and their defaults (a parameter not named here is an error naming input.params.<key>)
KINDS: dict[str, dict[str, Any]] = {
    CLEAN: {},
    TEXT: {},
    "noise": {"snr_db": 10.0, "color": "white", "talkers": 4},  # color: white | pink | babble (other clips of the set)
    "reverb": {"rt60_s": 0.6, "room_m": [6.0, 5.0, 3.0], "distance_m": 1.0},
    "far_field": {"distance_m": 4.0, "level_db": -12.0, "rt60_s": 0.4, "room_m": [8.0, 6.0, 3.0]},
    "telephone": {"low_hz": 300.0, "high_hz": 3400.0, "line_rate": 8000, "order": 4},
    # mp3 | opus; libsndfile's 0 (best) .. 1 (lowest bitrate); its MP3 encoder refuses 1.0 (0.95: 16 kbps CBR at 16 kHz)
    "codec": {"codec": "mp3", "compression_level": 0.95},
    "packet_loss": {"loss_rate": 0.1, "frame_ms": 20.0},
    "clipping": {"fraction": 0.05},
    "speed": {"factor": 1.25},
    "pitch": {"semitones": 3.0},
    "voice": {"voices": {"en": "en-gb", "zh": "cmn"}, "default_voice": "en-gb", "speed": 150},
}
# kind -> (module, pip hint) it needs beyond the core install
NEEDS: dict[str, tuple[str, str]] = {
    "reverb": ("pyroomacoustics", "pip install 'stepeval[conditions]'"),
    "far_field": ("pyroomacoustics", "pip install 'stepeval[conditions]'"),
    "telephone": ("scipy", "pip install 'stepeval[conditions]'"),
    "speed": ("pedalboard", "pip install 'stepeval[conditions]'"),
    "pitch": ("pedalboard", "pip install 'stepeval[conditions]'"),
}
COLORS = ("white", "pink", "babble")
CODECS = ("mp3", "opus")


@dataclass
class InputCondition:
    """One input condition; ``apply`` degrades one user clip."""

    name: str = CLEAN
    kind: str = CLEAN
    params: dict[str, Any] = field(default_factory=dict)
    # babble: the dataset's user clips, (conversation id, path), so a turn's babble comes from other conversations
    pool: list[tuple[str, Path]] = field(default_factory=list, repr=False)
    tts: Any = field(default=None, repr=False)  # voice: the TTS that re-speaks each turn (EspeakTTS)

    @classmethod
    def from_config(cls, node: dict | None) -> InputCondition:
        """From the composed ``input`` node; a wrong kind or parameter is an error naming the key."""
        node = dict(node or {})
        kind = str(node.get("kind") or CLEAN)
        if kind not in KINDS:
            raise ValueError(f"input.kind={kind!r}: use one of {', '.join(KINDS)}")
        given = dict(node.get("params") or {})
        unknown = sorted(set(given) - set(KINDS[kind]))
        if unknown:
            raise ValueError(f"input.params: {kind} takes no parameter(s) {unknown}; it takes {sorted(KINDS[kind]) or 'none'}")
        params = {**KINDS[kind], **given}
        condition = cls(str(node.get("name") or kind), kind, params)
        condition._validate()
        return condition

    def _validate(self) -> None:
        p, kind = self.params, self.kind

        def number(key: str, low: float | None = None, high: float | None = None, open_low: bool = False) -> None:
            value = p[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"input.params.{key}={value!r}: must be a number")
            if low is not None and (value < low or (open_low and value == low)):
                raise ValueError(f"input.params.{key}={value!r}: must be {'>' if open_low else '>='} {low}")
            if high is not None and value > high:
                raise ValueError(f"input.params.{key}={value!r}: must be <= {high}")

        if kind == "noise":
            number("snr_db")
            if p["color"] not in COLORS:
                raise ValueError(f"input.params.color={p['color']!r}: use one of {', '.join(COLORS)}")
            number("talkers", 1)
        elif kind in ("reverb", "far_field"):
            number("rt60_s", 0, open_low=True)
            number("distance_m", 0, open_low=True)
            if len(p["room_m"]) != 3 or min(p["room_m"]) <= 1:
                raise ValueError(f"input.params.room_m={p['room_m']!r}: three room dimensions in metres, each > 1")
            if kind == "far_field":
                number("level_db")
        elif kind == "telephone":
            number("low_hz", 0, open_low=True)
            number("line_rate", 1000)
            number("high_hz", p["low_hz"], p["line_rate"] / 2, open_low=True)
            number("order", 1, 12)
        elif kind == "codec":
            if p["codec"] not in CODECS:
                raise ValueError(f"input.params.codec={p['codec']!r}: use one of {', '.join(CODECS)}")
            number("compression_level", 0, 1)
            if p["codec"] == "mp3" and p["compression_level"] >= 1:
                raise ValueError("input.params.compression_level=1.0: libsndfile's MP3 encoder takes < 1 (0.95: 16 kbps)")
        elif kind == "packet_loss":
            number("loss_rate", 0, 1)
            number("frame_ms", 0, open_low=True)
        elif kind == "clipping":
            number("fraction", 0, 1, open_low=True)
        elif kind == "speed":
            number("factor", 0.25, 4)
        elif kind == "pitch":
            number("semitones", -24, 24)

    @property
    def clean(self) -> bool:
        return self.kind == CLEAN

    @property
    def sends_text(self) -> bool:
        """``input=text``: each user turn goes as its transcript, no audio."""
        return self.kind == TEXT

    @property
    def needs_text(self) -> bool:
        """Every user turn needs a transcript (sent as text, or re-spoken)."""
        return self.kind in (TEXT, "voice")

    def identity(self) -> dict[str, Any]:
        """What the replies depend on (the name only labels it)."""
        return {"kind": self.kind, "params": self.params}

    def describe(self) -> dict[str, Any]:
        """For the manifest and the tables."""
        out: dict[str, Any] = {"name": self.name, **self.identity()}
        if self.kind == "voice" and self.tts is not None:
            out["tts"] = self.tts.describe()
        return out

    def check(self) -> None:
        """Fail before any turn runs when a library or program the condition needs is missing."""
        needed = NEEDS.get(self.kind)
        if needed is not None:
            import importlib.util

            if importlib.util.find_spec(needed[0]) is None:
                raise ImportError(f"input={self.name} ({self.kind}) needs {needed[0]}: {needed[1]}")
        if self.kind == "voice":
            if self.tts is None:
                from stepeval.backends.cascade import EspeakTTS

                p = self.params
                self.tts = EspeakTTS(voices=dict(p["voices"]), default_voice=p["default_voice"], speed=int(p["speed"]))
            self.tts.check()

    def with_pool(self, conversations: Sequence[Conversation]) -> InputCondition:
        self.pool = [(c.id, Path(t.audio_path)) for c in conversations for t in c.turns]
        return self

    def rng(self, seed: int, conversation_id: str, turn: int) -> np.random.Generator:
        """This turn's generator: the same (seed, condition, turn) always draws the same numbers."""
        key = json.dumps([seed, self.identity(), str(conversation_id), int(turn)], sort_keys=True, default=str)
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))

    def apply(
        self,
        samples: np.ndarray,
        rate: int,
        *,
        seed: int,
        conversation_id: str,
        turn: int,
        text: str | None = None,
        language: str | None = None,
    ) -> tuple[np.ndarray, int]:
        """The clip as this condition delivers it (clean and text: unchanged)."""
        p, kind = self.params, self.kind
        if kind in (CLEAN, TEXT):
            return samples, rate
        rng = self.rng(seed, conversation_id, turn)
        if kind == "noise":
            n = len(samples)
            if p["color"] == "white":
                noise = tf.white_noise(n, rng)
            elif p["color"] == "pink":
                noise = tf.pink_noise(n, rng)
            else:
                noise = tf.babble_noise(self._babble_clips(conversation_id, rate, int(p["talkers"]), rng), n)
            return tf.add_noise(samples, noise, float(p["snr_db"])), rate
        if kind in ("reverb", "far_field"):
            rir = tf.room_impulse_response(rate, float(p["rt60_s"]), tuple(p["room_m"]), float(p["distance_m"]), rng)
            return tf.reverberate(samples, rir, float(p.get("level_db", 0.0))), rate
        if kind == "telephone":
            return tf.telephone(samples, rate, p["low_hz"], p["high_hz"], int(p["line_rate"]), int(p["order"])), rate
        if kind == "codec":
            return tf.codec(samples, rate, p["codec"], float(p["compression_level"]))[0], rate
        if kind == "packet_loss":
            return tf.packet_loss(samples, rate, float(p["loss_rate"]), float(p["frame_ms"]), rng), rate
        if kind == "clipping":
            return tf.clipping(samples, float(p["fraction"])), rate
        if kind == "speed":
            return tf.speed(samples, rate, float(p["factor"])), rate
        if kind == "pitch":
            return tf.pitch(samples, rate, float(p["semitones"])), rate
        if kind == "voice":
            if not (text or "").strip():
                raise ValueError(f"input={self.name}: turn {turn} of {conversation_id} has no transcript to re-speak")
            if self.tts is None:
                self.check()
            spoken, spoken_rate = self.tts.speak(text, language)
            return np.ascontiguousarray(spoken, dtype=np.float32), spoken_rate
        raise AssertionError(kind)

    def _babble_clips(self, conversation_id: str, rate: int, talkers: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``talkers`` clips of other conversations (the same conversation's own voice would be an echo)."""
        others = [path for conv, path in self.pool if conv != conversation_id]
        if not others:
            raise ValueError(f"input={self.name}: babble needs user clips of other conversations, and the dataset has none")
        picks = rng.choice(len(others), size=min(talkers, len(others)), replace=False)
        return [audio_io.read(others[i], rate)[0] for i in sorted(picks)]


def from_config(node: dict | None) -> InputCondition:
    return InputCondition.from_config(node)
