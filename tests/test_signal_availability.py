"""A signal that cannot run for lack of a package: missing with its reason, announced, and a problem of the run (exit
1), the same way for every such signal; and its identity says *that* it is unavailable, not in which words."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from stepeval import pipeline, views
from stepeval.signals import scoring as signals
from tests.hide_packages import hide_fixture  # noqa: F401  (the `hide` fixture)


def problems_of(signal_config: dict) -> list[str]:
    cfg = OmegaConf.create({"metrics": {"signals": signal_config}})
    prepared = SimpleNamespace(warnings=pipeline._unavailable_warnings(cfg))
    return pipeline._problems(prepared, [])


ALL_ON = {"dnsmos": True, "speaker": True, "pitch": True, "utmos": True}


@pytest.mark.parametrize(
    ("missing", "unavailable"),
    [
        ("librosa", {"dnsmos", "speaker", "pitch"}),  # the core install: pitch as well as DNSMOS and Resemblyzer
        ("speechmos", {"dnsmos"}),
        ("resemblyzer", {"speaker"}),
        ("torch", {"speaker", "utmos"}),
        ("webrtcvad", {"speaker"}),
        ("onnxruntime", {"dnsmos"}),
    ],
)
def test_every_signal_missing_a_package_is_one_problem_naming_it_and_the_install(hide, missing: str, unavailable: set):
    hide(missing)
    reasons = signals.unavailable_reasons(signals.SignalOptions(**ALL_ON))
    assert {name for name, why in reasons.items() if why} == unavailable
    problems = problems_of(ALL_ON)
    assert len(problems) == len(unavailable)
    for name in unavailable:
        (line,) = [p for p in problems if reasons[name] in p]
        assert "pip install" in line and ("unavailable" in line), line
    assert all(f"'{missing}'" in p for p in problems)  # each names the package it lacks


def test_nothing_is_a_problem_when_the_signal_is_off_or_installed(hide):
    hide("librosa")
    assert problems_of({"dnsmos": False, "speaker": False, "pitch": False, "utmos": False}) == []
    hide()  # everything of the test environment installed (`make setup` installs every extra and Resemblyzer)
    assert problems_of(ALL_ON) == []


def test_pitch_without_librosa_is_missing_with_the_reason_never_zero(hide, tmp_path):
    hide("librosa")
    rate = 16000
    t = np.arange(rate * 2) / rate
    voice = (0.3 * np.sin(2 * np.pi * 140 * t)).astype(np.float32)
    replay = {"conversation_id": "c", "turn": 0, "status": "ok", "audio": "r.wav", "language": "en"}
    options = signals.SignalOptions(dnsmos=False, speaker=False, pitch=True)
    scores = signals.score_turn(replay, None, tmp_path, options, samples=(voice, rate))
    for name in signals.PITCH:
        assert scores.values[name] is None
        assert "librosa" in scores.missing[name] and "stepeval[judges]" in scores.missing[name]
    assert scores.values["duration_s"] == pytest.approx(2.0)


def test_identity_and_view_name_do_not_depend_on_the_reasons_wording(hide, monkeypatch):
    """Installing Resemblyzer without torch changed the reason ('resemblyzer' -> 'torch'), not a number."""
    options = signals.SignalOptions()
    hide("resemblyzer")
    first = signals.identity(options)
    first_reason = signals.unavailable_reasons(options)["speaker"]
    hide("torch")
    second = signals.identity(options)
    assert signals.unavailable_reasons(options)["speaker"] != first_reason
    assert first == second
    assert first["unavailable"]["speaker"] == signals.UNAVAILABLE

    def view_name(signal_identity: dict) -> str:
        names = {"asr": "none", "judge": "none", "metrics": "default"}
        return views.describe([("c", 0)], 1, None, None, {}, signal_identity, {}, names)[0]

    assert view_name(first) == view_name(second)
    hide()  # speaker available: a different view (its numbers differ), fingerprints as before the change
    available = signals.identity(options)
    assert available["unavailable"] == {"dnsmos": None, "speaker": None}
    assert view_name(available) != view_name(first)


def _score_fingerprints(tmp_path, audio_of_turn_1: str, options: signals.SignalOptions) -> dict:
    from stepeval.records import ReplayRecord
    from stepeval.stages.score import ScoreStage

    replays = {
        ("c", turn): ReplayRecord("c", turn, "replay", f"replay-{turn}-{sha}", audio=f"{turn}.wav", audio_sha256=sha)
        for turn, sha in ((0, "aaaa"), (1, audio_of_turn_1))
    }
    stage = ScoreStage(tmp_path, replays, None, options)
    (unit,) = stage.units()
    return unit.fingerprints


def test_a_turn_redone_changes_the_others_score_fingerprint_only_where_speaker_consistency_runs(hide, tmp_path):
    """Turn 1 replayed again (new audio): turn 0's scores depend on it only through speaker consistency."""
    options = signals.SignalOptions()
    hide("torch")  # speaker consistency unavailable: turn 0's record is reused
    before, after = _score_fingerprints(tmp_path, "bbbb", options), _score_fingerprints(tmp_path, "cccc", options)
    assert before[("c", 0)] == after[("c", 0)] and before[("c", 1)] != after[("c", 1)]
    off = signals.SignalOptions(speaker=False)
    assert _score_fingerprints(tmp_path, "bbbb", off)[("c", 0)] == _score_fingerprints(tmp_path, "cccc", off)[("c", 0)]
    hide()  # speaker consistency runs: turn 0 is compared with the new voice, so it is scored again
    before, after = _score_fingerprints(tmp_path, "bbbb", options), _score_fingerprints(tmp_path, "cccc", options)
    assert before[("c", 0)] != after[("c", 0)]
