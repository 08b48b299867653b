"""A cascade: ASR -> any OpenAI-compatible text LLM -> TTS.

The baseline every end-to-end speech model should beat, and a way to put speech behind a
text-only model. ASR is the harness's own WhisperASR; the TTS is pluggable: ``EspeakTTS``
(espeak-ng, offline, robotic but intelligible) or ``PiperTTS`` (neural, one voice model per
language, https://github.com/rhasspy/piper) or any object with ``speak(text, language)``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from typing import Any, Protocol

import numpy as np

from stepeval import audio as audio_io
from stepeval.backends._hf import BackendUnavailable, docs_ref
from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext

SECTION = "Cascade (ASR -> LLM -> TTS)"
DEFAULT_SYSTEM = "You are a helpful voice assistant. Answer briefly, in plain spoken language, in the user's language."


class TTS(Protocol):
    def check(self) -> None: ...

    def speak(self, text: str, language: str | None) -> tuple[np.ndarray, int]: ...

    def describe(self) -> dict: ...


class EspeakTTS:
    """espeak-ng through a subprocess (``apt-get install espeak-ng``); the voice follows the language."""

    def __init__(
        self, voices: dict[str, str] | None = None, default_voice: str = "en", speed: int = 160, binary: str = "espeak-ng"
    ):
        self.voices = {"en": "en-us", "zh": "cmn", **(voices or {})}
        self.default_voice, self.speed, self.binary = default_voice, speed, binary

    def check(self) -> None:
        if shutil.which(self.binary) is None:
            raise BackendUnavailable(
                f"cascade TTS: {self.binary!r} is not on PATH (apt-get install espeak-ng); {docs_ref(SECTION)}"
            )
        # espeak-ng falls back to its default voice for an unknown name, silently: check the names here
        listing = subprocess.run([self.binary, "--voices"], capture_output=True, text=True, timeout=60, check=False).stdout
        known = set()
        for line in listing.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 5:
                known.update({fields[1], fields[3], fields[4], fields[4].rsplit("/", 1)[-1]})
        unknown = sorted({*self.voices.values(), self.default_voice} - known)
        if unknown:
            raise BackendUnavailable(
                f"cascade TTS: espeak-ng has no voice(s) {unknown} (see `espeak-ng --voices`; model.backend.tts.voices); "
                f"{docs_ref(SECTION)}"
            )

    def speak(self, text: str, language: str | None) -> tuple[np.ndarray, int]:
        voice = self.voices.get((language or "").split("-")[0], self.default_voice)
        result = subprocess.run(
            [self.binary, "--stdout", "-v", voice, "-s", str(self.speed), text], capture_output=True, timeout=120, check=False
        )
        if result.returncode != 0 or not result.stdout:
            raise RuntimeError(
                f"{self.binary} -v {voice} failed ({result.returncode}): {result.stderr.decode(errors='replace')[:300]}"
            )
        return audio_io.decode(result.stdout, source=f"{self.binary} output")

    def describe(self) -> dict:
        return {"tts": "espeak-ng", "voices": self.voices, "speed": self.speed}


class PiperTTS:
    """Piper (``pip install piper-tts``, voices from rhasspy/piper-voices): ``voices`` maps language -> .onnx path."""

    def __init__(self, voices: dict[str, str], default_language: str = "en", binary: str = "piper"):
        self.voices, self.default_language, self.binary = dict(voices), default_language, binary

    def check(self) -> None:
        if shutil.which(self.binary) is None:
            raise BackendUnavailable(f"cascade TTS: {self.binary!r} is not on PATH (pip install piper-tts); {docs_ref(SECTION)}")
        from pathlib import Path

        absent = [p for p in self.voices.values() if not Path(p).is_file()]
        if absent:
            raise BackendUnavailable(f"cascade TTS: piper voice model(s) {absent} do not exist; {docs_ref(SECTION)}")

    def speak(self, text: str, language: str | None) -> tuple[np.ndarray, int]:
        voice = self.voices.get((language or "").split("-")[0]) or self.voices[self.default_language]
        result = subprocess.run(
            [self.binary, "--model", voice, "--output_file", "-"],
            input=text.encode(),
            capture_output=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0 or not result.stdout:
            raise RuntimeError(
                f"piper --model {voice} failed ({result.returncode}): {result.stderr.decode(errors='replace')[:300]}"
            )
        return audio_io.decode(result.stdout, source="piper output")

    def describe(self) -> dict:
        return {"tts": "piper", "voices": self.voices}


class Cascade(Backend):
    speaks = True

    def __init__(
        self,
        llm_base_url: str = "http://127.0.0.1:8000/v1",
        llm_model: str = "Qwen/Qwen2.5-7B-Instruct",
        api_key: str | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM,
        temperature: float = 0.0,
        max_tokens: int = 512,
        timeout_s: float = 120.0,
        asr: Any = None,
        tts: Any = None,
    ):
        from stepeval.asr.engines import WhisperASR

        self.llm_base_url, self.llm_model, self.api_key = llm_base_url.rstrip("/"), llm_model, api_key
        self.system_prompt, self.temperature, self.max_tokens, self.timeout_s = system_prompt, temperature, max_tokens, timeout_s
        self.asr = asr if asr is not None else WhisperASR()
        self.tts = tts if tts is not None else EspeakTTS()
        self._heard: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._client = None

    def _llm(self):
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                base_url=self.llm_base_url, api_key=self.api_key or "EMPTY", timeout=self.timeout_s, max_retries=2
            )
        return self._client

    def check(self) -> None:
        self.asr.check()
        self.tts.check()
        import openai

        try:
            self._llm().models.list()
        except openai.APIConnectionError as err:
            raise BackendUnavailable(
                f"cascade: no OpenAI-compatible LLM at model.backend.llm_base_url={self.llm_base_url} ({err}); "
                f"{docs_ref(SECTION)}"
            ) from err
        except openai.APIStatusError as err:
            raise BackendUnavailable(
                f"cascade: GET {self.llm_base_url}/models answered HTTP {err.status_code}; check llm_base_url/api_key; "
                f"{docs_ref(SECTION)}"
            ) from err

    def _transcribe(self, message: Message):
        """ASR of one user turn, cached by audio content (earlier turns are heard again every turn)."""
        samples = np.asarray(message.audio, dtype=np.float32)
        key = hashlib.sha256(samples.tobytes() + str(message.sample_rate).encode()).hexdigest()
        with self._lock:
            if key in self._heard:
                return self._heard[key]
        heard = self.asr.transcribe(samples, int(message.sample_rate))
        with self._lock:
            self._heard[key] = heard
        return heard

    takes_text = True  # a user turn given as text skips the ASR

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        messages: list[dict] = []
        if self.system_prompt and not any(m.role == "system" for m in history):
            messages.append({"role": "system", "content": self.system_prompt})
        language = None
        for message in history:
            text = message.text or ""
            if message.role == "user" and message.audio is not None:
                heard = self._transcribe(message)
                text, language = heard.text, heard.language or language
            messages.append({"role": message.role, "content": text})
        result = self._llm().chat.completions.create(
            model=self.llm_model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
        )
        answer = (result.choices[0].message.content or "").strip()
        extra = {"user_transcript": messages[-1]["content"], "user_language": language}
        usage = result.usage.model_dump() if result.usage else {}
        if not answer:
            return Reply(text="", usage=usage, extra=extra)
        audio, rate = self.tts.speak(answer, language)
        return Reply(text=answer, audio=audio, sample_rate=rate, usage=usage, extra=extra)

    def describe(self) -> dict:
        asr = self.asr.identity() if hasattr(self.asr, "identity") else {"asr": type(self.asr).__name__}
        return {
            **super().describe(),
            "llm_model": self.llm_model,
            "system_prompt": self.system_prompt,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "asr": asr,
            "tts": self.tts.describe(),
        }
