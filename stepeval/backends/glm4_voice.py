"""GLM-4-Voice: a client of the repository's ``model_server.py`` streaming protocol.

The 9B LM runs in ``model_server.py`` (its own environment, its own GPU); this backend does
what the repository's web demo does around it: WhisperVQ-tokenize the user audio, build the
prompt, stream ``{"token_id": N}`` lines from ``POST /generate_stream``, split text ids from
audio ids (ids at or above ``<|audio_0|>`` are audio) and decode the audio ids to 22050 Hz
speech with the flow-matching + HiFi-GAN decoder. The tokenizer and decoder come from the
user's clone of THUDM/GLM-4-Voice (``repo_path``); they are injectable so every seam here is
testable without it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from stepeval.backends._hf import BackendUnavailable, docs_ref, mono_at, require_dir
from stepeval.backends.base import Backend
from stepeval.types import Message, Reply, TurnContext

SECTION = "GLM-4-Voice"
DEFAULT_SYSTEM = (
    "User will provide you with a speech instruction. Do it step by step. First, think about the instruction "
    "and respond in a interleaved manner, with 13 text token followed by 26 audio token. "
)
TOKENIZER_RATE = 16000
DECODER_RATE = 22050

SpeechTokenizer = Callable[[np.ndarray, int], list[int]]  # (audio, rate) -> WhisperVQ codes
AudioDecoder = Callable[[list[int]], tuple[np.ndarray, int]]  # codes -> (waveform, rate)


def audio_span(codes: list[int]) -> str:
    return "<|begin_of_audio|>" + "".join(f"<|audio_{c}|>" for c in codes) + "<|end_of_audio|>"


def user_block(content: str) -> str:
    return f"<|user|>\n{content}<|assistant|>streaming_transcription\n"


def build_prompt(
    history: list[Message],
    tokenize: Callable[[Message], list[int]],
    system_prompt: str,
    completions: dict[str, str] | None = None,
) -> str:
    """The prompt the web demo would have built after these turns.

    Earlier assistant turns go back as the full completion the model produced (text and audio
    ids, from ``completions`` keyed by reply text) when known, else as their text.
    """
    completions = completions or {}
    system = next((m.text for m in history if m.role == "system" and m.text), None) or system_prompt
    prompt = f"<|system|>\n{system}"
    for message in history:
        if message.role == "user":
            content = audio_span(tokenize(message)) if message.audio is not None else (message.text or "")
            prompt += user_block(content)
        elif message.role == "assistant":
            prompt += completions.get(message.text or "", message.text or "")
    return prompt


@dataclass
class SplitTokens:
    text_ids: list[int]
    audio_codes: list[int]
    all_ids: list[int]


def split_tokens(ids: list[int], audio_offset: int, end_id: int) -> SplitTokens:
    """Text ids vs audio codes (id - ``audio_offset``); generation stops at ``end_id`` (``<|user|>``)."""
    text, codes, kept = [], [], []
    for token in ids:
        if token == end_id:
            break
        kept.append(token)
        if token >= audio_offset:
            codes.append(token - audio_offset)
        else:
            text.append(token)
    return SplitTokens(text, codes, kept)


def stream_token_ids(client: httpx.Client, url: str, payload: dict) -> Iterator[int]:
    """``POST /generate_stream`` and yield each streamed ``{"token_id": N}``."""
    with client.stream("POST", url, json=payload) as response:
        if response.status_code != 200:
            body = response.read().decode("utf-8", "replace")[:300]
            raise RuntimeError(f"GLM-4-Voice server {url} answered HTTP {response.status_code}: {body}")
        for line in response.iter_lines():
            line = line.strip()
            if not line:
                continue
            try:
                yield int(json.loads(line)["token_id"])
            except (ValueError, KeyError, TypeError) as err:
                raise RuntimeError(f"GLM-4-Voice server {url} sent a line that is not {{'token_id': N}}: {line[:200]!r}") from err


class GLM4Voice(Backend):
    speaks = True

    def __init__(
        self,
        server_url: str = "http://127.0.0.1:10000",
        repo_path: str | None = None,
        model_path: str = "THUDM/glm-4-voice-9b",
        tokenizer_path: str = "THUDM/glm-4-voice-tokenizer",
        decoder_path: str = "THUDM/glm-4-voice-decoder",
        system_prompt: str = DEFAULT_SYSTEM,
        temperature: float = 0.2,
        top_p: float = 0.8,
        max_new_tokens: int = 2000,
        timeout_s: float = 600.0,
        device: str = "cuda",
        text_tokenizer: Any = None,
        speech_tokenizer: SpeechTokenizer | None = None,
        decoder: AudioDecoder | None = None,
    ):
        self.server_url = server_url.rstrip("/")
        self.repo_path, self.model_path = repo_path, model_path
        self.tokenizer_path, self.decoder_path = tokenizer_path, decoder_path
        self.system_prompt = system_prompt
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.timeout_s, self.device = timeout_s, device
        self._text_tokenizer, self._speech_tokenizer, self._decoder = text_tokenizer, speech_tokenizer, decoder
        self._lock = threading.Lock()
        self._completions: OrderedDict[str, str] = OrderedDict()
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))

    # the repository-dependent pieces, loaded from the user's clone unless injected
    def _repo(self) -> Path:
        return require_dir(self.repo_path, SECTION, "model.backend.repo_path", SECTION, ("flow_inference.py", "speech_tokenizer"))

    def _load_repo_parts(self) -> None:
        repo = self._repo()
        for path in (repo, repo / "third_party" / "Matcha-TTS"):
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
        if self._text_tokenizer is None:
            from transformers import AutoTokenizer

            self._text_tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=True)
        if self._speech_tokenizer is None:
            from speech_tokenizer.modeling_whisper import WhisperVQEncoder  # from the GLM-4-Voice clone
            from speech_tokenizer.utils import extract_speech_token
            from transformers import WhisperFeatureExtractor

            encoder = WhisperVQEncoder.from_pretrained(self.tokenizer_path).eval().to(self.device)
            features = WhisperFeatureExtractor.from_pretrained(self.tokenizer_path)

            def tokenize(audio: np.ndarray, rate: int) -> list[int]:
                import torch

                return extract_speech_token(encoder, features, [(torch.from_numpy(audio)[None], rate)])[0]

            self._speech_tokenizer = tokenize
        if self._decoder is None:
            from flow_inference import AudioDecoder as RepoDecoder  # from the GLM-4-Voice clone

            folder = Path(self.decoder_path)
            repo_decoder = RepoDecoder(
                config_path=str(folder / "config.yaml"),
                flow_ckpt_path=str(folder / "flow.pt"),
                hift_ckpt_path=str(folder / "hift.pt"),
                device=self.device,
            )

            def decode(codes: list[int]) -> tuple[np.ndarray, int]:
                import uuid

                import torch

                speech, _ = repo_decoder.token2wav(
                    torch.tensor(codes, device=self.device)[None],
                    uuid=str(uuid.uuid4()),
                    prompt_token=torch.zeros(1, 0, dtype=torch.int64).to(self.device),
                    prompt_feat=torch.zeros(1, 0, 80).to(self.device),
                    finalize=True,
                )
                return speech.squeeze().float().cpu().numpy(), DECODER_RATE

            self._decoder = decode

    def check(self) -> None:
        try:
            self._client.get(self.server_url + "/", timeout=10.0)  # any HTTP answer means the server is up
        except httpx.HTTPError as err:
            raise BackendUnavailable(
                f"GLM-4-Voice: no model server at model.backend.server_url={self.server_url} ({type(err).__name__}: {err}); "
                f"start `python model_server.py --model-path THUDM/glm-4-voice-9b --port 10000` in the GLM-4-Voice clone; "
                f"{docs_ref(SECTION)}"
            ) from err
        if self._text_tokenizer is None or self._speech_tokenizer is None or self._decoder is None:
            with self._lock:
                try:
                    self._load_repo_parts()
                except BackendUnavailable:
                    raise
                except Exception as err:
                    raise BackendUnavailable(
                        f"GLM-4-Voice: cannot load the tokenizer/decoder from repo_path={self.repo_path!r}, "
                        f"tokenizer_path={self.tokenizer_path!r}, decoder_path={self.decoder_path!r} "
                        f"({type(err).__name__}: {err}); {docs_ref(SECTION)}"
                    ) from err

    def _tokenize(self, message: Message) -> list[int]:
        return [int(c) for c in self._speech_tokenizer(mono_at(message, TOKENIZER_RATE), TOKENIZER_RATE)]

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        if self._text_tokenizer is None or self._speech_tokenizer is None or self._decoder is None:
            with self._lock:
                self._load_repo_parts()
        tok = self._text_tokenizer
        audio_offset = tok.convert_tokens_to_ids("<|audio_0|>")
        end_id = tok.convert_tokens_to_ids("<|user|>")
        with self._lock:
            completions = dict(self._completions)
        prompt = build_prompt(history, self._tokenize, self.system_prompt, completions)
        payload = {"prompt": prompt, "temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}
        ids: list[int] = []
        for token in stream_token_ids(self._client, f"{self.server_url}/generate_stream", payload):
            if token == end_id:
                break
            ids.append(token)
        split = split_tokens(ids, audio_offset, end_id)
        text = tok.decode(split.text_ids, skip_special_tokens=True).strip()
        completion = tok.decode(split.all_ids, spaces_between_special_tokens=False)
        with self._lock:
            self._completions[text] = completion
            while len(self._completions) > 4096:
                self._completions.popitem(last=False)
        if not split.audio_codes:
            return Reply(text=text, extra={"audio_tokens": 0})
        audio, rate = self._decoder(split.audio_codes)
        return Reply(
            text=text,
            audio=np.asarray(audio, dtype=np.float32),
            sample_rate=rate,
            usage={"completion_tokens": len(split.all_ids)},
            extra={"audio_tokens": len(split.audio_codes)},
        )

    def describe(self) -> dict:
        return {
            **super().describe(),
            "server_url": self.server_url,
            "model_path": self.model_path,
            "tokenizer_path": self.tokenizer_path,
            "decoder_path": self.decoder_path,
            "system_prompt": self.system_prompt,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
        }
