"""End to end on the bundled sample: the run folder's contents, failed turns, and the demo comparison."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

import scripts.readme_demo as readme_demo
from stepeval.data import loader, sources
from stepeval.store import RecordLog
from tests.hide_packages import hide_fixture  # noqa: F401  (the `hide` fixture)
from tests.run_helpers import latest_view, only_run, stable_records, stepeval_run, summary

pytestmark = pytest.mark.slow  # subprocess runs with real ASR
# a hang, not a slow machine: the demo takes 2-3 min on 2 idle cores, and took 58 min on 2 cores shared by eight
# engineers' jobs (load average 20), where a 1800 s guard tripped
HANG_GUARD_S = 5400


def test_parrot_run_writes_manifest_records_audio_summary_table(tmp_path: Path):
    result = stepeval_run(tmp_path, "dataset=sample", "model=parrot", "asr=whisper_base_offline", "limit=3")
    assert result.returncode == 0, result.stderr
    run_dir = only_run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["finished_at"]
    assert manifest["dataset"]["provenance"]["kind"] == "sample"
    assert set(manifest["dataset"]["files_sha256"]) == {"data/sample.parquet", "audios.tar.gz"}
    assert manifest["asr"]["model_sha256"] and manifest["packages"]["faster-whisper"]
    assert manifest["config"]["model"]["name"] == "parrot" and manifest["history"] == "audio"
    assert "git_commit" in manifest["code_revision"]

    dataset = loader.load(sources.bundled_sample(), limit=3)
    replays = RecordLog(run_dir / "records" / "replay.jsonl").load()
    asr = RecordLog(run_dir / "records" / "asr.jsonl").load()
    assert len(replays) == sum(len(c.turns) for c in dataset.conversations)
    english = []
    for conv in dataset.conversations:
        for turn in conv.turns:
            record = replays[(conv.id, turn.index)]
            reply, rate = sf.read(run_dir / record["audio"], dtype="float32")
            user, user_rate = sf.read(turn.audio_path, dtype="float32")
            assert rate == user_rate and abs(len(reply) - len(user)) <= 1  # the parrot spoke the user's turn back
            if conv.language == "en":
                english.append((turn.text, asr[(conv.id, turn.index)]["text"]))
    # real ASR of the parroted English speech recovers the user's words
    assert english and all(
        len(set(ref.lower().split()) & set(hyp.lower().split())) >= len(ref.split()) // 2 for ref, hyp in english
    )
    table = (latest_view(run_dir) / "table.md").read_text()
    assert "| **overall** |" in table and "LLM judge not run" in table
    got = summary(run_dir)
    assert got["metrics"]["speech_detected"]["overall"]["scored"] == len(replays)


def test_failed_turns_are_recorded_run_goes_on_and_rerun_retries_only_them(tmp_path: Path):
    """Recorded replies with one file missing: that turn fails, the rest of its conversation is
    skipped (its history would be wrong), other conversations finish; supplying the file and
    rerunning computes only what was missing."""
    dataset = loader.load(sources.bundled_sample(), limit=3)
    replies = tmp_path / "replies"
    for conv in dataset.conversations:
        for turn in conv.turns:
            (replies / conv.id).mkdir(parents=True, exist_ok=True)
            shutil.copy(turn.audio_path, replies / conv.id / f"turn_{turn.index}.wav")
            (replies / conv.id / f"turn_{turn.index}.txt").write_text(f"reply {turn.index}")
    victim = dataset.conversations[1]
    hidden = replies / victim.id / "turn_0.wav"
    hidden.rename(tmp_path / "held.wav")
    overrides = ["dataset=sample", "model=recorded", f"model.backend.folder={replies}", "asr=none", "limit=3"]

    first = stepeval_run(tmp_path / "results", *overrides)
    assert first.returncode == 1, "a run with a failed turn must not exit 0"
    assert f"replay: 1 failed and {len(victim.turns) - 1} skipped of 7 records" in first.stderr
    run_dir = only_run(tmp_path / "results")
    records = stable_records(run_dir, "replay")
    assert records[(victim.id, 0)]["status"] == "failed" and "turn_0" in records[(victim.id, 0)]["error"]
    assert all(records[(victim.id, t.index)]["status"] == "skipped" for t in victim.turns[1:])
    others = [(c.id, t.index) for c in dataset.conversations if c is not victim for t in c.turns]
    assert all(records[key]["status"] == "ok" for key in others)
    got = summary(run_dir)
    assert got["turns"]["failed"] == 1 and got["turns"]["skipped"] == len(victim.turns) - 1
    duration = got["metrics"]["duration_s"]["overall"]
    assert duration["missing"] == len(victim.turns) and duration["scored"] == len(others)
    assert f"{len(victim.turns)} record(s) failed or were skipped" in (latest_view(run_dir) / "table.md").read_text()

    (tmp_path / "held.wav").rename(hidden)
    second = stepeval_run(tmp_path / "results", *overrides)
    assert second.returncode == 0, second.stderr
    total = len(others) + len(victim.turns)
    assert f"replay: {total} records: {len(others)} reused, {len(victim.turns)} computed" in second.stdout
    assert summary(run_dir)["metrics"]["duration_s"]["overall"]["missing"] == 0


def test_demo_multirun_prints_the_comparison_the_readme_shows(tmp_path: Path, repo: Path):
    """`make eval`'s exact command: the four controls on the whole sample. The README's table must be what it prints,
    every cell as printed (counts and values): the offline ASR decodes in float32, whose transcripts do not depend on
    the CPU (docs/performance.md). Regenerate it with `make readme-demo` when a change moves a number on purpose. No
    wall-clock limit a loaded machine trips: the timeout only guards against a hang (HANG_GUARD_S)."""
    result = stepeval_run(
        tmp_path,
        "--multirun",
        "dataset=sample",
        "model=silence,noise,parrot,canned",
        "asr=whisper_base_offline",
        "judge=none",
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    comparison = (tmp_path / "sweeps" / "comparison.md").read_text()
    assert "Comparison of 4 runs" in result.stdout
    printed = readme_demo.table_lines(comparison)
    shown = readme_demo.readme_block((repo / "README.md").read_text())
    assert [line.split("|")[1] for line in shown] == [line.split("|")[1] for line in printed], "stale: make readme-demo"
    for old, new in zip(shown, printed, strict=True):
        cells_old = [c.strip() for c in old.strip().strip("|").split("|")]
        cells_new = [c.strip() for c in new.strip().strip("|").split("|")]
        for column, (a, b) in enumerate(zip(cells_old, cells_new, strict=True)):
            assert a == b, f"README cell {cells_old[0]} / column {column}: {a!r}, the demo printed {b!r} (make readme-demo)"
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")][1:] for line in printed[2:]}
    models = [c.strip() for c in printed[0].strip("|").split("|")][1:]
    assert models == ["silence", "noise", "parrot", "canned"]
    speech = dict(zip(models, rows["speech_detected"], strict=True))
    # a sound pipeline ranks the controls: no speech from silence or noise, speech from parrot and canned
    assert speech["silence"].startswith("0.000") and speech["noise"].startswith("0.000")
    assert speech["parrot"].startswith("1.000") and speech["canned"].startswith("1.000")
    assert rows["language_match"][0].startswith("n/a (0/")  # silence: reply language unknown, not 0


def test_transcript_history_refuses_turns_without_transcripts():
    import dataclasses

    import pytest

    from stepeval.pipeline import _check_history_inputs

    dataset = loader.load(sources.bundled_sample(), limit=2)
    _check_history_inputs("transcript", dataset)  # the sample has transcripts
    first = dataset.conversations[0]
    stripped = dataclasses.replace(first, turns=tuple(dataclasses.replace(t, text=None) for t in first.turns))
    dataset.conversations[0] = stripped
    _check_history_inputs("audio", dataset)  # the audio policy does not need them
    with pytest.raises(ValueError, match=rf"{first.id} turn 0.*dataset.columns.text"):
        _check_history_inputs("transcript", dataset)


def _run_in_process(results: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from stepeval import pipeline
    from stepeval.config import conf_dir, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[*overrides, f"results_dir={results}", "progress=false", "workers.overlap=false"],
        )
    return pipeline.run(cfg)  # overlap off: scoring in this process's threads, which see the hidden packages


def test_a_rerun_reuses_every_score_record_and_view_when_only_an_unavailable_reason_changed(
    tmp_path: Path, hide, capsys: pytest.CaptureFixture
):
    """The user's sequence: a run without Resemblyzer, then `pip install resemblyzer` without torch. The reason
    changes ('resemblyzer' -> 'torch'), no number does: the second run reuses every score record, keeps the view."""
    overrides = ("dataset=sample", "model=parrot", "asr=none", "judge=none", "limit=2")
    hide("resemblyzer")
    first = _run_in_process(tmp_path, *overrides)
    printed = capsys.readouterr()
    assert "score: 4 records: 0 reused, 4 computed" in printed.out
    assert any("'resemblyzer'" in p for p in first.problems), first.problems
    hide("torch")
    second = _run_in_process(tmp_path, *overrides)
    printed = capsys.readouterr()
    assert "score: 4 records: 4 reused, 0 computed" in printed.out, printed.out
    assert any("'torch'" in p for p in second.problems)  # the current reason is what the run reports
    assert second.view_dir == first.view_dir and len(list((first.root / "views").iterdir())) == 1
    assert len((first.root / "records" / "score.jsonl").read_text().splitlines()) == 4  # nothing appended
