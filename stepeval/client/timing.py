"""Per-turn latency on the harness's clock (docs/latency.md): marks taken while a reply arrives, and what
follows from them once its audio is known.

Every time is in seconds from ``t0``, the moment the request was written (its last body byte handed to
the connection), so a turn's own wait for a free endpoint slot (``queue_s``) never counts. A timing
that could not be measured is left out of ``timings`` and named in ``missing`` with the reason; it is
never 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from stepeval import audio as audio_io

# what each key means (docs/latency.md has the timeline)
KEYS = {
    "queue_s": "turn handed to the client -> request written (endpoint slot wait, earlier failed attempts)",
    "first_byte_s": "request written -> first byte of the response",
    "first_text_s": "request written -> first text token (streamed replies; else the whole reply)",
    "first_audio_s": "request written -> first audio chunk (streamed replies; else the whole reply)",
    "total_s": "request written -> last byte of the reply",
    "audio_s": "duration of the reply's audio",
    "rtf": "real-time factor: total_s / audio_s (below 1: faster than it plays)",
    "leading_silence_s": "the reply audio's leading non-speech (30 ms frames under -45 dBFS)",
    "first_speech_s": "first_audio_s + leading_silence_s: when the listener first hears speech",
    "audio_chunks": "audio chunks streamed",
    "chunk_gap_s": "median time between streamed audio chunks (a flushed tail chunk does not pull it down)",
    "chunk_gap_max_s": "longest time between streamed audio chunks (a stall)",
}
LATENCY_KEYS = ("first_byte_s", "first_text_s", "first_audio_s", "first_speech_s", "total_s", "rtf")
NOT_STREAMED = "not streamed: the reply arrives whole at total_s"


def now() -> float:
    return time.perf_counter()


@dataclass
class Marks:
    """Clock readings (``time.perf_counter``) of one attempt, taken by the request path."""

    entered: float  # the turn reached the client
    sent: float | None = None
    first_byte: float | None = None
    first_text: float | None = None
    audio_chunks: list[float] = field(default_factory=list)
    end: float | None = None
    streamed: bool = False
    in_flight: int | None = None
    hardware: str | None = None  # as the server reports it (``X-Stepeval-Hardware``)
    missing: dict[str, str] = field(default_factory=dict)

    def text(self, when: float | None = None) -> None:
        if self.first_text is None:
            self.first_text = when if when is not None else now()

    def audio(self, when: float | None = None) -> None:
        self.audio_chunks.append(when if when is not None else now())

    def timings(self) -> tuple[dict[str, float], dict[str, str]]:
        """(timings relative to ``sent``, missing timings with why)."""
        out: dict[str, float] = {}
        missing = dict(self.missing)
        if self.sent is None or self.end is None:
            return out, {**missing, "total_s": "the request was not timed"}
        t0 = self.sent
        out["queue_s"] = max(0.0, self.sent - self.entered)
        if self.first_byte is not None:
            out["first_byte_s"] = self.first_byte - t0
        else:
            missing.setdefault("first_byte_s", "not observed on this request path")
        out["total_s"] = self.end - t0
        if self.streamed:
            if self.first_text is not None:
                out["first_text_s"] = self.first_text - t0
            if self.audio_chunks:
                out["first_audio_s"] = self.audio_chunks[0] - t0
                out["audio_chunks"] = float(len(self.audio_chunks))
                gaps = np.diff(self.audio_chunks)
                if gaps.size:
                    out["chunk_gap_s"] = float(np.median(gaps))
                    out["chunk_gap_max_s"] = float(gaps.max())
        return {k: round(v, 4) for k, v in out.items()}, missing


def finish(
    timings: dict[str, float],
    missing: dict[str, str],
    reply_audio: np.ndarray | None,
    rate: int | None,
    has_text: bool,
    streamed: bool,
) -> None:
    """Add what follows from the reply itself (in place): audio duration, real-time factor, leading
    non-speech, time to first speech; a non-streamed reply's first text/audio is the whole reply."""
    if not streamed and "total_s" in timings:
        missing.pop("first_text_s", None)
        missing.pop("first_audio_s", None)
        if has_text:
            timings.setdefault("first_text_s", timings["total_s"])
        if reply_audio is not None:
            timings.setdefault("first_audio_s", timings["total_s"])
    if not has_text:
        timings.pop("first_text_s", None)
        missing.setdefault("first_text_s", "the reply has no text")
    if reply_audio is None or not rate:
        for key in ("first_audio_s", "audio_s", "rtf", "leading_silence_s", "first_speech_s"):
            timings.pop(key, None)
            missing.setdefault(key, "the reply has no audio")
        return
    samples = np.asarray(reply_audio, dtype=np.float32)
    timings["audio_s"] = round(audio_io.duration(samples, rate), 4)
    lead = audio_io.leading_silence(samples, rate)
    if lead is None:
        missing["leading_silence_s"] = missing["first_speech_s"] = "the reply audio has no speech (all frames under -45 dBFS)"
    else:
        timings["leading_silence_s"] = round(lead, 4)
    if timings["audio_s"] <= 0:
        missing["rtf"] = "the reply audio is empty"
    elif "total_s" in timings:
        timings["rtf"] = round(timings["total_s"] / timings["audio_s"], 4)
    else:
        missing.setdefault("rtf", "no generation time (total_s missing)")
    if lead is not None:
        if "first_audio_s" in timings:
            timings["first_speech_s"] = round(timings["first_audio_s"] + lead, 4)
        else:
            missing.setdefault("first_speech_s", "no time to first audio")
    if streamed and "first_audio_s" not in timings:
        missing.setdefault("first_audio_s", "the stream carried no audio delta")
    if streamed and has_text and "first_text_s" not in timings:
        missing.setdefault("first_text_s", "the stream carried no text delta")
