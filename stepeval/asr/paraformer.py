"""FunASR Paraformer-zh: the usual Chinese ASR for judging Mandarin speech (far better than Whisper
on Chinese, and what UltraEval-Audio and the Step-Audio paper's peers use).

FunASR downloads the model (ModelScope or Hugging Face hub) on first use, so it cannot run on a
machine without a model hub; install it with ``pip install funasr`` (it is not in stepeval's extras:
heavy, and it cannot be exercised offline). Paraformer does not identify languages: its
transcripts carry ``language=None`` unless a router fills it in from Whisper's detector.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from stepeval import audio as audio_io
from stepeval.asr.engines import Transcript

ASR_RATE = 16000
INSTALL_HINT = "Paraformer needs FunASR: pip install funasr (it downloads the model on first use)"
_SPACED_CJK = re.compile(r"(?<=[\u3400-\u9fff\uf900-\ufaff])\s+(?=[\u3400-\u9fff\uf900-\ufaff])")


class ParaformerASR:
    """``funasr.AutoModel`` with Paraformer-zh; VAD and punctuation models are optional (punctuation is
    removed before error rates anyway)."""

    def __init__(
        self,
        model: str = "paraformer-zh",
        model_revision: str | None = None,
        vad_model: str | None = "fsmn-vad",
        punc_model: str | None = None,
        hub: str = "ms",
        device: str = "cpu",
        batch_size_s: int = 300,
    ):
        self.model, self.model_revision = model, model_revision
        self.vad_model, self.punc_model, self.hub = vad_model, punc_model, hub
        self.device, self.batch_size_s = device, batch_size_s

    def check(self) -> None:
        try:
            import funasr  # noqa: F401
        except ImportError as err:
            raise ImportError(INSTALL_HINT) from err

    def identity(self) -> dict:
        return {
            "engine": "funasr",
            "model": self.model,
            "model_revision": self.model_revision,
            "vad_model": self.vad_model,
            "punc_model": self.punc_model,
            "hub": self.hub,
        }

    def transcribe(self, samples: np.ndarray, rate: int, language: str | None = None) -> Transcript:
        speech = audio_io.resample(samples, rate, ASR_RATE)
        if speech.size < ASR_RATE // 10:
            return Transcript("", None, None, "funasr")
        model = _load(self.model, self.model_revision, self.vad_model, self.punc_model, self.hub, self.device)
        result = model.generate(input=speech, batch_size_s=self.batch_size_s, disable_pbar=True)
        return Transcript(join_output(result), None, None, "funasr")


def join_output(result: object) -> str:
    """Text of a ``generate`` result ([{"key", "text", ...}, ...]); Paraformer without a punctuation
    model separates characters with spaces, which are removed between CJK characters."""
    if not isinstance(result, list) or not all(isinstance(item, dict) and "text" in item for item in result):
        raise ValueError(f"unexpected FunASR output (expected a list of {{'text': ...}} dicts): {result!r:.200}")
    text = " ".join(str(item["text"]).strip() for item in result)
    return _SPACED_CJK.sub("", text).strip()


@functools.lru_cache(maxsize=2)
def _load(model: str, revision: str | None, vad_model: str | None, punc_model: str | None, hub: str, device: str):
    """Load once per process."""
    try:
        from funasr import AutoModel
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    kwargs = {"model": model, "hub": hub, "device": device, "disable_update": True, "disable_log": True}
    if revision:
        kwargs["model_revision"] = revision
    if vad_model:
        kwargs["vad_model"] = vad_model
    if punc_model:
        kwargs["punc_model"] = punc_model
    return AutoModel(**kwargs)
