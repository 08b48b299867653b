"""Qwen2.5-Omni through transformers: audio in, text and 24 kHz speech out.

Its speech output needs the documented system prompt (``stepeval/conf/model/qwen2_5_omni.yaml``); with
another system prompt the talker is not trained to speak. ``speak: false`` runs the thinker
only (text replies, speech metrics then marked not applicable).
"""

from __future__ import annotations

import time

import numpy as np

from stepeval.backends._hf import (
    TransformersBackend,
    chat_with_audio,
    eos_ids,
    left_padded,
    manual_seed,
    new_tokens,
    resolve_device,
    torch_dtype,
)
from stepeval.types import Message, Reply, TurnContext

OUTPUT_RATE = 24000
SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and visual "
    "inputs, as well as generating text and speech."
)


class Qwen25Omni(TransformersBackend):
    section = "Qwen2.5-Omni"

    def __init__(
        self,
        model_path: str = "Qwen/Qwen2.5-Omni-7B",
        system_prompt: str | None = SYSTEM_PROMPT,
        speaker: str = "Chelsie",
        speak: bool = True,
        talker_max_new_tokens: int = 4096,
        **kwargs,
    ):
        super().__init__(model_path, **kwargs)
        self.system_prompt, self.speaker, self.speak = system_prompt, speaker, speak
        self.talker_max_new_tokens = talker_max_new_tokens
        self.speaks = speak

    def _load(self):
        from transformers import Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniProcessor

        processor = left_padded(Qwen2_5OmniProcessor.from_pretrained(self.model_path))
        model = Qwen2_5OmniForConditionalGeneration.from_pretrained(self.model_path, dtype=torch_dtype(self.dtype))
        if not self.speak:
            model.disable_talker()
        return model.to(resolve_device(self.device)).eval(), processor

    def batch_unsupported(self) -> str | None:
        if self.speak:  # transformers' Qwen2.5-Omni generates speech for one conversation at a time
            return "speak=true: the talker speaks one turn at a time (speak=false batches the thinker)"
        return super().batch_unsupported()

    def prompt(self, history: list[Message], processor) -> tuple[str, list]:
        chat, audios = chat_with_audio(history, processor.feature_extractor.sampling_rate, self.system_prompt)
        return processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False), audios

    def generate(self, prompts: list[tuple[str, list]], context: TurnContext) -> list[Reply]:
        import torch

        if self.speak and len(prompts) > 1:
            raise ValueError(f"Qwen2.5-Omni with speak=true answers one turn at a time, got {len(prompts)}")
        model, processor = self.loaded()
        audios = [a for _, turn_audios in prompts for a in turn_audios]
        with self._lock:
            inputs = processor(text=[t for t, _ in prompts], audio=audios or None, return_tensors="pt", padding=True)
            inputs = inputs.to(model.device)
            manual_seed(context)
            started = time.perf_counter()
            with torch.inference_mode():
                if self.speak:
                    output = model.generate(
                        **inputs,
                        use_audio_in_video=False,
                        speaker=self.speaker,
                        generation_mode="audio",
                        thinker_max_new_tokens=self.max_new_tokens,
                        talker_max_new_tokens=self.talker_max_new_tokens,
                        **{f"thinker_{k}": v for k, v in self.sampling().items()},
                    )
                else:  # the talker is not loaded: the thinker alone writes the replies
                    output = (model.thinker.generate(**inputs, max_new_tokens=self.max_new_tokens, **self.sampling()), None)
            elapsed = time.perf_counter() - started
        text_ids, wav = output
        if hasattr(text_ids, "sequences"):
            text_ids = text_ids.sequences
        width, stop = inputs["input_ids"].shape[1], eos_ids(model.thinker)
        replies = []
        for row in range(len(prompts)):
            new = new_tokens(text_ids, width, row, stop)
            reply = Reply(
                text=processor.batch_decode(new[None], skip_special_tokens=True)[0].strip(),
                timings={"generate_s": round(elapsed, 4)},
                usage={
                    "prompt_tokens": int(inputs["attention_mask"][row].sum()),
                    "completion_tokens": int(new.shape[0]),
                    "batch_size": len(prompts),
                },
            )
            if wav is not None:
                reply.audio = np.asarray(wav.reshape(-1).float().cpu().numpy(), dtype=np.float32)
                reply.sample_rate = OUTPUT_RATE
            replies.append(reply)
        return replies

    def describe(self) -> dict:
        return {**super().describe(), "system_prompt": self.system_prompt, "speaker": self.speaker, "speak": self.speak}
