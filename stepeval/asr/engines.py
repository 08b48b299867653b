"""Speech recognition engines (faster-whisper) and what every engine provides (``AsrEngine``)."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from stepeval import audio as audio_io
from stepeval import threads

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
    usual), a local CTranslate2 folder, or ``packaged:whisper-base`` (offline, from PyPI).

    ``device``: ``cpu``, ``cuda`` or ``auto`` (CUDA where CTranslate2 sees a GPU). ``cpu_threads`` and
    ``num_workers`` (CTranslate2 threads per call, calls in parallel): 0 lets ``stepeval.threads``
    choose them from the cores and what else runs. ``batch_size`` > 0 uses faster-whisper's batched
    pipeline (the clip's speech segments decoded as one batch: a GPU's throughput on long replies);
    its segmentation differs from the sequential decoder's, so it is part of the identity.
    """

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
        num_workers: int = 0,
        batch_size: int = 0,
    ):
        self.model = model
        self.device, self.compute_type, self.cpu_threads = device, compute_type, cpu_threads
        self.num_workers, self.batch_size = num_workers, batch_size
        self.beam_size, self.vad_filter, self.max_new_tokens, self.language = (
            beam_size,
            vad_filter,
            max_new_tokens,
            language,
        )

    @property
    def on_gpu(self) -> bool:
        """Whether transcription runs on a GPU (``auto`` asks CTranslate2, which needs no model load)."""
        if self.device == "cuda":
            return True
        if self.device != "auto":
            return False
        return _cuda_devices() > 0

    @property
    def workers(self) -> int:
        """Transcriptions that may run at once (the ASR stage's concurrency)."""
        return self.num_workers or threads.current().asr_workers

    def _model_path(self) -> str:
        if self.model.startswith("packaged:"):
            from stepeval.asr import packaged_whisper

            if self.model != packaged_whisper.NAME:
                raise ValueError(f"asr.model={self.model!r}: the only packaged model is {packaged_whisper.NAME}")
            return str(packaged_whisper.model_dir())
        return self.model

    def check(self) -> None:
        """Installed and the weights on disk (fetched now where they are missing and downloads are allowed);
        loads nothing (a resumed run that reuses every transcript never loads Whisper)."""
        if importlib.util.find_spec("faster_whisper") is None:
            raise ImportError("ASR needs faster-whisper: pip install 'stepeval[asr]'")
        if self.batch_size < 0 or self.num_workers < 0 or self.cpu_threads < 0:
            raise ValueError("asr.engine.batch_size, num_workers and cpu_threads must be >= 0")
        path = self._model_path()
        if not self.model.startswith("packaged:"):  # weights on disk (or fetched now), not at the first transcription
            from stepeval.asr.weights import whisper_weights

            whisper_weights(path)

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
        if self.batch_size:  # only when set: runs made before the option keep their fingerprints
            ident["batched"] = True
        if self.compute_type.startswith("int8") and not self.on_gpu:
            # int8 on a CPU: the kernels (and so the transcripts) differ between machines; transcripts of another
            # machine's kernels are not reused, and views of two such machines are not the same view
            ident["cpu_int8_kernels"] = cpu_int8_kernels()
        return ident

    def transcribe(self, samples: np.ndarray, rate: int, language: str | None = None) -> Transcript:
        """``language`` is the conversation's language: a hint only. Whisper still detects the reply's
        language (unless ``self.language`` forces one), so a reply in the wrong language shows."""
        speech = audio_io.resample(samples, rate, ASR_RATE)
        if speech.size < ASR_RATE // 10:
            return Transcript("", None, None, "faster-whisper")
        model = self._model()
        options = {
            "beam_size": self.beam_size,
            "language": self.language,
            "vad_filter": self.vad_filter,
            "condition_on_previous_text": False,
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0.0,
        }
        if self.batch_size:
            segments, info = _batched(model).transcribe(speech, batch_size=self.batch_size, **options)
        else:
            segments, info = model.transcribe(speech, **options)
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
        language, probability, _ = self._model().detect_language(speech, vad_filter=self.vad_filter)
        return language, round(float(probability), 4)

    def _model(self):
        plan = threads.current()
        return _load(
            self._model_path(),
            self.device,
            self.compute_type,
            self.cpu_threads or plan.asr_threads,
            self.num_workers or plan.asr_workers,
        )


def cpu_int8_kernels() -> str:
    """What CTranslate2's int8 matrix products depend on here: its GEMM library (Intel MKL on Intel CPUs, oneDNN on
    others, or as ``CT2_USE_MKL`` says) and the widest int8 instruction set the CPU has (with VNNI or AMX the
    products accumulate differently than with AVX2 alone). float32 has no such dependence beyond rounding order."""
    flags: set[str] = set()
    vendor = platform.machine()  # not platform.processor(): it runs `uname -p`
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                vendor = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    use_mkl = os.environ.get("CT2_USE_MKL")
    mkl = vendor == "GenuineIntel" if use_mkl is None else use_mkl.strip().lower() in ("1", "true", "on")
    isa = next(
        (
            name
            for flag, name in (
                ("amx_int8", "amx"),
                ("avx512_vnni", "avx512_vnni"),
                ("avx_vnni", "avx_vnni"),
                ("avx512bw", "avx512"),
                ("avx2", "avx2"),
            )
            if flag in flags
        ),
        "other",
    )
    forced = os.environ.get("CT2_FORCE_CPU_ISA")
    return f"{'mkl' if mkl else 'onednn'}/{isa}" + (f"/ct2:{forced}" if forced else "")


_LOCK = threading.Lock()  # ASR workers asking for the model at once load it once


def _load(path: str, device: str, compute_type: str, cpu_threads: int, num_workers: int):
    with _LOCK:
        return _load_once(path, device, compute_type, cpu_threads, num_workers)


@functools.lru_cache(maxsize=2)
def _load_once(path: str, device: str, compute_type: str, cpu_threads: int, num_workers: int):
    """Load once per process (a multirun's jobs share it)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    from faster_whisper import WhisperModel

    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, num_workers=num_workers)


@functools.lru_cache(maxsize=2)
def _batched(model):
    from faster_whisper import BatchedInferencePipeline

    return BatchedInferencePipeline(model=model)


@functools.lru_cache(maxsize=1)
def _cuda_devices() -> int:
    if importlib.util.find_spec("ctranslate2") is None:
        return 0
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a CTranslate2 build without CUDA
        return 0


def transcript_fingerprint(engine, replay: dict) -> str:
    """What a reply's ASR record depends on: the engine, the audio, and for engines that route by the
    conversation language (``uses_language``), that language."""
    from stepeval.store import fingerprint

    parts = [engine.identity(), replay.get("audio_sha256")]
    if getattr(engine, "uses_language", False):
        parts.append(replay.get("language"))
    return fingerprint(*parts)
