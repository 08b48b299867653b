"""Step-Audio 2 mini: a client of StepFun's vLLM fork, plus the model's token2wav.

The fork speaks chat completions with two twists: the user role is ``human`` and speech is
requested by a prefilled assistant message ``<tts_start>`` continued by the server
(``continue_final_message``); the reply carries ``message.tts_content.{tts_text, tts_audio}``
where ``tts_audio`` is a string of ``<audio_N>`` tokens. token2wav (from the user's clone of
stepfun-ai/Step-Audio2) turns them into 24 kHz speech; it is injectable for tests.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from stepeval import audio as audio_io
from stepeval.backends._hf import BackendUnavailable, docs_ref, mono_at, require_dir
from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext

SECTION = "Step-Audio 2 mini"
INPUT_RATE = 16000
CHUNK_S = 25
AUDIO_TOKEN = re.compile(r"<audio_(\d+)>")

Token2Wav = Callable[[list[int]], tuple[np.ndarray, int]]


def audio_parts(audio: np.ndarray, rate: int = INPUT_RATE, chunk_s: int = CHUNK_S) -> list[dict]:
    """``input_audio`` parts of base64 WAV, at most ``chunk_s`` seconds each (the fork's limit)."""
    step = chunk_s * rate
    return [
        {"type": "input_audio", "input_audio": {"data": audio_io.to_base64_wav(audio[i : i + step], rate), "format": "wav"}}
        for i in range(0, max(len(audio), 1), step)
    ]


def build_messages(history: list[Message], system_prompt: str | None, speech: bool = True) -> list[dict]:
    """The fork's chat: role ``human`` for the user, earlier replies as text, a prefilled ``<tts_start>``."""
    messages: list[dict] = []
    if system_prompt and not any(m.role == "system" for m in history):
        messages.append({"role": "system", "content": system_prompt})
    for message in history:
        if message.role == "system":
            messages.append({"role": "system", "content": message.text or ""})
        elif message.role == "user":
            parts = audio_parts(mono_at(message, INPUT_RATE)) if message.audio is not None else []
            if message.text:
                parts.append({"type": "text", "text": message.text})
            messages.append({"role": "human", "content": parts})
        else:
            messages.append({"role": "assistant", "content": message.text or ""})
    if speech:
        messages.append({"role": "assistant", "content": "<tts_start>"})
    return messages


def parse_reply(body: dict, endpoint: str) -> tuple[str | None, list[int]]:
    """(text, audio token ids) from a chat completion of the fork; a clear error when the shape is wrong."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as err:
        raise RuntimeError(f"Step-Audio 2 server {endpoint}: reply has no choices[0].message: {str(body)[:300]}") from err
    tts = message.get("tts_content") or {}
    text = tts.get("tts_text") or message.get("content")
    codes = [int(n) for n in AUDIO_TOKEN.findall(tts.get("tts_audio") or "")]
    return (text.strip() if isinstance(text, str) else None), codes


class StepAudio2Mini(Backend):
    speaks = True

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "step-audio-2-mini",
        repo_path: str | None = None,
        token2wav_path: str | None = None,
        prompt_wav: str | None = None,
        system_prompt: str | None = None,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_tokens: int = 2048,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        token2wav: Token2Wav | None = None,
    ):
        self.base_url, self.model = base_url.rstrip("/"), model
        self.repo_path, self.token2wav_path, self.prompt_wav = repo_path, token2wav_path, prompt_wav
        self.system_prompt = system_prompt
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0), headers=headers)
        self._token2wav = token2wav
        self._lock = threading.Lock()

    def _load_token2wav(self) -> Token2Wav:
        repo = require_dir(self.repo_path, SECTION, "model.backend.repo_path", SECTION, ("token2wav.py",))
        folder = require_dir(self.token2wav_path, SECTION, "model.backend.token2wav_path", SECTION)
        prompt = Path(self.prompt_wav) if self.prompt_wav else repo / "assets" / "default_female.wav"
        if not prompt.is_file():
            raise BackendUnavailable(
                f"{SECTION}: prompt voice {prompt} does not exist (model.backend.prompt_wav); {docs_ref(SECTION)}"
            )
        if str(repo) not in sys.path:
            sys.path.insert(0, str(repo))
        from token2wav import Token2wav  # from the Step-Audio2 clone

        engine = Token2wav(str(folder))

        def run(codes: list[int]) -> tuple[np.ndarray, int]:
            return audio_io.decode(engine(codes, prompt_wav=str(prompt)), source="token2wav output")

        return run

    def check(self) -> None:
        url = f"{self.base_url}/models"
        try:
            response = self._client.get(url, timeout=10.0)
        except httpx.HTTPError as err:
            raise BackendUnavailable(
                f"{SECTION}: no server at model.backend.base_url={self.base_url} ({type(err).__name__}: {err}); "
                f"start the Step-Audio 2 vLLM fork; {docs_ref(SECTION)}"
            ) from err
        if response.status_code != 200:
            raise BackendUnavailable(f"{SECTION}: GET {url} answered HTTP {response.status_code}; {docs_ref(SECTION)}")
        if self._token2wav is None:
            with self._lock:
                try:
                    self._token2wav = self._load_token2wav()
                except BackendUnavailable:
                    raise
                except Exception as err:
                    raise BackendUnavailable(
                        f"{SECTION}: cannot load token2wav from repo_path={self.repo_path!r}, "
                        f"token2wav_path={self.token2wav_path!r} "
                        f"({type(err).__name__}: {err}); {docs_ref(SECTION)}"
                    ) from err

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        if self._token2wav is None:
            with self._lock:
                self._token2wav = self._token2wav or self._load_token2wav()
        url = f"{self.base_url}/chat/completions"
        payload = {
            "model": self.model,
            "messages": build_messages(history, self.system_prompt),
            "continue_final_message": True,
            "add_generation_prompt": False,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        response = self._client.post(url, json=payload)
        if response.status_code != 200:
            raise RuntimeError(f"{SECTION} server {url} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            body = response.json()
        except ValueError as err:
            raise RuntimeError(f"{SECTION} server {url} sent a body that is not JSON: {response.text[:200]!r}") from err
        text, codes = parse_reply(body, url)
        usage = body.get("usage") or {}
        if not codes:
            return Reply(text=text, usage=usage, extra={"audio_tokens": 0})
        audio, rate = self._token2wav(codes)
        return Reply(
            text=text,
            audio=np.asarray(audio, dtype=np.float32),
            sample_rate=rate,
            usage=usage,
            extra={"audio_tokens": len(codes)},
        )

    def describe(self) -> dict:
        return {
            **super().describe(),
            "base_url": self.base_url,
            "model": self.model,
            "system_prompt": self.system_prompt,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "prompt_wav": self.prompt_wav,
        }
