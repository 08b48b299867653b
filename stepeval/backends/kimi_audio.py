"""Kimi-Audio-7B-Instruct through its own ``KimiAudio(...).generate(chats, output_type="both")``.

Needs the user's install of MoonshotAI/Kimi-Audio (``kimia_infer``). Its prompt plus output is
capped near 1500 tokens (about 120 s of audio at 12.5 tokens/s), so long conversations keep
only the latest exchanges that fit ``max_history_audio_s``; how many were dropped is recorded in
the reply's ``extra`` so a reader of the results can see it.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stepeval import audio as audio_io
from stepeval.backends._hf import BackendUnavailable, docs_ref, require_module
from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext

SECTION = "Kimi-Audio"
OUTPUT_RATE = 24000
DEFAULT_SAMPLING = {
    "audio_temperature": 0.8,
    "audio_top_k": 10,
    "text_temperature": 0.0,
    "text_top_k": 5,
    "audio_repetition_penalty": 1.0,
    "audio_repetition_window_size": 64,
    "text_repetition_penalty": 1.0,
    "text_repetition_window_size": 16,
}

Generate = Callable[[list[dict]], tuple[object, str]]  # chats -> (24 kHz waveform, text)


def fit_history(history: list[Message], max_audio_s: float) -> tuple[list[Message], int]:
    """Drop the oldest user/assistant exchanges until the history's audio fits; the last user turn always stays."""
    system = [m for m in history if m.role == "system"]
    rest = [m for m in history if m.role != "system"]
    dropped = 0

    def seconds(messages: list[Message]) -> float:
        return sum(
            audio_io.duration(np.asarray(m.audio), int(m.sample_rate)) for m in messages if m.audio is not None and m.sample_rate
        )

    while seconds(rest) > max_audio_s and len(rest) > 1:
        cut = next((i for i in range(1, len(rest)) if rest[i].role == "user"), len(rest) - 1)
        rest = rest[cut:]
        dropped += 1
    return system + rest, dropped


def build_chats(history: list[Message], folder: Path) -> list[dict]:
    """Kimi-Audio's chat format; audio goes in as WAV files (its API takes paths)."""
    chats = []
    for index, message in enumerate(history):
        if message.audio is not None:
            path = folder / f"turn_{index}.wav"
            audio_io.write_wav_atomic(path, np.asarray(message.audio, dtype=np.float32), int(message.sample_rate))
            chats.append({"role": message.role, "message_type": "audio", "content": str(path)})
        if message.text:
            chats.append({"role": message.role, "message_type": "text", "content": message.text})
    return chats


class KimiAudio(Backend):
    speaks = True

    def __init__(
        self,
        model_path: str = "moonshotai/Kimi-Audio-7B-Instruct",
        max_history_audio_s: float = 100.0,
        sampling: dict | None = None,
        generate: Generate | None = None,
    ):
        self.model_path = model_path
        self.max_history_audio_s = max_history_audio_s
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        self._generate = generate
        self._lock = threading.Lock()

    def check(self) -> None:
        if self._generate is not None:
            return
        api = require_module(
            "kimia_infer.api.kimia",
            "install Kimi-Audio from its repository (pip install -e <clone>) in its own environment",
            SECTION,
        )
        try:
            model = api.KimiAudio(model_path=self.model_path, load_detokenizer=True)
        except Exception as err:
            raise BackendUnavailable(
                f"{SECTION}: cannot load model.backend.model_path={self.model_path!r} ({type(err).__name__}: {err}); "
                f"{docs_ref(SECTION)}"
            ) from err

        def generate(chats: list[dict]) -> tuple[object, str]:
            return model.generate(chats, **self.sampling, output_type="both")

        self._generate = generate

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        if self._generate is None:
            self.check()
        kept, dropped = fit_history(history, self.max_history_audio_s)
        with tempfile.TemporaryDirectory(prefix="stepeval-kimi-") as tmp, self._lock:
            wav, text = self._generate(build_chats(kept, Path(tmp)))
        extra = {"history_exchanges_dropped": dropped} if dropped else {}
        if wav is None:
            return Reply(text=text, extra=extra)
        if hasattr(wav, "detach"):
            wav = wav.detach().float().cpu().numpy()
        return Reply(
            text=(text or "").strip(), audio=np.asarray(wav, dtype=np.float32).reshape(-1), sample_rate=OUTPUT_RATE, extra=extra
        )

    def describe(self) -> dict:
        return {
            **super().describe(),
            "model_path": self.model_path,
            "max_history_audio_s": self.max_history_audio_s,
            "sampling": self.sampling,
        }
