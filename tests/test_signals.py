"""Objective signals on real audio: DNSMOS (speechmos), speaker consistency (Resemblyzer), pitch
(pYIN), speaking rate and the sanity flags, with a reason for every missing value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stepeval import audio as audio_io
from stepeval.signals import dnsmos, prosody
from stepeval.signals import scoring as signals

DATA = Path(__file__).parent / "data"
CLIPS = json.loads((DATA / "clips.json").read_text(encoding="utf-8"))
RATE = 16000
VOICE_ONLY = signals.SignalOptions(dnsmos=False, pitch=False)  # the speaker tests need no other model


def clip(name: str) -> np.ndarray:
    samples, rate = audio_io.read(DATA / CLIPS[name]["file"])
    assert rate == RATE
    return samples


def replay(conv: str, turn: int, audio: str | None, **extra) -> dict:
    return {
        "conversation_id": conv,
        "turn": turn,
        "status": "ok",
        "audio": audio,
        "category": "gaming",
        "language": "en",
        **extra,
    }


def write(folder: Path, name: str, samples: np.ndarray) -> str:
    audio_io.write_wav_atomic(folder / name, samples, RATE)
    return name


def test_dnsmos_ranks_clean_speech_above_the_same_speech_with_noise():
    clean = clip("en_price")
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.05, clean.size).astype(np.float32), -1, 1)
    a, b = dnsmos.score(clean, RATE), dnsmos.score(noisy, RATE)
    assert set(a) == set(dnsmos.METRICS)
    assert a["dnsmos_ovrl"] > b["dnsmos_ovrl"] + 0.5
    assert a["dnsmos_bak"] > b["dnsmos_bak"] + 0.5  # BAK is the background-noise score
    assert a["dnsmos_p808"] > b["dnsmos_p808"]
    assert all(1.0 <= v <= 5.0 for v in a.values())
    with pytest.raises(ValueError, match="shorter"):
        dnsmos.score(np.zeros(100, dtype=np.float32), RATE)  # speechmos itself would loop forever on this


def test_speaker_consistency_is_higher_for_one_voice_than_for_several():
    same = [replay("same", i, f"{n}.flac") for i, n in enumerate(["speaker_same_1", "speaker_same_2", "en_price"])]
    mixed = [replay("mixed", i, f"{n}.flac") for i, n in enumerate(["speaker_same_1", "speaker_other_1", "speaker_other_2"])]
    one = signals.score_conversation(same, {}, DATA, VOICE_ONLY)
    many = signals.score_conversation(mixed, {}, DATA, VOICE_ONLY)
    one_values = [s.values["speaker_consistency"] for s in one.values()]
    many_values = [s.values["speaker_consistency"] for s in many.values()]
    assert all(0.0 <= v <= 1.0 for v in one_values + many_values)
    assert min(one_values) > max(many_values)  # every en-us reply sounds more like the others than any mixed one
    # two replies with the same text: a male en-us voice against a female variant still scores lower than two en-us replies
    pair_same = signals.score_conversation(same[:2], {}, DATA, VOICE_ONLY)
    pair_mixed = signals.score_conversation([mixed[0], replay("mixed", 1, "speaker_other_2.flac")], {}, DATA, VOICE_ONLY)
    assert pair_same[("same", 0)].values["speaker_consistency"] > pair_mixed[("mixed", 0)].values["speaker_consistency"] + 0.1


def test_speaker_consistency_is_missing_with_a_reason_when_there_is_nothing_to_compare(tmp_path):
    write(tmp_path, "speech.wav", clip("en_price"))
    write(tmp_path, "silent.wav", np.zeros(RATE, dtype=np.float32))
    lonely = signals.score_conversation([replay("c", 0, "speech.wav")], {}, tmp_path, VOICE_ONLY)[("c", 0)]
    assert lonely.values["speaker_consistency"] is None
    assert "no other reply" in lonely.missing["speaker_consistency"]
    turns = [replay("d", 0, "speech.wav"), replay("d", 1, "silent.wav"), replay("d", 2, None, status="failed", error="timeout")]
    scored = signals.score_conversation(turns, {}, tmp_path, VOICE_ONLY)
    assert "no other reply" in scored[("d", 0)].missing["speaker_consistency"]
    assert "silent" in scored[("d", 1)].missing["speaker_consistency"]
    assert "turn failed: timeout" == scored[("d", 2)].missing["speaker_consistency"]
    off = signals.score_conversation(turns[:1], {}, tmp_path, signals.SignalOptions(speaker=False))[("d", 0)]
    assert "metrics.signals.speaker=false" in off.missing["speaker_consistency"]


def test_flags_on_constructed_audio():
    speech = clip("en_price")
    assert prosody.flags(speech, RATE) == {"flag_empty": 0.0, "flag_silent": 0.0, "flag_clipped": 0.0, "flag_truncated": 0.0}
    clipped = np.clip(speech * 8, -1.0, 1.0)
    assert prosody.flags(clipped, RATE)["flag_clipped"] == 1.0
    # cut at the loudest 30 ms frame: the speech runs into the end of the audio
    loudest = int(np.argmax(prosody.frame_levels(speech, RATE))) * int(RATE * prosody.FRAME_S)
    cut = speech[: loudest + int(RATE * prosody.FRAME_S)]
    assert prosody.flags(cut, RATE)["flag_truncated"] == 1.0
    assert prosody.flags(np.zeros(2 * RATE, dtype=np.float32), RATE)["flag_silent"] == 1.0
    hiss = np.random.default_rng(1).normal(0, 10 ** (-70 / 20), 2 * RATE).astype(np.float32)  # -70 dBFS: silent
    assert prosody.flags(hiss, RATE)["flag_silent"] == 1.0
    assert prosody.flags(hiss, RATE)["flag_truncated"] == 0.0
    assert prosody.flags(np.zeros(100, dtype=np.float32), RATE)["flag_empty"] == 1.0
    # one full-scale sample (a peak-normalised reply) is not clipping
    peak = speech.copy()
    peak[RATE] = 1.0
    assert prosody.flags(peak, RATE)["flag_clipped"] == 0.0


def test_pitch_statistics_of_synthetic_tones():
    t = np.arange(2 * RATE) / RATE
    steady = 0.5 * np.sin(2 * np.pi * 220.0 * t).astype(np.float32)
    result = prosody.pitch(steady, RATE)
    assert result["f0_median_hz"] == pytest.approx(220.0, rel=0.02)
    assert result["f0_std_st"] < 0.3
    # an exponential glide over one octave (12 semitones, uniform in semitones): the 5th-95th percentile span is 0.9 * 12
    glide_hz = 200.0 * 2 ** (t / t[-1])
    glide = 0.5 * np.sin(2 * np.pi * np.cumsum(glide_hz) / RATE).astype(np.float32)
    assert prosody.pitch(glide, RATE)["f0_range_st"] == pytest.approx(10.8, abs=1.0)
    assert "voiced frames" in prosody.pitch(np.zeros(RATE, dtype=np.float32), RATE)


def test_speaking_rate_units_per_language():
    # 请给我三个苹果: 7 characters over 2 s
    assert prosody.speaking_rate("请给我三个苹果。", "zh", 2.0) == ("speech_rate_cps", 3.5)
    # "It costs five dollars." is 4 words over 2 s
    assert prosody.speaking_rate("It costs five dollars.", "en", 2.0) == ("speech_rate_wps", 2.0)
    # 我喜欢 + Python + 3: 5 units over 1 s
    assert prosody.speaking_rate("我喜欢Python 3", "zh", 1.0) == ("speech_rate_cps", 5.0)
    assert prosody.speaking_rate("", "en", 1.0) is None
    # padding does not count: en_price has 0.3 s of silence either side
    speech = clip("en_price")
    assert prosody.speech_span_seconds(speech, RATE) < speech.size / RATE - 0.5


def test_score_turn_records_values_and_reasons(tmp_path):
    write(tmp_path, "reply.wav", clip("en_price"))
    write(tmp_path, "silent.wav", np.zeros(2 * RATE, dtype=np.float32))
    asr = {"status": "ok", "text": "It costs five dollars and twenty cents.", "language": "en", "engine": "faster-whisper"}
    ok = signals.score_turn(replay("c", 0, "reply.wav", text="It costs $5.20."), asr, tmp_path)
    assert set(ok.values) == set(signals.METRICS)
    assert set(ok.missing) == {k for k, v in ok.values.items() if v is None}
    assert ok.values["language_match"] == 1.0
    assert ok.values["text_speech_error"] == 0.0  # "$5.20" and "five dollars and twenty cents" normalise alike
    assert 1.0 < ok.values["speech_rate_wps"] < 4.0
    assert "speech_rate_cps" in ok.missing
    assert ok.values["dnsmos_ovrl"] is not None and ok.values["f0_median_hz"] is not None
    assert "metrics.signals.utmos=false" in ok.missing["utmos"]

    silent = signals.score_turn(replay("c", 1, "silent.wav"), {"status": "ok", "text": "", "language": None}, tmp_path)
    assert silent.values["flag_silent"] == 1.0
    assert silent.values["speech_detected"] == 0.0
    assert "silent" in silent.missing["dnsmos_ovrl"] and "silent" in silent.missing["f0_median_hz"]
    assert silent.missing["language_match"].startswith("no speech recognised")

    paraformer = {"status": "ok", "text": "请给我三个苹果", "language": None, "engine": "funasr"}
    no_lang = signals.score_turn(replay("c", 2, "reply.wav", language="zh"), paraformer, tmp_path)
    assert "reports no language" in no_lang.missing["language_match"]
    assert no_lang.values["speech_rate_cps"] is not None

    failed = signals.score_turn(replay("c", 3, None, status="failed", error="HTTP 500"), None, tmp_path)
    assert all(v is None for v in failed.values.values())
    assert set(failed.missing.values()) == {"turn failed: HTTP 500"}
    text_only = signals.score_turn(replay("c", 4, None, text="hi", speaks=False), None, tmp_path)
    assert set(text_only.missing.values()) == {"text-only reply: no speech"}
    no_asr = signals.score_turn(replay("c", 5, "reply.wav"), None, tmp_path, signals.SignalOptions(dnsmos=False, pitch=False))
    assert no_asr.missing["speech_detected"] == "ASR not run"
    assert "metrics.signals.dnsmos=false" in no_asr.missing["dnsmos_ovrl"]


def test_an_unreadable_reply_is_missing_not_fatal(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    write(tmp_path, "fine.wav", clip("speaker_same_2"))
    scored = signals.score_conversation([replay("c", 0, "broken.wav"), replay("c", 1, "fine.wav")], {}, tmp_path, VOICE_ONLY)
    assert scored[("c", 0)].missing["duration_s"].startswith("scoring failed: ValueError: cannot decode audio file")
    assert scored[("c", 1)].values["duration_s"] is not None


def test_identity_changes_with_options():
    assert signals.identity(signals.SignalOptions()) != signals.identity(signals.SignalOptions(pitch=False))
    assert signals.SignalOptions.from_config({"utmos": True, "unknown": 1}) == signals.SignalOptions(utmos=True)


def test_replies_asr_heard_nothing_in_get_no_speaker_score(tmp_path):
    """Noise has a 'voice' to an embedding model; when ASR recognised no speech there is no speaker to compare."""
    write(tmp_path, "a.wav", clip("speaker_same_1"))
    write(tmp_path, "b.wav", clip("speaker_same_2"))
    write(tmp_path, "noise.wav", np.random.default_rng(0).normal(0, 0.1, 2 * RATE).astype(np.float32))
    turns = [replay("n", 0, "a.wav"), replay("n", 1, "b.wav"), replay("n", 2, "noise.wav")]
    heard = {"status": "ok", "text": "some words", "language": "en"}
    asrs = {("n", 0): heard, ("n", 1): heard, ("n", 2): {"status": "ok", "text": "", "language": "en"}}
    scored = signals.score_conversation(turns, asrs, tmp_path, VOICE_ONLY)
    assert scored[("n", 2)].values["speech_detected"] == 0.0
    assert scored[("n", 2)].values["speaker_consistency"] is None
    assert "no speech recognised" in scored[("n", 2)].missing["speaker_consistency"]
    assert scored[("n", 0)].values["speaker_consistency"] is not None  # compared with turn 1 only


@pytest.mark.parametrize("audio", [None, "zero.wav"], ids=["no audio", "zero samples"])
def test_a_speaking_model_that_returns_nothing_answered_with_silence(tmp_path, audio):
    """An empty reply is counted by the empty flag and has no speech; it is not 'text-only'."""
    write(tmp_path, "zero.wav", np.zeros(0, dtype=np.float32))
    asr = None if audio is None else {"status": "failed", "error": "nothing to transcribe"}
    empty = signals.score_turn(replay("c", 0, audio, text="", speaks=True), asr, tmp_path)
    assert empty.values["flag_empty"] == 1.0
    assert empty.values["speech_detected"] == 0.0
    assert empty.values["duration_s"] == 0.0
    assert empty.values["text_speech_error"] is None and empty.missing["text_speech_error"] == "model returned no text channel"
    assert "empty" in empty.missing["dnsmos_ovrl"] and "empty" in empty.missing["speech_rate_wps"]
    assert not any("text-only" in why for why in empty.missing.values())
    # a text channel with no speech under it: every word of it is missing from the speech
    spoke_nothing = signals.score_turn(replay("c", 1, audio, text="Hello there.", speaks=True), asr, tmp_path)
    assert spoke_nothing.values["text_speech_error"] == 1.0
    assert spoke_nothing.counts["text_speech_error"] == {"edits": 2, "units": 2, "unit": "word"}


def test_empty_reply_breaks_no_speaker_comparison(tmp_path):
    write(tmp_path, "a.wav", clip("speaker_same_1"))
    scored = signals.score_conversation([replay("e", 0, "a.wav"), replay("e", 1, None, text="")], {}, tmp_path, VOICE_ONLY)
    assert scored[("e", 1)].values["flag_empty"] == 1.0
    assert "empty" in scored[("e", 1)].missing["speaker_consistency"]


def _heard_as(text: str, language: str) -> dict:
    return {"status": "ok", "text": text, "language": language, "engine": "faster-whisper"}


def test_error_rate_unit_comes_from_the_reference_not_the_asr_language(tmp_path):
    write(tmp_path, "reply.wav", clip("en_price"))
    # a Chinese text channel heard as English: characters, counted against the 8 reference characters
    zh = signals.score_turn(
        replay("u", 0, "reply.wav", text="你好，今天天气很好。", language="zh"), _heard_as("Ni hao, nice weather", "en"), tmp_path
    )
    assert zh.counts["text_speech_error"]["unit"] == "char"
    assert zh.counts["text_speech_error"]["units"] == 8  # 你好今天天气很好
    assert zh.values["text_speech_error"] > 1.0  # a transcript in the wrong language is a large error in the right unit
    # the speaking rate is counted in the reference's unit too, and the other unit's reason says why
    assert zh.values["speech_rate_cps"] is not None and zh.values["speech_rate_wps"] is None
    assert "characters/s" in zh.missing["speech_rate_wps"] and "text channel" in zh.missing["speech_rate_wps"]
    # an English text channel heard as Chinese: words
    en = signals.score_turn(
        replay("u", 1, "reply.wav", text="It is a nice day.", language="en"), _heard_as("今天很好", "zh"), tmp_path
    )
    # five reference words; the unsegmented Chinese is one token: one substitution, four deletions
    assert en.counts["text_speech_error"] == {"edits": 5, "units": 5, "unit": "word"}
    assert en.values["speech_rate_wps"] is not None and "words/s" in en.missing["speech_rate_cps"]


def test_speaking_rate_unit_without_text_channel_follows_the_turn_language(tmp_path):
    write(tmp_path, "reply.wav", clip("en_price"))
    # parrot-like: no text channel, a Mandarin turn heard as Thai: characters/s, from the turn's language
    heard = signals.score_turn(replay("p", 0, "reply.wav", language="zh"), _heard_as("สวัสดี ครับ", "th"), tmp_path)
    assert heard.values["speech_rate_cps"] is not None
    assert "turn's language (zh)" in heard.missing["speech_rate_wps"]
    unknown = signals.score_turn(replay("p", 1, "reply.wav", language=None), _heard_as("hello there", "en"), tmp_path)
    assert unknown.values["speech_rate_wps"] is None and unknown.values["speech_rate_cps"] is None
    assert "unit unknown" in unknown.missing["speech_rate_wps"]


def test_the_judge_reads_an_empty_reply_as_empty_not_as_missing():
    from stepeval.records import ReplayRecord
    from stepeval.stages.judge import reply_side

    base = {"conversation_id": "c", "turn": 0, "stage": "replay", "fingerprint": "f"}
    empty = ReplayRecord(**base, text="", audio=None, speaks=True)
    for reads in ("asr", "text_then_asr"):
        side = reply_side(empty, None, reads, asr_enabled=True)
        assert (side.text, side.source, side.missing) == ("", "empty_reply", None)
    text_only = ReplayRecord(**base, text="hi", audio=None, speaks=False)
    assert reply_side(text_only, None, "asr", asr_enabled=True).text is None
