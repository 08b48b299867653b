"""Metric applicability: configuration applied at aggregation, read from the run's manifest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stepeval.applicability import Applicability, canonical
from stepeval.reporting.records import turn_scores
from stepeval.reporting.summary import markdown_table, summarise
from stepeval.store import RecordLog
from tests.run_helpers import latest_view, only_run, stepeval_run

RULES = {
    "voice_control": {"applies_to": ["speech emotion control", "voice instruction following"], "higher_is_better": True},
    "singing_quality": {"applies_to": ["singing"], "higher_is_better": True},
    "flag_clipped": {"applies_to": ["all"], "higher_is_better": False},
}


def make_run(folder: Path, metrics_config: dict | None) -> Path:
    """A run folder as the pipeline leaves it: manifest.json with the config, records/score.jsonl."""
    (folder / "records").mkdir(parents=True)
    config = {"metrics": metrics_config} if metrics_config is not None else {}
    (folder / "manifest.json").write_text(json.dumps({"config": config}), encoding="utf-8")
    log = RecordLog(folder / "records" / "score.jsonl")
    turns = [("a", 0, "Singing"), ("b", 0, "speech-emotion-control"), ("c", 0, "gaming")]
    for conv, turn, category in turns:
        log.append(
            {
                "conversation_id": conv,
                "turn": turn,
                "category": category,
                "language": "en",
                "fingerprint": "x",
                "metrics": {"voice_control": 4.0, "singing_quality": 3.0, "flag_clipped": 0.0, "duration_s": None},
                "missing": {"duration_s": "text-only reply: no speech"},
            }
        )
    log.close()
    return folder


def test_rows_of_a_metric_are_dropped_where_it_does_not_apply(tmp_path):
    run = make_run(tmp_path / "run", {"rules": RULES})
    frame = turn_scores(run)
    cells = set(zip(frame["metric"], frame["category"], strict=True))
    assert ("voice_control", "speech-emotion-control") in cells  # names match case- and hyphen-blind
    assert ("voice_control", "gaming") not in cells and ("voice_control", "Singing") not in cells
    assert ("singing_quality", "Singing") in cells and ("singing_quality", "gaming") not in cells
    assert {c for m, c in cells if m == "flag_clipped"} == {"Singing", "speech-emotion-control", "gaming"}
    # a metric the config does not list applies everywhere, and its missing values stay missing
    duration = frame[frame["metric"] == "duration_s"]
    assert len(duration) == 3 and duration["value"].isna().all()
    assert frame.attrs["not_applicable"]["voice_control"] == ["Singing", "gaming"]

    summary = summarise(frame)
    assert set(summary["metrics"]["singing_quality"]["by_category"]) == {"Singing"}
    assert summary["metrics"]["voice_control"]["overall"] == {"mean": 4.0, "scored": 1, "missing": 0}
    gaming_row = next(line for line in markdown_table(summary).splitlines() if line.startswith("| gaming |"))
    header = next(line for line in markdown_table(summary).splitlines() if line.startswith("| category |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    values = dict(zip(columns, [c.strip() for c in gaming_row.strip("|").split("|")], strict=True))
    assert values["voice_control"] == values["singing_quality"] == "not applicable"  # said, never a number or n/a
    assert values["flag_clipped"] == "0.000 (1/1)"


def test_explicit_applicability_overrides_the_manifest_without_recompute(tmp_path):
    run = make_run(tmp_path / "run", {"rules": RULES})
    everything = turn_scores(run, applicability=Applicability())
    assert len(everything) == 3 * 4
    restricted = turn_scores(run, keys={("a", 0)})
    assert set(restricted["metric"]) == {"singing_quality", "flag_clipped", "duration_s"}


def test_a_run_without_metric_config_keeps_every_row(tmp_path):
    assert len(turn_scores(make_run(tmp_path / "old", None))) == 12
    bare = tmp_path / "bare"
    make_run(bare, None)
    (bare / "manifest.json").unlink()
    assert len(turn_scores(bare)) == 12


def test_directions_and_aliases():
    rules = Applicability(RULES, {"singing": ["唱歌", "singing/rap"]})
    assert rules.higher_is_better("voice_control") is True
    assert rules.higher_is_better("flag_clipped") is False
    assert rules.higher_is_better("duration_s") is None
    assert rules.applies("singing_quality", "唱歌") and rules.applies("singing_quality", "Singing / RAP")
    assert not rules.applies("singing_quality", "gaming")
    assert canonical(" Role_Playing ") == "role playing"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"m": {"applies_to": []}}, "metrics.rules.m.applies_to"),
        ({"m": {"applies_to": ["all", "singing"]}}, "cannot be combined"),
        ({"m": {"applies_to": ["all"], "higher_is_better": "yes"}}, "metrics.rules.m.higher_is_better"),
        ({"m": {"apply_to": ["all"]}}, "unknown key"),
        ({"m": ["singing"]}, "expected a mapping"),
    ],
)
def test_bad_rules_name_the_key(rules, message):
    with pytest.raises(ValueError, match=message):
        Applicability(rules)


def test_bad_manifest_is_a_clear_error(tmp_path):
    run = make_run(tmp_path / "run", {"rules": RULES})
    (run / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="manifest.json"):
        turn_scores(run)


def test_default_metrics_config_composes_and_covers_every_signal():
    from stepeval.config import conf_dir, register_schemas
    from stepeval.signals import scoring as signals

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=["dataset=sample"])
        with pytest.raises(Exception, match="higher_is_better"):
            compose(config_name="config", overrides=["dataset=sample", "metrics.rules.utmos.higher_is_better=maybe"])
    plain = OmegaConf.to_container(cfg.metrics)
    rules = Applicability.from_config(plain)
    assert set(signals.METRICS) <= set(rules.rules)  # every objective signal has a stated direction and scope
    assert not rules.applies("voice_control", "gaming") and rules.applies("voice_control", "speech emotion control")
    assert not rules.applies("language_match", "language ability")  # a translation is answered in another language


def test_pipeline_run_filters_its_table_and_refilters_without_recompute(tmp_path):
    # singing (en) and creativity (zh): the first two sample conversations, through the per-language ASR router
    result = stepeval_run(tmp_path, "dataset=sample", "model=parrot", "asr=whisper_base_routed_offline", "limit=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = only_run(tmp_path)
    engines = {k[0]: r["engine"] for k, r in RecordLog(run / "records" / "asr.jsonl").load().items()}
    assert engines == {"sample-singing-en": "default:faster-whisper", "sample-creativity-zh": "chinese:faster-whisper"}

    summary = json.loads((latest_view(run) / "summary.json").read_text())
    f0 = summary["metrics"]["f0_median_hz"]["by_category"]
    assert set(f0) == {"singing"} and f0["singing"]["scored"] == 2  # pitch means something for singing only here
    assert set(summary["metrics"]["speaker_consistency"]["by_category"]) == {"creativity"}
    dnsmos = summary["metrics"]["dnsmos_ovrl"]["by_category"]
    assert set(dnsmos) == {"singing", "creativity"} and all(c["scored"] == 2 for c in dnsmos.values())

    # the values were computed for every turn: another applicability shows them with no recompute
    everything = turn_scores(run, applicability=Applicability())
    creativity_f0 = everything[(everything["metric"] == "f0_median_hz") & (everything["category"] == "creativity")]
    assert len(creativity_f0) == 2 and not any(math.isnan(v) for v in creativity_f0["value"])
