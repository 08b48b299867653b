"""Choose the ASR engine per reply language: Chinese (zh, yue, zh-*) to one engine (Paraformer-zh by
default in the configs), everything else to another (Whisper).

The language is the conversation's language from the dataset (the replay record's ``language``);
when that is missing, or with ``route_by: detect``, it is the language Whisper's detector hears in
the reply. Transcripts record which branch heard them.
"""

from __future__ import annotations

import numpy as np

from stepeval.asr.engines import Transcript
from stepeval.asr.text_norm import is_chinese

ROUTES = ("request", "detect")


class LanguageRouter:
    # the transcript depends on the conversation language: the pipeline puts it in the ASR fingerprint
    uses_language = True

    def __init__(self, chinese: object, default: object, route_by: str = "request"):
        if route_by not in ROUTES:
            raise ValueError(f"asr.engine.route_by={route_by!r}: expected one of {list(ROUTES)}")
        for name, engine in (("chinese", chinese), ("default", default)):
            if not callable(getattr(engine, "transcribe", None)):
                raise ValueError(f"asr.engine.{name} must be an ASR engine with a _target_ (got {type(engine).__name__})")
        self.chinese, self.default, self.route_by = chinese, default, route_by

    def check(self) -> None:
        self.chinese.check()
        self.default.check()

    def identity(self) -> dict:
        return {
            "engine": "language-router",
            "route_by": self.route_by,
            "chinese": self.chinese.identity(),
            "default": self.default.identity(),
        }

    def _detect(self, samples: np.ndarray, rate: int) -> tuple[str | None, float | None]:
        detect = getattr(self.default, "detect_language", None)
        return detect(samples, rate) if detect else (None, None)

    def route(self, samples: np.ndarray, rate: int, language: str | None) -> tuple[str, str | None, float | None]:
        """("chinese" | "default", detected language or None, its probability or None)."""
        detected, probability = None, None
        if self.route_by == "detect" or not language:
            detected, probability = self._detect(samples, rate)
            language = detected
        return ("chinese" if is_chinese(language) else "default"), detected, probability

    def transcribe(self, samples: np.ndarray, rate: int, language: str | None = None) -> Transcript:
        branch, detected, probability = self.route(samples, rate, language)
        engine = self.chinese if branch == "chinese" else self.default
        heard = engine.transcribe(samples, rate, language=language)
        if heard.language is None and heard.text:
            # engines without language identification (Paraformer): the reply language comes from Whisper's detector
            if detected is None:
                detected, probability = self._detect(samples, rate)
            heard = Transcript(heard.text, detected, probability, heard.engine)
        return Transcript(heard.text, heard.language, heard.language_probability, f"{branch}:{heard.engine}")
