"""Per-reply metrics that need no LLM: duration, silence, speech present, reply language,
and agreement between a model's text channel and the ASR of its speech.

Every metric is a number or ``None`` with a reason: a value that could not be computed is
missing, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stepeval import audio as audio_io
from stepeval.judges.text_norm import error_rate, language_family

VERSION = "signals-v1"
METRICS = ("duration_s", "silence_share", "speech_detected", "language_match", "text_speech_error")


@dataclass
class TurnScores:
    values: dict[str, float | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def set(self, name: str, value: float | None, why_missing: str = "") -> None:
        self.values[name] = None if value is None else round(float(value), 6)
        if value is None:
            self.missing[name] = why_missing


def score_turn(replay: dict, asr: dict | None, audio_root) -> TurnScores:
    """Scores for one replay record, given its ASR record (None when ASR was not run)."""
    scores = TurnScores()
    if replay.get("status") != "ok":
        for name in METRICS:
            scores.set(name, None, f"turn {replay.get('status')}: {replay.get('error', '')}".strip())
        return scores
    if replay.get("audio"):
        samples, rate = audio_io.read(audio_root / replay["audio"])
        scores.set("duration_s", audio_io.duration(samples, rate))
        scores.set("silence_share", audio_io.silence_share(samples, rate))
    else:
        for name in ("duration_s", "silence_share"):
            scores.set(name, None, "text-only reply: no speech to measure")

    if not replay.get("audio"):
        for name in ("speech_detected", "language_match", "text_speech_error"):
            scores.set(name, None, "text-only reply: no speech")
        return scores
    if asr is None or asr.get("status") != "ok":
        why = "ASR not run" if asr is None else f"ASR failed: {asr.get('error')}"
        for name in ("speech_detected", "language_match", "text_speech_error"):
            scores.set(name, None, why)
        return scores

    heard = (asr.get("text") or "").strip()
    scores.set("speech_detected", 1.0 if heard else 0.0)
    if heard and asr.get("language"):
        scores.set("language_match", float(language_family(asr["language"]) == language_family(replay["language"])))
    else:
        scores.set("language_match", None, "no speech recognised: reply language unknown")

    text = (replay.get("text") or "").strip()
    if not text:
        scores.set("text_speech_error", None, "model returned no text channel")
    else:
        result = error_rate(text, heard)
        if result is None:
            scores.set("text_speech_error", None, "text channel empty after normalisation")
        else:
            scores.set("text_speech_error", result[0])
    return scores
