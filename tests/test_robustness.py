"""``stepeval robustness``: preserve rates and speech tax from real runs of the control systems on the sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepeval.config import compose
from stepeval.pipeline import run
from stepeval.reporting import robustness
from stepeval.reporting.tables import load_run

pytestmark = pytest.mark.slow  # five real runs of the pipeline (scorers in a spawned process)

LEAN = ["metrics.signals.dnsmos=false", "metrics.signals.speaker=false", "metrics.signals.pitch=false", "progress=false"]


@pytest.fixture(scope="module")
def views(tmp_path_factory, isolated_cache) -> dict[tuple[str, str], Path]:
    """parrot and canned on the sample without ASR (the signals that need none), clean, noisy and as text."""
    results = tmp_path_factory.mktemp("robustness")
    out = {}
    for model, conditions in (("parrot", ("clean", "noise_snr0")), ("canned", ("clean", "noise_snr0", "text"))):
        for condition in conditions:
            cfg = compose(["dataset=sample", f"model={model}", "asr=none", f"input={condition}", f"results_dir={results}", *LEAN])
            out[(model, condition)] = run(cfg).view_dir
    return out


def rows_of(groups, model: str) -> dict[tuple[str, str], robustness.Row]:
    (group,) = [g for g in groups if g.model == model]
    return {(r.condition, r.metric): r for r in group.rows}


def test_each_condition_is_its_own_run_and_says_so(views):
    roots = {load_run(v).root for v in views.values()}
    assert len(roots) == len(views)  # no two conditions share a run folder (and so no replies)
    noisy = load_run(views[("parrot", "noise_snr0")])
    assert noisy.manifest["input"] == {
        "name": "noise_snr0",
        "kind": "noise",
        "params": {"snr_db": 0, "color": "white", "talkers": 4},
    }
    assert noisy.summary["input"] == "noise_snr0" and "noise_snr0" in noisy.name
    assert any(n.startswith("INPUT CONDITION noise_snr0") for n in noisy.summary["notes"])
    text = load_run(views[("canned", "text")])
    assert text.manifest["input"]["text_sources"] == {"dataset": 22, "asr": 0}


def test_preserve_rates_of_the_controls(views):
    groups = robustness.build([load_run(v) for v in views.values()], resamples=200)
    parrot, canned = rows_of(groups, "parrot"), rows_of(groups, "canned")
    # parrot speaks the noisy input back: its pauses fill with noise
    silence = parrot[("noise_snr0", "silence_share")]
    assert silence.result.turns == 22 and silence.preserve is not None and silence.preserve < 0.5
    assert silence.result.high < 0 and silence.result.p_value < 0.05
    # canned ignores its input: every metric preserved exactly, clean against noise and audio against text
    scored = [r for r in canned.values() if r.result.turns]  # metrics turned off (dnsmos) are rows without pairs
    assert len(scored) >= 6 and all(r.preserve in (1.0, None) and r.result.difference == 0 for r in scored)
    assert {c for c, _ in canned} == {"noise_snr0", "text"}
    assert all(r.is_tax for (c, _), r in canned.items() if c == "text")


def test_the_command_writes_the_table_and_json(views, tmp_path, capsys):
    paths = [str(v) for v in views.values()]
    code = robustness.main([*paths, "--out", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json"), "--resamples", "200"])
    assert code == 0
    text = (tmp_path / "r.md").read_text()
    assert "### parrot" in text and "### canned" in text and "Speech tax (text - audio)" in text
    assert text in capsys.readouterr().out
    rows = json.loads((tmp_path / "r.json").read_text())
    tax = [r for r in rows if r["kind"] == "text"]
    assert tax and all(r["speech_tax"] == 0 for r in tax if r["turns"])
    parrot = [r for r in rows if r["model"] == "parrot" and r["metric"] == "silence_share"]
    assert len(parrot) == 1 and parrot[0]["difference"] < 0 and parrot[0]["preserve_rate"] < 0.5


def test_a_model_without_its_clean_view_is_an_error(views, capsys):
    assert robustness.main([str(views[("parrot", "noise_snr0")]), str(views[("canned", "clean")])]) == 2
    err = capsys.readouterr().err
    assert "model parrot: no clean view (input=clean)" in err
    assert robustness.main([str(views[("parrot", "clean")])]) == 2
    assert "only clean views given" in capsys.readouterr().err


def test_a_sweep_over_conditions_gives_the_robustness_table_in_the_report(tmp_path, isolated_cache):
    """The issue's demonstration: parrot and canned on the sample over clean and three conditions, in one command
    (the first 4 conversations: 8 runs of the whole sample's ASR take too long for a test)."""
    from stepeval.reporting import report
    from tests.run_helpers import stepeval_run

    conditions = "clean,noise_snrm20,telephone,packet_loss"
    proc = stepeval_run(
        tmp_path, "--multirun", "dataset=sample", "model=parrot,canned", "asr=whisper_base_offline", f"input={conditions}",
        "limit=4", *LEAN[:-1], timeout=3600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweeps"
    table = (sweep / "robustness.md").read_text()
    assert "### parrot" in table and "### canned" in table and table in proc.stdout
    groups = robustness.build(robustness.load([sweep]), resamples=500)
    parrot, canned = rows_of(groups, "parrot"), rows_of(groups, "canned")
    buried = parrot[("noise_snrm20", "speech_detected")]
    turns = buried.result.turns + buried.result.excluded_turns
    assert (
        turns >= 8 and buried.result.turns == turns and buried.preserve < 0.5 and buried.result.high < 0
    )  # parrot repeats the noise
    for condition in ("noise_snrm20", "telephone", "packet_loss"):
        heard = canned[(condition, "speech_detected")]  # canned never listens: nothing to lose
        assert heard.result.turns == turns and heard.preserve == 1.0 and heard.result.difference == 0
    clean_view = next(
        r for r in robustness.load([sweep]) if r.model == "parrot" and robustness.condition_of(r)["kind"] == "clean"
    )
    out = tmp_path / "report.html"
    assert report.main([str(clean_view.root), "--robustness", str(sweep), "--no-audio", "--out", str(out)]) == 0
    html = out.read_text()
    assert 'id="robustness"' in html and "noise_snrm20" in html and "packet_loss" in html
    row = f"<td>noise_snrm20</td><td>speech_detected</td><td>higher is better</td><td>{buried.result.baseline_mean:.3f}</td>"
    assert row in html
