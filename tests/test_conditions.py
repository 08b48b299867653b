"""Input conditions: each transform measured for what it claims, seeded to the byte, and applied on the wire
(a real 127.0.0.1 server's request log) to the current turn and to the history alike."""

from __future__ import annotations

import asyncio
import base64
import math

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from stepeval import audio as audio_io
from stepeval.client.endpoints import Endpoint
from stepeval.client.wire import WireClient, WireSettings
from stepeval.conditions import KINDS, InputCondition
from stepeval.conditions import transforms as tf
from stepeval.config import compose, conf_dir
from stepeval.stages.base import run_stage_async
from stepeval.stages.replay import ReplaySettings, ReplayStage
from stepeval.store import RunStore
from stepeval.types import Conversation, UserTurn
from tests.http_fake import FakeServer, Scripted
from tests.openai_audio import b64, completion, encoded, tone

RATE = 16000
PATH = "/v1/chat/completions"
TRANSCRIPTS = ["What is the capital of France?", "And how many people live there?", "Tell me a joke about it."]


def speechlike(seconds: float = 2.0, seed: int = 1) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope and pauses: not stationary, like speech."""
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    noise = np.random.default_rng(seed).normal(0, 0.002, len(t))
    return (0.2 * voiced * envelope + noise).astype(np.float32)


def condition(kind: str, **params) -> InputCondition:
    return InputCondition.from_config({"name": kind, "kind": kind, "params": params})


def apply(c: InputCondition, x: np.ndarray, seed: int = 0, conv: str = "c1", turn: int = 0) -> np.ndarray:
    out, rate = c.apply(x, RATE, seed=seed, conversation_id=conv, turn=turn)
    assert rate == RATE
    return out


def snr_db(clean: np.ndarray, degraded: np.ndarray) -> float:
    return 10 * math.log10(tf.power(clean) / tf.power(degraded.astype(np.float64) - clean))


# --- what each transform claims ------------------------------------------------------------------


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 20.0])
def test_noise_has_the_snr_it_claims(color, snr):
    x = speechlike()
    y = apply(condition("noise", color=color, snr_db=snr), x)
    assert abs(snr_db(x, y) - snr) < 0.5


def test_pink_noise_has_equal_power_per_octave_and_white_does_not():
    rng = np.random.default_rng(3)
    freqs, pink = welch(tf.pink_noise(RATE * 8, rng), fs=RATE, nperseg=4096)
    _, white = welch(tf.white_noise(RATE * 8, rng), fs=RATE, nperseg=4096)

    def octave(psd, low):
        band = (freqs >= low) & (freqs < 2 * low)
        return 10 * math.log10(np.trapezoid(psd[band], freqs[band]))

    assert abs(octave(pink, 500) - octave(pink, 2000)) < 1.0  # -3 dB/octave density: equal power per octave
    assert octave(white, 2000) - octave(white, 500) > 5.0  # white doubles per octave: +6 dB over two octaves


def test_babble_is_other_conversations_at_the_snr(tmp_path):
    clips = {}
    for conv in ("c1", "c2", "c3"):
        clips[conv] = tone(1.0, RATE, {"c1": 300.0, "c2": 700.0, "c3": 1300.0}[conv])
        sf.write(tmp_path / f"{conv}.wav", clips[conv], RATE, subtype="PCM_16")
    turns = {c: Conversation(c, "k", "en", (UserTurn(0, tmp_path / f"{c}.wav", "hi"),)) for c in clips}
    babble = condition("noise", color="babble", snr_db=5.0, talkers=2).with_pool(list(turns.values()))
    x = speechlike(1.0)
    y = apply(babble, x, conv="c1")
    assert abs(snr_db(x, y) - 5.0) < 0.5
    freqs, psd = welch(y.astype(np.float64) - x, fs=RATE, nperseg=2048)

    def at(hz):
        return psd[np.argmin(np.abs(freqs - hz))]

    assert at(700) > 100 * at(300) and at(1300) > 100 * at(300)  # the other talkers, never the turn's own voice
    alone = condition("noise", color="babble").with_pool([turns["c1"]])
    with pytest.raises(ValueError, match="other conversations"):
        apply(alone, x, conv="c1")


def test_telephone_band_edges():
    x = tf.white_noise(RATE * 4, np.random.default_rng(0)).astype(np.float32) * 0.1
    y = apply(condition("telephone"), x)
    freqs, psd_in = welch(x, fs=RATE, nperseg=2048)
    _, psd_out = welch(y, fs=RATE, nperseg=2048)
    gain = 10 * np.log10(psd_out / psd_in)

    def band(low, high):
        return float(np.mean(gain[(freqs >= low) & (freqs <= high)]))

    passband = band(500, 3000)
    assert abs(passband) < 1.0  # the voice band passes
    assert float(np.max(np.abs(gain[(freqs >= 500) & (freqs <= 3000)] - passband))) < 1.5  # flat
    assert band(280, 320) < passband - 1.5 and band(3380, 3420) < passband - 1.5  # the edges are where they are said to be
    assert band(50, 150) < passband - 20  # below the band
    assert band(4200, 8000) < passband - 30  # above 8 kHz sampling's band: gone


def test_packet_loss_drops_that_share_of_20ms_frames():
    x = tf.white_noise(RATE * 5, np.random.default_rng(0)).astype(np.float32) * 0.1  # no frame silent by itself
    for rate in (0.05, 0.1, 0.3):
        y = apply(condition("packet_loss", loss_rate=rate, frame_ms=20.0), x)
        lost = tf.lost_frames(y, RATE, 20.0)
        assert len(lost) == 250 and abs(lost.mean() - rate) <= 1 / 250
        kept = ~np.repeat(lost, 320)[: len(x)]
        assert np.array_equal(y[kept], x[kept])  # the other frames are untouched


def test_clipping_clips_that_share_of_samples():
    x = speechlike()
    y = apply(condition("clipping", fraction=0.05), x)
    peak = float(np.max(np.abs(y)))
    assert abs(float(np.mean(np.abs(x) >= peak)) - 0.05) < 0.002
    assert np.array_equal(y[np.abs(x) < peak], x[np.abs(x) < peak])


@pytest.mark.parametrize("factor", [0.8, 1.25, 1.5])
def test_speed_changes_duration_not_pitch(factor):
    x = tone(2.0, RATE, 220.0)
    y = apply(condition("speed", factor=factor), x)
    assert abs(len(y) / len(x) - 1 / factor) < 0.02
    assert abs(dominant(y) - 220.0) < 5.0


def dominant(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)])


@pytest.mark.parametrize("semitones", [-3.0, 3.0])
def test_pitch_moves_pitch_not_duration(semitones):
    x = tone(2.0, RATE, 220.0)
    y = apply(condition("pitch", semitones=semitones), x)
    assert len(y) == len(x)
    assert abs(dominant(y) / 220.0 - 2 ** (semitones / 12)) < 0.02


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_codec_is_low_bitrate_and_still_the_signal(codec):
    x = speechlike(3.0)
    y, size = tf.codec(x, RATE, codec, {"mp3": 0.95, "opus": 1.0}[codec])
    kbps = size * 8 / 3.0 / 1000
    assert kbps < 40  # a low bitrate (16-bit PCM at 16 kHz is 256 kbps)
    assert len(y) == len(x) and not np.array_equal(y, x)
    lag = int(np.argmax(np.correlate(y[:8000], x[:8000], "full"))) - 7999  # the codec's delay
    aligned = np.roll(y, -lag)
    assert np.corrcoef(aligned[1000:-1000], x[1000:-1000])[0, 1] > 0.8


def test_reverb_has_its_rt60_and_keeps_the_level():
    import pyroomacoustics as pra

    c = condition("reverb", rt60_s=0.6, room_m=[6.0, 5.0, 3.0], distance_m=1.0)
    rir = tf.room_impulse_response(RATE, 0.6, (6.0, 5.0, 3.0), 1.0, c.rng(0, "c1", 0))
    assert abs(pra.experimental.measure_rt60(rir, fs=RATE, decay_db=30) - 0.6) / 0.6 < 0.3
    x = speechlike()
    y = apply(c, x)
    assert abs(tf.level_db(y) - tf.level_db(x)) < 0.5
    assert np.corrcoef(y, x)[0, 1] < 0.95  # it is not the dry signal


def test_far_field_is_quieter_by_its_level_and_farther_by_its_delay():
    c = condition("far_field", distance_m=4.0, level_db=-12.0)
    x = speechlike()
    assert abs(tf.level_db(apply(c, x)) - (tf.level_db(x) - 12.0)) < 0.5
    near = tf.room_impulse_response(RATE, 0.4, (8.0, 6.0, 3.0), 0.5, c.rng(0, "c1", 0))
    far = tf.room_impulse_response(RATE, 0.4, (8.0, 6.0, 3.0), 4.0, c.rng(0, "c1", 0))

    # the direct sound (the first arrival above half the peak: floor and ceiling echoes can add up to more than it)
    # arrives (4 - 0.5) m / 343 m/s later
    def arrival(rir):
        return int(np.argmax(np.abs(rir) > 0.5 * np.max(np.abs(rir))))

    assert abs((arrival(far) - arrival(near)) - 3.5 / 343 * RATE) < 3


# --- seeds, identity, configuration --------------------------------------------------------------

SEEDED = {
    "noise": {"color": "pink"},
    "reverb": {},
    "far_field": {},
    "packet_loss": {},
}


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("clean", "text", "voice")])
def test_same_seed_same_bytes(kind):
    c = condition(kind, **SEEDED.get(kind, {}))
    x = speechlike()
    first = audio_io.encode_wav(apply(c, x, seed=7), RATE)
    assert first == audio_io.encode_wav(apply(condition(kind, **SEEDED.get(kind, {})), x, seed=7), RATE)
    if kind in SEEDED:  # random ones: another seed, or another turn, draws differently
        assert first != audio_io.encode_wav(apply(c, x, seed=8), RATE)
        assert first != audio_io.encode_wav(apply(c, x, seed=7, turn=1), RATE)


def test_every_packaged_option_composes_and_names_its_run():
    from stepeval.pipeline import run_name_for

    names = set()
    options = sorted(p.stem for p in (conf_dir() / "input").glob("*.yaml"))
    assert {"clean", "text", "noise_snr10", "reverb", "telephone", "codec_mp3", "packet_loss", "voice_espeak"} <= set(options)
    for option in options:
        cfg = compose(["dataset=sample", "model=parrot", "asr=none", f"input={option}"])
        c = InputCondition.from_config(dict(cfg.input))
        assert c.name == option
        name = run_name_for(cfg)
        assert (option in name) != c.clean
        names.add(name)
    assert len(names) == len(options)  # every condition its own run folder: no replies shared
    assert compose(["dataset=sample", "model=parrot", "input.params.snr_db=20", "input=noise_snr10"]).input.params.snr_db == 20


def test_clean_runs_keep_the_names_they_had():
    """A run made before input conditions existed is found again: sample-parrot-5778db6c is the name the previous
    release gave `dataset=sample model=parrot` (seen in issue 18's leaderboard rows), recorded here as data."""
    from stepeval.pipeline import run_name_for

    assert run_name_for(compose(["dataset=sample", "model=parrot", "asr=none"])) == "sample-parrot-5778db6c"
    assert run_name_for(compose(["dataset=sample", "model=parrot", "input=noise_snr10"])) != "sample-parrot-5778db6c"


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"kind": "nois"}, "input.kind='nois'"),
        ({"kind": "noise", "params": {"snr": 3}}, r"input.params: noise takes no parameter\(s\) \['snr'\]"),
        ({"kind": "noise", "params": {"color": "brown"}}, "input.params.color='brown'"),
        ({"kind": "telephone", "params": {"high_hz": 5000}}, r"input.params.high_hz=5000: must be <= 4000"),
        ({"kind": "packet_loss", "params": {"loss_rate": 1.5}}, "input.params.loss_rate=1.5"),
    ],
)
def test_bad_condition_config_names_the_key(node, message):
    with pytest.raises(ValueError, match=message):
        InputCondition.from_config(node)


# --- on the wire ---------------------------------------------------------------------------------


def _reply(request) -> Scripted:
    turn = int(request.json["metadata"]["turn"])
    return Scripted(json=completion(b64(encoded(tone(0.2, 24000, 500.0 + turn), 24000)), transcript=f"reply {turn}"))


def _conversation(tmp_path) -> tuple[Conversation, list[np.ndarray]]:
    turns, clips = [], []
    for i, text in enumerate(TRANSCRIPTS):
        samples = speechlike(0.5, seed=i)
        path = tmp_path / f"turn{i}.wav"
        sf.write(path, samples, RATE, subtype="PCM_16")
        clips.append(audio_io.read(path)[0])
        turns.append(UserTurn(i, path, text))
    return Conversation("geo-1", "knowledge", "en", tuple(turns)), clips


def _replay(store: RunStore, conversation: Conversation, history: str, c: InputCondition | None, seed: int = 0):
    with FakeServer() as server:
        server.fallback = _reply
        wire = WireClient([Endpoint(0, server.url + "/v1", None, 2, 10.0)], WireSettings(wire_model="m", backoff_s=0.01))
        settings = ReplaySettings("fp", history=history, seed=seed, condition=c)
        result = asyncio.run(run_stage_async(ReplayStage(wire, store, settings, [conversation]), store, progress=False))
    return result, [r.json["messages"] for r in server.requests_to(PATH)]


def _audio_parts(message: dict) -> list[np.ndarray]:
    if isinstance(message["content"], str):
        return []
    out = []
    for part in message["content"]:
        if part["type"] == "input_audio":
            samples, rate = audio_io.decode(base64.b64decode(part["input_audio"]["data"]))
            assert rate == RATE
            out.append(samples)
    return out


def test_degraded_audio_on_the_wire_and_in_the_history(tmp_path):
    conversation, clips = _conversation(tmp_path)
    noisy = condition("noise", color="white", snr_db=0.0)
    with RunStore(tmp_path / "run") as store:
        result, requests = _replay(store, conversation, "audio", noisy, seed=3)
    assert result.stats.failed == 0 and len(requests) == 3
    expected = [apply(noisy, clip, seed=3, conv="geo-1", turn=i) for i, clip in enumerate(clips)]
    last = requests[-1]
    sent = [a for m in last if m["role"] == "user" for a in _audio_parts(m)]
    assert len(sent) == 3
    for i in range(3):  # the current turn and both earlier ones: degraded, each with its own turn's noise
        assert np.allclose(sent[i], expected[i], atol=1e-4)
        assert abs(snr_db(clips[i], sent[i]) - 0.0) < 0.5
    assert np.allclose(_audio_parts(requests[0][0])[0], sent[0], atol=1e-4)  # the history never rewrites itself


def test_a_degraded_run_never_reuses_clean_replies(tmp_path):
    conversation, _ = _conversation(tmp_path)
    with RunStore(tmp_path / "run") as store:
        clean, _ = _replay(store, conversation, "audio", None)
        again, requests = _replay(store, conversation, "audio", condition("clean"))
        noisy, noisy_requests = _replay(store, conversation, "audio", condition("noise", snr_db=10.0))
    assert clean.stats.computed == 3
    assert again.stats.computed == 0 and requests == []  # clean is clean, however it is said
    assert noisy.stats.computed == 3 and len(noisy_requests) == 3  # every turn asked again
    assert not set(clean.fingerprints.values()) & set(noisy.fingerprints.values())


@pytest.mark.parametrize("history", ["audio", "transcript"])
def test_text_input_sends_no_audio_and_keeps_the_history_policy(tmp_path, history):
    conversation, _ = _conversation(tmp_path)
    with RunStore(tmp_path / history) as store:
        result, requests = _replay(store, conversation, history, condition("text"))
    assert result.stats.computed == 3 and result.stats.failed == 0
    assert [len(m) for m in requests] == [1, 3, 5]  # (user, assistant) per earlier turn + the current user turn
    for messages in requests:
        assert all(not _audio_parts(m) for m in messages)  # not one audio part, in any request
        assert "input_audio" not in str(messages)
    last = requests[-1]
    assert [m["role"] for m in last] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in last[::2]] == TRANSCRIPTS
    assert [m["content"] for m in last[1::2]] == ["reply 0", "reply 1"]  # earlier replies as the model's own transcript


def test_text_input_refuses_a_model_that_needs_audio():
    from stepeval.pipeline import prepare

    with pytest.raises(ValueError, match=r"input=text: model=parrot cannot take a user turn as text"):
        prepare(compose(["dataset=sample", "model=parrot", "asr=none", "input=text"]))
    prepared = prepare(compose(["dataset=sample", "model=canned", "asr=none", "input=text"]))
    assert prepared.text_sources == {"dataset": 22, "asr": 0}  # the sample's own transcripts


# --- the input's own voice -----------------------------------------------------------------------


@pytest.mark.slow  # runs espeak-ng
def test_voice_respeaks_each_turn_from_its_transcript_with_another_voice():
    from stepeval.data.loader import load_configured

    dataset = load_configured(dict(compose(["dataset=sample"]).dataset))
    conv = next(c for c in dataset.conversations if c.language == "en")
    turn = conv.turns[0]
    voice = InputCondition.from_config(dict(compose(["dataset=sample", "input=voice_espeak"]).input))
    voice.check()
    original, rate = audio_io.read(turn.audio_path)
    spoken, spoken_rate = voice.apply(original, rate, seed=0, conversation_id=conv.id, turn=0, text=turn.text, language="en")
    again, _ = voice.apply(original, rate, seed=5, conversation_id=conv.id, turn=0, text=turn.text, language="en")
    assert audio_io.encode_wav(spoken, spoken_rate) == audio_io.encode_wav(again, spoken_rate)  # the text decides
    assert 0.5 < len(spoken) / spoken_rate / (len(original) / rate) < 2.0  # the same words, about as long
    resampled = audio_io.resample(spoken, spoken_rate, rate)[: len(original)]
    assert not np.allclose(resampled, original[: len(resampled)], atol=0.05)  # another voice, not the clip
    assert voice.describe()["tts"]["voices"] == {"en": "en-gb", "zh": "cmn"}
    with pytest.raises(ValueError, match="has no transcript to re-speak"):
        voice.apply(original, rate, seed=0, conversation_id=conv.id, turn=0, text=None)


def _sample_without_text(drop: int):
    """The bundled sample with the transcripts of its first ``drop`` English turns removed."""
    import dataclasses

    from stepeval.data.loader import load_configured

    dataset = load_configured(dict(compose(["dataset=sample"]).dataset))
    dropped = []
    for i, conv in enumerate(dataset.conversations):
        if conv.language != "en" or len(dropped) >= drop:
            continue
        turn = conv.turns[0]
        dropped.append((conv.id, turn.index, turn.text))
        dataset.conversations[i] = dataclasses.replace(conv, turns=(dataclasses.replace(turn, text=None), *conv.turns[1:]))
    return dataset, dropped


def test_text_input_without_transcripts_or_asr_is_refused_naming_a_turn():
    from stepeval.pipeline import _fill_user_text

    dataset, dropped = _sample_without_text(2)
    with pytest.raises(
        ValueError, match=rf"input=text needs each user turn's transcript and 2 turn\(s\) have none \(e.g. {dropped[0][0]}"
    ):
        _fill_user_text(condition("text"), dataset, None)


@pytest.mark.slow  # loads Whisper
def test_text_input_takes_the_user_turn_asr_where_the_dataset_has_no_text():
    import jiwer
    from hydra.utils import instantiate

    from stepeval.pipeline import _fill_user_text

    dataset, dropped = _sample_without_text(2)
    asr = instantiate(compose(["asr=whisper_base_offline"]).asr.engine)
    assert _fill_user_text(condition("text"), dataset, asr) == {"dataset": 20, "asr": 2}
    texts = {(c.id, t.index): t.text for c in dataset.conversations for t in c.turns}
    for conv_id, index, original in dropped:
        heard = texts[(conv_id, index)]
        assert heard and jiwer.wer(original.lower(), heard.lower().strip(".?!")) < 0.5


def test_the_sweep_comparison_names_each_condition():
    from stepeval.reporting.comparison import comparison_table

    cell = {"overall": {"mean": 1.0, "scored": 22, "missing": 0}}
    summaries = [
        {"model": "parrot", "run_name": "sample-parrot-1", "metrics": {"speech_detected": cell}},  # made before input=
        {"model": "parrot", "input": "noise_snrm20", "run_name": "sample-parrot-noise_snrm20-2", "metrics": {}},
    ]
    header = comparison_table(summaries).splitlines()[0]
    assert header == "| metric | parrot | parrot (noise_snrm20) |"
