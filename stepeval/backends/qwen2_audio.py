"""Qwen2-Audio-7B-Instruct through transformers: audio in, text out (``speaks = False``).

Replies carry text only, so the score stage marks every speech metric missing with the
reason "text-only reply"; put a TTS behind it (the ``cascade`` backend) to score speech.
"""

from __future__ import annotations

import time

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


class Qwen2Audio(TransformersBackend):
    speaks = False
    section = "Qwen2-Audio"

    def __init__(self, model_path: str = "Qwen/Qwen2-Audio-7B-Instruct", system_prompt: str | None = None, **kwargs):
        super().__init__(model_path, **kwargs)
        self.system_prompt = system_prompt

    def _load(self):
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        processor = left_padded(AutoProcessor.from_pretrained(self.model_path))
        model = Qwen2AudioForConditionalGeneration.from_pretrained(self.model_path, dtype=torch_dtype(self.dtype))
        return model.to(resolve_device(self.device)).eval(), processor

    def prompt(self, history: list[Message], processor) -> tuple[str, list]:
        chat, audios = chat_with_audio(history, processor.feature_extractor.sampling_rate, self.system_prompt)
        return processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False), audios

    def generate(self, prompts: list[tuple[str, list]], context: TurnContext) -> list[Reply]:
        import torch

        model, processor = self.loaded()
        rate = processor.feature_extractor.sampling_rate
        audios = [a for _, turn_audios in prompts for a in turn_audios]
        with self._lock:
            inputs = processor(
                text=[t for t, _ in prompts], audio=audios or None, sampling_rate=rate, return_tensors="pt", padding=True
            )
            inputs = inputs.to(model.device)
            started = time.perf_counter()
            manual_seed(context)
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, **self.sampling())
            elapsed = time.perf_counter() - started
        width, stop = inputs["input_ids"].shape[1], eos_ids(model)
        replies = []
        for row in range(len(prompts)):
            new = new_tokens(output, width, row, stop)
            replies.append(
                Reply(
                    text=processor.batch_decode(new[None], skip_special_tokens=True)[0].strip(),
                    timings={"generate_s": round(elapsed, 4)},
                    usage={
                        "prompt_tokens": int(inputs["attention_mask"][row].sum()),
                        "completion_tokens": int(new.shape[0]),
                        "batch_size": len(prompts),
                    },
                )
            )
        return replies

    def describe(self) -> dict:
        return {**super().describe(), "system_prompt": self.system_prompt}
