"""Qwen2.5-Omni through transformers: audio in, text and 24 kHz speech out.

Its speech output needs the documented system prompt (``stepeval/conf/model/qwen2_5_omni.yaml``); with
another system prompt the talker is not trained to speak. ``speak: false`` runs the thinker
only (text replies, speech metrics then marked not applicable).
"""

from __future__ import annotations

import time

import numpy as np

from stepeval.backends._hf import TransformersBackend, chat_with_audio, manual_seed, resolve_device, torch_dtype
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

        processor = Qwen2_5OmniProcessor.from_pretrained(self.model_path)
        model = Qwen2_5OmniForConditionalGeneration.from_pretrained(self.model_path, dtype=torch_dtype(self.dtype))
        if not self.speak:
            model.disable_talker()
        return model.to(resolve_device(self.device)).eval(), processor

    def respond(self, history: list[Message], context: TurnContext) -> Reply:
        import torch

        model, processor = self.loaded()
        rate = processor.feature_extractor.sampling_rate
        chat, audios = chat_with_audio(history, rate, self.system_prompt)
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        with self._lock:
            inputs = processor(text=text, audio=audios or None, return_tensors="pt", padding=True)
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
                else:  # the talker is not loaded: the thinker alone writes the reply
                    output = (model.thinker.generate(**inputs, max_new_tokens=self.max_new_tokens, **self.sampling()), None)
            elapsed = time.perf_counter() - started
        text_ids, wav = output
        if hasattr(text_ids, "sequences"):
            text_ids = text_ids.sequences
        new = text_ids[0, inputs["input_ids"].shape[1] :]
        answer = processor.batch_decode(new[None], skip_special_tokens=True)[0].strip()
        reply = Reply(
            text=answer,
            timings={"generate_s": round(elapsed, 4)},
            usage={"prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": int(new.shape[0])},
        )
        if wav is not None:
            reply.audio = np.asarray(wav.reshape(-1).float().cpu().numpy(), dtype=np.float32)
            reply.sample_rate = OUTPUT_RATE
        return reply

    def describe(self) -> dict:
        return {**super().describe(), "system_prompt": self.system_prompt, "speaker": self.speaker, "speak": self.speak}
