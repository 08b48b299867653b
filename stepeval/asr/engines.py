"""Speech recognition engines (faster-whisper) and what every engine provides (``AsrEngine``)."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stepeval import audio as audio_io

ASR_RATE = 16000


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    language_probability: float | None
    engine: str | None = None  # which engine heard it (a router names its branch)


class AsrEngine(Protocol):
    """What the ASR stages and the cascade backend need from an engine."""

    def check(self) -> None:
        """Fail before any work if the engine cannot run (weights, packages)."""

    def identity(self) -> dict:
        """What its transcripts depend on (fingerprints, manifest)."""

    def transcribe(self, samples: np.ndarray, rate: int, language: str | None = None) -> Transcript: ...


class WhisperASR:
    """faster-whisper. ``model`` is a size/hub id (``large-v3``: downloaded by faster-whisper as
    usual), a local CTranslate2 folder, or ``packaged:whisper-base`` (offline, from PyPI)."""

    def __init__(
        self,
        model: str = "large-v3",
        device: str = "auto",
        compute_type: str = "default",
        cpu_threads: int = 0,
        beam_size: int = 5,
        vad_filter: bool = True,
        max_new_tokens: int | None = 224,
        language: str | None = None,
    ):
        self.model = model
        self.device, self.compute_type, self.cpu_threads = device, compute_type, cpu_threads
        self.beam_size, self.vad_filter, self.max_new_tokens, self.language = (
            beam_size,
            vad_filter,
            max_new_tokens,
            language,
        )

    def _model_path(self) -> str:
        if self.model.startswith("packaged:"):
            from stepeval.asr import packaged_whisper

            if self.model != packaged_whisper.NAME:
                raise ValueError(f"asr.model={self.model!r}: the only packaged model is {packaged_whisper.NAME}")
            return str(packaged_whisper.model_dir())
        return self.model

    def check(self) -> None:
        try:
            import faster_whisper  # noqa: F401
        except ImportError as err:
            raise ImportError("ASR needs faster-whisper: pip install 'stepeval[asr]'") from err
        self._model_path()

    def identity(self) -> dict:
        """What the transcripts depend on (for fingerprints and the manifest)."""
        ident = {
            "engine": "faster-whisper",
            "model": self.model,
            "compute_type": self.compute_type,
            "beam_size": self.beam_size,
            "vad_filter": self.vad_filter,
            "max_new_tokens": self.max_new_tokens,
            "language": self.language,
        }
        if self.model.startswith("packaged:"):
            from stepeval.asr import packaged_whisper

            ident["model_sha256"] = packaged_whisper.SHA256["model.bin"]
        return ident

    def transcribe(self, samples: np.ndarray, rate: int, language: str | None = None) -> Transcript:
        """``language`` is the conversation's language: a hint only. Whisper still detects the reply's
        language (unless ``self.language`` forces one), so a reply in the wrong language shows."""
        model = _load(self._model_path(), self.device, self.compute_type, self.cpu_threads)
        speech = audio_io.resample(samples, rate, ASR_RATE)
        if speech.size < ASR_RATE // 10:
            return Transcript("", None, None, "faster-whisper")
        segments, info = model.transcribe(
            speech,
            beam_size=self.beam_size,
            language=self.language,
            vad_filter=self.vad_filter,
            condition_on_previous_text=False,
            max_new_tokens=self.max_new_tokens,
            temperature=0.0,
        )
        text = "".join(segment.text for segment in segments).strip()
        if self.language:  # forced decoding language: report the language actually heard, not the forced one
            heard, probability = self.detect_language(speech, ASR_RATE)
            return Transcript(text, heard, probability, "faster-whisper")
        return Transcript(text, info.language, round(float(info.language_probability), 4), "faster-whisper")

    def detect_language(self, samples: np.ndarray, rate: int) -> tuple[str | None, float | None]:
        """Spoken language by Whisper's language-identification head (one 30 s window), no decoding."""
        speech = audio_io.resample(samples, rate, ASR_RATE)
        if speech.size < ASR_RATE // 10:
            return None, None
        model = _load(self._model_path(), self.device, self.compute_type, self.cpu_threads)
        language, probability, _ = model.detect_language(speech, vad_filter=self.vad_filter)
        return language, round(float(probability), 4)


@functools.lru_cache(maxsize=2)
def _load(path: str, device: str, compute_type: str, cpu_threads: int):
    """Load once per process (a multirun's jobs share it)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    from faster_whisper import WhisperModel

    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)


def transcript_fingerprint(engine, replay: dict) -> str:
    """What a reply's ASR record depends on: the engine, the audio, and for engines that route by the
    conversation language (``uses_language``), that language."""
    from stepeval.store import fingerprint

    parts = [engine.identity(), replay.get("audio_sha256")]
    if getattr(engine, "uses_language", False):
        parts.append(replay.get("language"))
    return fingerprint(*parts)
