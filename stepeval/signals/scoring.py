"""Per-reply metrics that need no LLM: duration, silence, speech present, reply language, agreement
between a model's text channel and the ASR of its speech, DNSMOS / UTMOS quality, speaker
consistency within the conversation, speaking rate, pitch statistics and sanity flags.

Every metric is a number or ``None`` with a reason: a value that could not be computed is
missing, never 0. Which categories a metric means something for is decided later, at
aggregation (``stepeval.applicability``), so that changing it needs no recompute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stepeval import audio as audio_io
from stepeval.asr.text_norm import error_rate, language_family, resolve_language
from stepeval.signals import dnsmos, plugins, prosody, speaker, utmos

# v4: error rates on the corrected number normalisation, with edit counts (corpus rates)
# v5: a speaking model's empty reply is scored as silence; speaking-rate units from the reference, not the ASR
VERSION = "signals-v5"
BASIC = ("duration_s", "silence_share", "speech_detected", "language_match", "text_speech_error")
QUALITY = (*dnsmos.METRICS, "utmos")
FLAGS = ("flag_empty", "flag_silent", "flag_clipped", "flag_truncated")
PITCH = ("f0_median_hz", "f0_std_st", "f0_range_st")
RATE_METRICS = ("speech_rate_cps", "speech_rate_wps")
METRICS = (*BASIC, *QUALITY, "speaker_consistency", *RATE_METRICS, *PITCH, *FLAGS)
Key = tuple[str, int]
EMPTY_REPLY_RATE = 16000  # any rate will do for zero samples
UNAVAILABLE = "unavailable"  # a signal's entry in the identity when a package or model file it needs is missing


@dataclass(frozen=True)
class SignalOptions:
    """Which model-based signals run (``metrics.signals`` in the config)."""

    dnsmos: bool = True
    speaker: bool = True
    pitch: bool = True
    utmos: bool = False
    extra: tuple[dict, ...] = ()  # signal plugins (``signals.plugins``), each {_target_: ..., **settings}

    @classmethod
    def from_config(cls, node: Mapping | None) -> SignalOptions:
        node = dict(node or {})
        flags = {k: bool(v) for k, v in node.items() if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**flags, extra=tuple(dict(spec) for spec in node.get("extra") or ()))

    def metrics(self) -> tuple[str, ...]:
        """Every metric a score record of these options holds: the built-in ones, then the plugins'."""
        return (*METRICS, *plugins.names(self.extra))


def identity(options: SignalOptions) -> dict:
    """What the scores depend on besides the inputs: version, options and which models are installed
    here (installing Resemblyzer later recomputes the turns it was missing for). Checked without
    loading any model, so a resumed run that reuses every score loads none; a model that is installed
    but fails to load fails its turns' records (``_load_failures``), and the next run retries them."""
    # which signals cannot run, not why: the reason's wording (which package is missing first) changes
    # no number, so it must not make a new fingerprint or view
    unavailable = {name: None if why is None else UNAVAILABLE for name, why in unavailable_reasons(options).items()}
    ident = {"version": VERSION, "options": asdict(options), "unavailable": unavailable}
    if options.extra:
        ident["plugins"] = plugins.identities(options.extra)
    else:
        del ident["options"]["extra"]  # the identity of runs scored before plugins existed stays the same
    return ident


def unavailable_reasons(options: SignalOptions) -> dict[str, str | None]:
    """For each model-based signal that is on: why it cannot run here for lack of a package or model
    file, or None. Every entry that is not None is a problem of the run (exit 1), counted the same way."""
    out: dict[str, str | None] = {}
    if options.dnsmos:
        out["dnsmos"] = dnsmos.unavailable()
    if options.speaker:
        out["speaker"] = speaker.unavailable()
    if options.utmos:
        out["utmos"] = utmos.unavailable()
    if options.pitch and (why := prosody.unavailable()):
        out["pitch"] = why  # only when missing: runs scored with librosa keep their fingerprints
    return out


@dataclass
class TurnScores:
    values: dict[str, float | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # raw counts behind a rate (edits, units)
    error: str | None = None  # scoring this reply raised: the record is failed and retried on the next run

    def set(self, name: str, value: float | None, why_missing: str = "") -> None:
        self.values[name] = None if value is None else round(float(value), 6)
        if value is None:
            self.missing[name] = why_missing or "not computed"
        else:
            self.missing.pop(name, None)

    def set_all(self, names, why_missing: str) -> None:
        for name in names:
            self.set(name, None, why_missing)


def score_turn(
    replay: dict, asr: dict | None, audio_root: Path, options: SignalOptions | None = None, samples=None
) -> TurnScores:
    """Scores for one replay record, given its ASR record (None when ASR was not run). Speaker
    consistency needs the whole conversation: ``score_conversation`` fills it in."""
    options = options or SignalOptions()
    scores = TurnScores()
    if replay.get("status") != "ok":
        scores.set_all(options.metrics(), f"turn {replay.get('status')}: {replay.get('error') or ''}".strip())
        return scores
    if not replay.get("audio"):
        if not replay.get("speaks", True):  # the score stage marks these not applicable; kept for direct callers
            scores.set_all(options.metrics(), "text-only reply: no speech")
            return scores
        samples = empty_reply(replay)  # a model that speaks and returned no audio answered with silence
    if samples is None:
        samples = audio_io.read(audio_root / replay["audio"])
    audio, rate = samples
    scores.set("duration_s", audio_io.duration(audio, rate))
    scores.set("silence_share", audio_io.silence_share(audio, rate))
    flags = prosody.flags(audio, rate)
    for name, value in flags.items():
        scores.set(name, value)
    no_sound = "reply is empty" if flags["flag_empty"] else ("reply is silent" if flags["flag_silent"] else "")
    _quality(scores, audio, rate, options, no_sound)
    _pitch(scores, audio, rate, options, no_sound)
    _heard(scores, replay, asr, audio, rate)
    _plugins(scores, audio, rate, asr, options)
    scores.set("speaker_consistency", None, "needs the conversation's other replies (score_conversation)")
    return scores


def empty_reply(replay: Mapping) -> tuple[np.ndarray, int]:
    """The audio of a speaking model's reply that carried none: zero samples, so it is counted as empty."""
    return np.zeros(0, dtype=np.float32), int(replay.get("sample_rate") or EMPTY_REPLY_RATE)


def _plugins(scores: TurnScores, audio: np.ndarray, rate: int, asr: dict | None, options: SignalOptions) -> None:
    transcript = asr.get("text") if asr is not None and asr.get("status") == "ok" else None
    for plugin in plugins.load(options.extra):
        try:
            values = dict(plugin.score(audio, rate, transcript))
        except Exception as err:  # a plugin's failure makes its metrics missing, never 0
            scores.set_all(plugin.names, f"{type(plugin).__name__} failed: {type(err).__name__}: {err}")
            continue
        for name in plugin.names:
            scores.set(name, values.get(name), f"{type(plugin).__name__} gave no value")


def _quality(scores: TurnScores, audio: np.ndarray, rate: int, options: SignalOptions, no_sound: str) -> None:
    if not options.dnsmos:
        scores.set_all(dnsmos.METRICS, "DNSMOS off (metrics.signals.dnsmos=false)")
    elif no_sound:
        scores.set_all(dnsmos.METRICS, f"{no_sound}: no speech to rate")
    else:
        try:
            for name, value in dnsmos.score(audio, rate).items():
                scores.set(name, value)
        except (RuntimeError, ValueError) as err:
            scores.set_all(dnsmos.METRICS, str(err))
    if not options.utmos:
        scores.set("utmos", None, "UTMOS off (metrics.signals.utmos=false): its weights come from torch.hub (GitHub)")
    elif no_sound:
        scores.set("utmos", None, f"{no_sound}: no speech to rate")
    else:
        try:
            scores.set("utmos", utmos.score(audio, rate))
        except (RuntimeError, ValueError) as err:
            scores.set("utmos", None, str(err))


def _pitch(scores: TurnScores, audio: np.ndarray, rate: int, options: SignalOptions, no_sound: str) -> None:
    if not options.pitch:
        scores.set_all(PITCH, "pitch off (metrics.signals.pitch=false)")
        return
    if no_sound:
        scores.set_all(PITCH, f"{no_sound}: no pitch to measure")
        return
    why = prosody.unavailable()
    result = why if why else prosody.pitch(audio, rate)
    if isinstance(result, str):
        scores.set_all(PITCH, result)
    else:
        for name, value in result.items():
            scores.set(name, value)


def _heard(scores: TurnScores, replay: dict, asr: dict | None, audio: np.ndarray, rate: int) -> None:
    """Metrics that need the transcript: speech detected, reply language, text/speech agreement, speaking rate.
    An empty reply (under 0.1 s of audio, or none) has no speech whatever the ASR says or whether it ran."""
    needs_asr = ("speech_detected", "language_match", "text_speech_error", *RATE_METRICS)
    empty = scores.values.get("flag_empty") == 1.0
    if empty:
        heard = ""
    elif asr is None or asr.get("status") != "ok":
        scores.set_all(needs_asr, "ASR not run" if asr is None else f"ASR failed: {asr.get('error')}")
        return
    else:
        heard = (asr.get("text") or "").strip()
    scores.set("speech_detected", 1.0 if heard else 0.0)
    if empty:
        scores.set("language_match", None, "reply is empty: no speech, no language")
    elif not heard:
        scores.set("language_match", None, "no speech recognised: reply language unknown")
    elif not asr.get("language"):
        scores.set("language_match", None, f"ASR engine {asr.get('engine') or '?'} reports no language")
    elif not replay.get("language"):
        scores.set("language_match", None, "conversation language unknown (no language field in the dataset)")
    else:
        scores.set("language_match", float(language_family(asr["language"]) == language_family(replay.get("language"))))

    text = (replay.get("text") or "").strip()
    if not text:
        scores.set("text_speech_error", None, "model returned no text channel")
    else:
        # the unit (CER or WER) comes from the reference, the model's own text, never from the transcript
        result = error_rate(text, heard, replay.get("language"))
        if result is None:
            scores.set("text_speech_error", None, "text channel empty after normalisation")
        else:
            scores.set("text_speech_error", result.value)
            scores.counts["text_speech_error"] = {"edits": int(result.edits), "units": int(result.units), "unit": result.unit}

    if empty:
        scores.set_all(RATE_METRICS, "reply is empty: no speech to time")
        return
    kind = rate_unit_language(text, replay.get("language"))
    if kind is None:
        scores.set_all(RATE_METRICS, "speaking-rate unit unknown: the reply has no text channel and the turn no language")
        return
    rate_result = prosody.speaking_rate(heard, kind, prosody.speech_span_seconds(audio, rate))
    if rate_result is None:
        scores.set_all(RATE_METRICS, "no recognised words or no speech span")
        return
    name, value = rate_result
    scores.set(name, value)
    source = "the text channel's script" if text else f"the turn's language ({replay.get('language')})"
    other = {
        "speech_rate_wps": f"unit is characters/s (speech_rate_cps), from {source}",
        "speech_rate_cps": f"unit is words/s (speech_rate_wps), from {source}",
    }
    for metric, why in other.items():
        if metric != name:
            scores.set(metric, None, why)


def rate_unit_language(reference: str, language: str | None) -> str | None:
    """Which language's unit a speaking rate is counted in: the reference's (the reply's text channel, by its
    script, else the turn's declared language); None when neither says. Never the ASR's guess, so a
    transcript in the wrong language is counted in the right unit."""
    if reference.strip():
        return resolve_language(reference, language)
    return resolve_language("", language) if language else None


def score_conversation(
    replays: list[dict], asrs: Mapping[Key, dict | None], audio_root: Path, options: SignalOptions | None = None
) -> dict[Key, TurnScores]:
    """Scores for every turn of one conversation, speaker consistency included (each reply against the
    mean voice of the conversation's other replies)."""
    options = options or SignalOptions()
    out: dict[Key, TurnScores] = {}
    embeddings: dict[Key, np.ndarray] = {}
    why_not: dict[Key, str] = {}
    speaker_off = "speaker consistency off (metrics.signals.speaker=false)" if not options.speaker else speaker.unavailable()
    for replay in replays:
        key = (replay["conversation_id"], int(replay["turn"]))
        samples = None
        try:
            if replay.get("status") == "ok" and replay.get("audio"):
                samples = audio_io.read(audio_root / replay["audio"])
            scores = score_turn(replay, asrs.get(key), audio_root, options, samples)
        except Exception as err:  # one unreadable reply must not stop the stage: its scores are missing
            scores, samples = TurnScores(), None
            scores.error = f"scoring failed: {type(err).__name__}: {err}"
            scores.set_all(options.metrics(), scores.error)
        out[key] = scores
        if samples is None and "duration_s" in scores.missing:
            why_not[key] = scores.missing["duration_s"]
        elif samples is None or scores.values.get("flag_empty") or scores.values.get("flag_silent"):
            why_not[key] = "reply is empty or silent: no voice to compare"
        elif scores.values.get("speech_detected") == 0.0:  # noise has a "voice" to an embedding model; no speaker
            why_not[key] = "no speech recognised: no voice to compare"
        elif speaker_off:
            why_not[key] = speaker_off
        else:
            try:
                vector = speaker.embed(*samples)
            except RuntimeError as err:  # the encoder failed to load although installed: see _load_failures
                vector, why_not[key] = None, str(err)
            if vector is None:
                why_not.setdefault(key, f"under {speaker.MIN_SECONDS} s of voiced speech: no voice to compare")
            else:
                embeddings[key] = vector
    similarity = speaker.consistency(embeddings)
    failures = _load_failures(options)
    for key, scores in out.items():
        if key in similarity:
            scores.set("speaker_consistency", similarity[key])
        elif key in why_not:
            scores.set("speaker_consistency", None, why_not[key])
        else:
            scores.set("speaker_consistency", None, "no other reply in this conversation has a voice to compare with")
        if failures and scores.error is None and "duration_s" not in scores.missing:
            scores.error = failures  # the fingerprint says the model is usable here: fail, so a rerun retries
    return out


def _load_failures(options: SignalOptions) -> str | None:
    """Models that ``identity`` found installed (it checks without loading) but that failed to load."""
    errors = [
        why
        for on, module in ((options.dnsmos, dnsmos), (options.speaker, speaker), (options.utmos, utmos))
        if on and (why := module.load_error())
    ]
    return "; ".join(errors) or None
