"""Moshi (kyutai) through transformers' ``MoshiForConditionalGeneration``: full duplex, 24 kHz.

Moshi has no turns: it listens and speaks on two audio streams at once. A conversation is
therefore replayed as one session: the user stream holds every user turn with a gap of
``gap_s`` between them (during which Moshi's earlier replies are played on its own stream, when
this backend produced them), and after the latest user turn Moshi gets ``reply_s`` seconds of
room to answer (the trailing silence the ``moshi`` package needs). The reply is the part of
Moshi's output stream after the latest user turn ends: the output is cut by time. There is no
text system prompt. See docs/models.md, section 'Moshi', for the ``moshi`` package route.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

import numpy as np

from stepeval.backends._hf import TransformersBackend, manual_seed, mono_at, resolve_device, torch_dtype
from stepeval.types import Message, Reply, TurnContext


def session_streams(
    history: list[Message], rate: int, gap_s: float, earlier_replies: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(user stream, moshi stream) of equal length up to the end of the latest user turn.

    Each earlier user turn is followed by ``gap_s`` of silence on the user stream (or the length of
    Moshi's own earlier reply, when known, which is played on Moshi's stream at that point).
    """
    user, moshi = [], []
    users = [m for m in history if m.role in ("user", "assistant")]
    for index, message in enumerate(users):
        if message.role == "user":
            if message.audio is None:
                raise ValueError("moshi needs audio for every user turn (it has no text input)")
            speech = mono_at(message, rate)
            user.append(speech)
            moshi.append(np.zeros_like(speech))
            continue
        said = earlier_replies.get(message.text or "")
        if said is None:
            said = np.zeros(int(gap_s * rate), np.float32)
        user.append(np.zeros_like(said))
        moshi.append(said.astype(np.float32))
        if index == len(users) - 1:
            raise ValueError("history must end with a user turn")
    if not user:
        raise ValueError("history holds no user turn")
    return np.concatenate(user), np.concatenate(moshi)


class Moshi(TransformersBackend):
    speaks = True
    section = "Moshi"

    def __init__(self, model_path: str = "kmhf/hf-moshiko", reply_s: float = 8.0, gap_s: float = 1.0, **kwargs):
        kwargs.setdefault("do_sample", True)
        kwargs.setdefault("temperature", 0.8)
        super().__init__(model_path, **kwargs)
        self.reply_s, self.gap_s = reply_s, gap_s
        self._replies: OrderedDict[str, np.ndarray] = OrderedDict()
        self._replies_lock = threading.Lock()

    def _load(self):
        from transformers import AutoTokenizer, MoshiForConditionalGeneration

        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        model = MoshiForConditionalGeneration.from_pretrained(self.model_path, dtype=torch_dtype(self.dtype))
        return model.to(resolve_device(self.device)).eval(), tokenizer

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        import torch

        model, tokenizer = self.loaded()
        rate = model.config.sampling_rate
        frame_rate = model.config.audio_encoder_config.frame_rate
        with self._replies_lock:
            known = dict(self._replies)
        user, moshi = session_streams(history, rate, self.gap_s, known)
        frames = math.ceil(user.size * frame_rate / rate)
        pad = tokenizer.convert_tokens_to_ids("<pad>")
        if pad is None or pad == tokenizer.unk_token_id:
            pad = tokenizer.pad_token_id
        new_frames = max(1, int(self.reply_s * frame_rate))
        with self._lock:
            manual_seed(context)
            device = model.device
            started = time.perf_counter()
            with torch.inference_mode():
                output = model.generate(
                    input_ids=torch.full((1, frames), pad, dtype=torch.long, device=device),
                    user_input_values=torch.from_numpy(user)[None, None].to(device, model.dtype),
                    moshi_input_values=torch.from_numpy(moshi)[None, None].to(device, model.dtype),
                    max_new_tokens=new_frames,
                    **self.sampling(),
                )
            elapsed = time.perf_counter() - started
        waveform = output.audio_sequences[0].reshape(-1).float().cpu().numpy()
        answer_audio = waveform[-int(round(new_frames * rate / frame_rate)) :].astype(np.float32)
        text_ids = output.sequences[0, -new_frames:].tolist()
        text = tokenizer.decode([t for t in text_ids if t != pad], skip_special_tokens=True).strip()
        with self._replies_lock:
            self._replies[text] = answer_audio
            while len(self._replies) > 1024:
                self._replies.popitem(last=False)
        return Reply(text=text, audio=answer_audio, sample_rate=rate, timings={"generate_s": round(elapsed, 4)})

    def describe(self) -> dict:
        return {**super().describe(), "reply_s": self.reply_s, "gap_s": self.gap_s}
