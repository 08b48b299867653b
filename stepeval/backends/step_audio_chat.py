"""Step-Audio-Chat (130B): Step-Audio-Tokenizer -> the LLM -> Step-Audio-TTS-3B.

The LLM is text in, text out: user audio becomes a string of ``<audio_N>`` tokens (the
tokenizer, 16 kHz in), the prompt is ``<|BOT|>{role}\\n{content}<|EOT|>`` per message, and the
reply text is spoken by the TTS at 22050 Hz. The LLM runs either behind StepFun's vLLM fork
(``llm_url``: the OpenAI-compatible completions endpoint, tensor-parallel over many GPUs) or
in-process with transformers (``llm_url: null``). The tokenizer and TTS come from the user's
clone of stepfun-ai/Step-Audio (``repo_path``); they are injectable for tests.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stepeval.backends._hf import BackendUnavailable, docs_ref, manual_seed, mono_at, require_dir
from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext

SECTION = "Step-Audio-Chat"
DEFAULT_SYSTEM = "适配用户的语言，用简短口语化的文字回答"
TOKENIZER_RATE = 16000

AudioTokenizer = Callable[[np.ndarray, int], str]  # (audio, rate) -> "<audio_12><audio_1034>..."
Speaker = Callable[[str], tuple[np.ndarray, int]]  # text -> (waveform, rate)
Llm = Callable[[str], str]  # prompt -> completion text


def build_prompt(history: list[Message], tokenize: AudioTokenizer, system_prompt: str | None) -> str:
    """Step-Audio's ``apply_chat_template``: one ``<|BOT|>role\\ncontent<|EOT|>`` block per message."""
    prompt = ""
    if system_prompt and not any(m.role == "system" for m in history):
        prompt += f"<|BOT|>system\n{system_prompt}<|EOT|>"
    for message in history:
        role = "human" if message.role == "user" else message.role
        if message.audio is not None:
            prompt += f"<|BOT|>{role}\n{tokenize(mono_at(message, TOKENIZER_RATE), TOKENIZER_RATE)}<|EOT|>"
        if message.text or message.audio is None:
            prompt += f"<|BOT|>{role}\n{message.text or ''}<|EOT|>"
    return prompt + "<|BOT|>assistant\n"


def clean_completion(text: str) -> str:
    """The reply text without the end-of-turn marker (what the TTS is given)."""
    return text.split("<|EOT|>", 1)[0].strip()


class StepAudioChat(Backend):
    speaks = True

    def __init__(
        self,
        repo_path: str | None = None,
        tokenizer_path: str | None = None,
        tts_path: str | None = None,
        llm_path: str | None = None,
        llm_url: str | None = "http://127.0.0.1:8000/v1",
        llm_model: str = "step-audio-chat",
        api_key: str | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM,
        speaker: str = "Tingting",
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 2048,
        timeout_s: float = 600.0,
        audio_tokenizer: AudioTokenizer | None = None,
        tts: Speaker | None = None,
        llm: Llm | None = None,
    ):
        self.repo_path, self.tokenizer_path, self.tts_path, self.llm_path = repo_path, tokenizer_path, tts_path, llm_path
        self.llm_url, self.llm_model, self.api_key = (llm_url.rstrip("/") if llm_url else None), llm_model, api_key
        self.system_prompt, self.speaker = system_prompt, speaker
        self.temperature, self.top_p, self.max_new_tokens, self.timeout_s = temperature, top_p, max_new_tokens, timeout_s
        self._tokenizer, self._tts, self._llm = audio_tokenizer, tts, llm
        self._lock = threading.Lock()
        self._encoder = None

    # ---- the LLM: vLLM fork (completions endpoint) or in-process transformers
    def _remote_llm(self) -> Llm:
        from openai import OpenAI

        client = OpenAI(base_url=self.llm_url, api_key=self.api_key or "EMPTY", timeout=self.timeout_s, max_retries=2)

        def complete(prompt: str) -> str:
            result = client.completions.create(
                model=self.llm_model,
                prompt=prompt,
                max_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=["<|EOT|>"],
            )
            return result.choices[0].text

        return complete

    def _local_llm(self) -> Llm:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = require_dir(self.llm_path, SECTION, "model.backend.llm_path", SECTION, ("config.json",))
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="auto", trust_remote_code=True)

        def complete(prompt: str) -> str:
            ids = tokenizer.encode(prompt, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                out = model.generate(
                    ids, max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, do_sample=True
                )
            return tokenizer.decode(out[0, ids.shape[-1] :], skip_special_tokens=False)

        return complete

    def _load_repo_parts(self) -> None:
        repo = require_dir(self.repo_path, SECTION, "model.backend.repo_path", SECTION, ("tokenizer.py", "tts.py"))
        tokenizer_dir = require_dir(self.tokenizer_path, SECTION, "model.backend.tokenizer_path", SECTION)
        tts_dir = require_dir(self.tts_path, SECTION, "model.backend.tts_path", SECTION) if self._tts is None else None
        if str(repo) not in sys.path:
            sys.path.insert(0, str(repo))
        import torch
        from tokenizer import StepAudioTokenizer  # from the Step-Audio clone

        # the TTS needs the audio tokenizer too (it clones the speaker's voice with it)
        self._encoder = StepAudioTokenizer(str(tokenizer_dir))
        encoder = self._encoder
        if self._tokenizer is None:
            self._tokenizer = lambda audio, rate: encoder(torch.from_numpy(audio)[None], rate)
        if self._tts is None:
            from tts import StepAudioTTS  # from the Step-Audio clone

            engine = StepAudioTTS(str(tts_dir), encoder)

            def speak(text: str) -> tuple[np.ndarray, int]:
                audio, rate = engine(text, self.speaker)
                return np.asarray(audio.squeeze().float().cpu().numpy(), dtype=np.float32), int(rate)

            self._tts = speak

    def check(self) -> None:
        if self._llm is None and self.llm_url:
            import httpx

            try:
                response = httpx.get(f"{self.llm_url}/models", timeout=10.0)
            except httpx.HTTPError as err:
                raise BackendUnavailable(
                    f"{SECTION}: no LLM server at model.backend.llm_url={self.llm_url} ({type(err).__name__}: {err}); "
                    f"start StepFun's vLLM fork (`vllm serve .../Step-Audio-Chat -tp N ...`) or set llm_url=null and llm_path; "
                    f"{docs_ref(SECTION)}"
                ) from err
            if response.status_code != 200:
                raise BackendUnavailable(
                    f"{SECTION}: GET {self.llm_url}/models answered HTTP {response.status_code}; {docs_ref(SECTION)}"
                )
        with self._lock:
            try:
                if self._tokenizer is None or self._tts is None:
                    self._load_repo_parts()
                if self._llm is None:
                    self._llm = self._remote_llm() if self.llm_url else self._local_llm()
            except BackendUnavailable:
                raise
            except Exception as err:
                raise BackendUnavailable(
                    f"{SECTION}: cannot load its parts (repo_path={self.repo_path!r}, tokenizer_path={self.tokenizer_path!r}, "
                    f"tts_path={self.tts_path!r}, llm_path={self.llm_path!r}): {type(err).__name__}: {err}; {docs_ref(SECTION)}"
                ) from err

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        if self._tokenizer is None or self._tts is None or self._llm is None:
            self.check()
        with self._lock:  # the audio tokenizer and TTS are GPU models used one call at a time; the LLM call is not locked
            prompt = build_prompt(history, self._tokenizer, self.system_prompt)
        if self.llm_url is None and self._llm is not None:
            manual_seed(context)
        text = clean_completion(self._llm(prompt))
        if not text:
            return Reply(text="", extra={"note": "empty completion: nothing to speak"})
        with self._lock:
            audio, rate = self._tts(text)
        return Reply(text=text, audio=np.asarray(audio, dtype=np.float32), sample_rate=rate)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "llm": self.llm_model if self.llm_url else str(Path(self.llm_path or "").name),
            "system_prompt": self.system_prompt,
            "speaker": self.speaker,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
        }
