"""Shared pieces of the model backends: fail-fast checks, lazy loading, history conversion.

Heavy libraries (torch, transformers) are imported inside functions so ``import stepeval``
stays light; the backends themselves run in the model's own environment.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from stepeval import audio as audio_io
from stepeval.backends.base import Backend
from stepeval.types import Message

DOCS = "docs/models.md"


class BackendUnavailable(RuntimeError):
    """Something a backend needs (package, weights, repository, server) is missing; raised by check()."""


def docs_ref(section: str) -> str:
    return f"see {DOCS}, section '{section}'"


def require_module(module: str, install: str, section: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise BackendUnavailable(f"python package {module!r} is not importable ({err}): {install}; {docs_ref(section)}") from err


def require_dir(path: str | Path | None, what: str, key: str, section: str, must_contain: tuple[str, ...] = ()) -> Path:
    """A configured folder that must exist (with ``must_contain`` files inside); the error names the config key."""
    if not path:
        raise BackendUnavailable(f"{what}: {key} is not set; {docs_ref(section)}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BackendUnavailable(f"{what}: {key}={str(path)!r} is not a folder; {docs_ref(section)}")
    absent = [name for name in must_contain if not (folder / name).exists()]
    if absent:
        raise BackendUnavailable(f"{what}: {key}={str(path)!r} lacks {', '.join(absent)}; {docs_ref(section)}")
    return folder


def is_local(model_path: str) -> bool:
    """A filesystem path (as opposed to a hub id such as ``Qwen/Qwen2-Audio-7B-Instruct``)."""
    return model_path.startswith(("/", ".", "~")) or Path(model_path).expanduser().exists()


def mono_at(message: Message, rate: int) -> np.ndarray:
    """The message's audio as mono float32 at ``rate``."""
    if message.audio is None or not message.sample_rate:
        raise ValueError(f"{message.role} message has no audio (or no sample rate)")
    return audio_io.resample(np.asarray(message.audio, dtype=np.float32), int(message.sample_rate), rate)


def chat_with_audio(history: list[Message], rate: int, system_prompt: str | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """History as a transformers chat (content parts; audio as ``{"type": "audio"}``) and the audios in order.

    ``system_prompt`` is used when the history has no system message of its own.
    """
    chat: list[dict] = []
    audios: list[np.ndarray] = []
    if system_prompt and not any(m.role == "system" for m in history):
        chat.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    for message in history:
        parts: list[dict] = []
        if message.audio is not None:
            audios.append(mono_at(message, rate))
            parts.append({"type": "audio", "audio": "<in memory>"})
        if message.text:
            parts.append({"type": "text", "text": message.text})
        if not parts:
            parts.append({"type": "text", "text": ""})
        chat.append({"role": message.role, "content": parts})
    return chat, audios


def torch_dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    try:
        return getattr(torch, name)
    except AttributeError as err:
        raise ValueError(f"dtype={name!r} is not a torch dtype (use auto, float32, bfloat16, float16)") from err


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersBackend(Backend):
    """A transformers model loaded once (in ``check()`` or on first use), one ``generate()`` at a time.

    ``respond_batch`` answers several turns with one left-padded ``generate()`` (``stepeval serve`` groups concurrent
    requests into it); ``respond`` is a batch of one. Greedy replies are the same tokens either way. A subclass
    implements ``prompt`` (one turn's text and audios) and ``generate`` (a batch of prompts -> replies).
    """

    section = ""  # docs/models.md section named in error messages

    def __init__(
        self,
        model_path: str,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 512,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ):
        self.model_path = str(model_path)
        self.device, self.dtype = device, dtype
        self.max_new_tokens, self.do_sample, self.temperature, self.top_p = max_new_tokens, do_sample, temperature, top_p
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        """Return (model, processor)."""
        raise NotImplementedError

    def loaded(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def check(self) -> None:
        require_module("torch", "install torch for your platform (CPU: pip install torch==2.13.0)", self.section)
        require_module("transformers", "pip install 'stepeval[models]'", self.section)
        if is_local(self.model_path):
            require_dir(self.model_path, self.section, "model.backend.model_path", self.section, ("config.json",))
        with self._lock:
            try:
                self.loaded()
            except BackendUnavailable:
                raise
            except Exception as err:  # a hub id that is not cached offline, a broken checkpoint...
                raise BackendUnavailable(
                    f"{self.section}: cannot load model.backend.model_path={self.model_path!r} "
                    f"({type(err).__name__}: {err}); {docs_ref(self.section)}"
                ) from err

    def batch_unsupported(self) -> str | None:
        """Why this backend cannot batch (None: it can). Sampling runs alone: each turn's seed is its own."""
        if self.do_sample:
            return "do_sample=true: each sampled turn is seeded on its own, so turns run one at a time"
        return None

    def prompt(self, history: list[Message], processor: Any) -> tuple[str, list[np.ndarray]]:
        """One turn's chat-template text and its audios in order."""
        raise NotImplementedError

    def generate(self, prompts: list[tuple[str, list[np.ndarray]]], context) -> list:
        """Replies for prompts generated together (``context`` seeds sampling: batches of one only)."""
        raise NotImplementedError

    def respond(self, history: list[Message], context) -> Any:
        (reply,) = self.respond_batch([(history, context)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def respond_batch(self, items: list[tuple[list[Message], Any]]) -> list:
        """A Reply or the Exception for each item, in order: a turn that cannot be prepared fails alone."""
        _, processor = self.loaded()
        results: list = [None] * len(items)
        ready: list[tuple[int, tuple[str, list[np.ndarray]]]] = []
        for i, (history, _) in enumerate(items):
            try:
                ready.append((i, self.prompt(history, processor)))
            except Exception as err:  # bad audio in one request does not fail its batch-mates
                results[i] = err
        if ready:
            try:
                replies = self.generate([p for _, p in ready], items[ready[0][0]][1])
            except Exception as err:
                replies = [err] * len(ready)
            for (i, _), reply in zip(ready, replies, strict=True):
                results[i] = reply
        return results

    def sampling(self) -> dict:
        if not self.do_sample:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}

    def describe(self) -> dict:
        return {
            **super().describe(),
            "model_path": self.model_path,
            "dtype": self.dtype,
            "max_new_tokens": self.max_new_tokens,
            **self.sampling(),
        }


def seed_for(context) -> int:
    """A per-turn seed from (run seed, conversation, turn), so sampled replies are reproducible."""
    import zlib

    return zlib.crc32(f"{context.seed}/{context.conversation_id}/{context.turn}".encode())


def manual_seed(context) -> None:
    import torch

    torch.manual_seed(seed_for(context))


def eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])


def new_tokens(output: Any, width: int, row: int, stop: set[int]) -> Any:
    """Row ``row``'s generated ids after the (left-padded) prompt of ``width``, up to and including its first stop
    token: what a batch of one returns (a finished row of a batch is padded until the longest one ends)."""
    new = output[row, width:]
    for j, token in enumerate(new.tolist()):
        if token in stop:
            return new[: j + 1]
    return new


def left_padded(processor: Any) -> Any:
    """The processor with its tokenizer padding on the left, as batched generation of a decoder needs."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    return processor
