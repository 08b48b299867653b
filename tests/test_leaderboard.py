"""`stepeval leaderboard` over the real silence and parrot demo runs: four formats that agree with the runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from stepeval.cli import main as cli
from tests.run_helpers import raw_metric_values

pytestmark = pytest.mark.slow  # real demo runs (subprocess, whisper base)


def expected(run: Path) -> pd.DataFrame:
    """Per metric, straight from the run's score records (read by hand): mean over scored turns, counts."""
    rows = {}
    for metric, values in raw_metric_values(run).items():
        scored = [v for v in values if v is not None]
        rows[metric] = {
            "mean": sum(scored) / len(scored) if scored else None,
            "scored": len(scored),
            "missing": len(values) - len(scored),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.fixture(scope="module")
def board(demo_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaderboard")
    code = cli(["leaderboard", str(demo_runs["silence"]), str(demo_runs["parrot"]), "--out", str(out)])
    assert code == 0
    return out


def test_all_four_formats_are_written(board: Path):
    assert sorted(p.name for p in board.iterdir()) == ["leaderboard.csv", "leaderboard.json", "leaderboard.md", "leaderboard.tex"]


def test_csv_numbers_match_each_runs_turn_scores(board: Path, demo_runs: dict[str, Path]):
    table = pd.read_csv(board / "leaderboard.csv")
    table = table[table["status"] == "measured"]  # the paper's rows are listed apart (test below)
    assert sorted(table["model"]) == ["parrot", "silence"]
    for model, run in demo_runs.items():
        row = table[table["model"] == model].iloc[0]
        assert row["run"] == run.name
        for metric, want in expected(run).iterrows():
            assert row[f"{metric}_scored"] == want["scored"], (model, metric)
            assert row[f"{metric}_missing"] == want["missing"], (model, metric)
            if want["scored"]:
                assert row[f"{metric}_mean"] == pytest.approx(want["mean"]), (model, metric)
                if row[f"{metric}_conversations"] >= 2:  # one scored conversation gives no interval (stats.py)
                    assert row[f"{metric}_low"] <= row[f"{metric}_mean"] <= row[f"{metric}_high"]
                else:
                    assert pd.isna(row[f"{metric}_low"]) and pd.isna(row[f"{metric}_high"])
            else:
                assert pd.isna(row[f"{metric}_mean"]) and row[f"{metric}_status"] == "no scored turn"


def test_json_numbers_match_each_runs_turn_scores(board: Path, demo_runs: dict[str, Path]):
    data = json.loads((board / "leaderboard.json").read_text())
    assert data["interval"]["method"] == "cluster bootstrap over conversations" and data["interval"]["seed"] == 0
    assert data["directions"]["silence_share"] == "lower is better"
    rows = {row["model"]: row for row in data["rows"]}
    for model, run in demo_runs.items():
        for metric, want in expected(run).iterrows():
            cell = rows[model]["metrics"][metric]
            assert (cell["scored"], cell["missing"]) == (want["scored"], want["missing"])
            if want["scored"]:
                assert cell["mean"] == pytest.approx(want["mean"])
    # silence never speaks, parrot always does: the table must say so
    assert rows["silence"]["metrics"]["speech_detected"]["mean"] == 0.0
    assert rows["parrot"]["metrics"]["speech_detected"]["mean"] == 1.0


def test_markdown_and_latex_show_every_run_with_intervals(board: Path, demo_runs: dict[str, Path]):
    markdown = (board / "leaderboard.md").read_text()
    latex = (board / "leaderboard.tex").read_text()
    for run in demo_runs.values():
        assert run.name in markdown and run.name in latex
    assert "(22/22)" in markdown and "cluster-bootstrap" in markdown
    assert "\\begin{tabular}" in latex and "speech\\_detected" in latex  # underscores escaped for LaTeX
    assert "\\end{table}" in latex


def test_a_metric_no_run_computed_shows_as_not_run(demo_runs: dict[str, Path], tmp_path: Path):
    runs_parent = demo_runs["parrot"].parent  # a folder of runs stands for the runs in it
    code = cli(["leaderboard", str(runs_parent), "--out", str(tmp_path), "--metrics", "speech_detected", "factuality"])
    assert code == 0
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "not run" in markdown and "factuality" in markdown
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["metrics"] == ["speech_detected", "factuality"]
    assert data["rows"][0]["metrics"]["factuality"] == {"status": "not run"}
    table = pd.read_csv(tmp_path / "leaderboard.csv")
    table = table[table["status"] == "measured"]  # the paper's published factuality rows are listed apart
    assert list(table["factuality_status"]) == ["not run"] and table["factuality_mean"].isna().all()


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "empty").mkdir()
    assert cli(["leaderboard", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "empty" in capsys.readouterr().err


def test_a_stepeval360_board_carries_the_papers_rows_marked_and_apart(demo_runs: dict[str, Path], tmp_path: Path):
    """The bundled sample is shaped like StepEval-Audio-360 (benchmark: stepeval360): a board that shows the paper's
    metrics carries its Table 5 rows beside the measured ones, marked reported-not-reproduced with their source and
    judge, in every format; a board without those metrics has none."""
    from stepeval.reporting import paper

    published = {ref.model: ref for ref in paper.TABLE5}
    board = tmp_path / "board"
    wanted = ["speech_detected", "factuality", "relevance", "chat_score"]
    runs = [str(demo_runs["silence"]), str(demo_runs["parrot"])]
    assert cli(["leaderboard", *runs, "--out", str(board), "--metrics", *wanted]) == 0
    table = pd.read_csv(board / "leaderboard.csv")
    refs = table[table["status"] == paper.STATUS]
    assert sorted(refs["model"]) == sorted(published)
    for _, row in refs.iterrows():
        assert row["chat_score_mean"] == pytest.approx(published[row["model"]].values["Chat Score"])
        assert row["relevance_mean"] == pytest.approx(published[row["model"]].values["Relevance %"] / 100)
        assert "Table 5" in row["source"] and "GPT-4o" in row["judge"]
        assert row["speech_detected_status"] == "not run"  # the paper has no such column
    data = json.loads((board / "leaderboard.json").read_text())
    assert {r["model"] for r in data["published"]} == set(published)
    assert {r["model"] for r in data["rows"]} == {"parrot", "silence"}  # never ranked among the measured rows
    markdown = (board / "leaderboard.md").read_text()
    measured, _, apart = markdown.partition("Published rows")
    assert "GLM4-Voice" not in measured and "GLM4-Voice" in apart and paper.STATUS in apart
    assert "tab:stepeval-published" in (board / "leaderboard.tex").read_text()
    plain = tmp_path / "plain"
    assert cli(["leaderboard", str(demo_runs["parrot"]), "--out", str(plain), "--metrics", "speech_detected"]) == 0
    assert json.loads((plain / "leaderboard.json").read_text())["published"] == []


def test_arena_strengths_stand_in_their_own_column(demo_runs: dict[str, Path], tmp_path: Path):
    from stepeval.arena.ranking import Outcome, rank_systems

    outcomes = [Outcome(f"c{k}", 0, 1, 1.0) for k in range(8)] + [Outcome("c8", 0, 1, 0.0)]
    arena = {"overall": rank_systems(["parrot", "silence"], outcomes, resamples=200).to_json()}
    (tmp_path / "arena.json").write_text(json.dumps(arena))
    out = tmp_path / "board"
    code = cli(["leaderboard", str(demo_runs["parrot"]), str(demo_runs["silence"]), "--arena", str(tmp_path / "arena.json")]
               + ["--out", str(out)])  # fmt: skip
    assert code == 0
    table = pd.read_csv(out / "leaderboard.csv")
    measured = table[table["status"] == "measured"].set_index("model")
    strengths = {row["system"]: row for row in arena["overall"]["systems"]}
    for model in ("parrot", "silence"):
        assert measured.loc[model, "arena_strength"] == pytest.approx(strengths[model]["strength"])
        assert measured.loc[model, "arena_rank"] == strengths[model]["rank"]
    assert "arena strength" in (out / "leaderboard.md").read_text()
    assert cli(["leaderboard", str(demo_runs["parrot"]), "--arena", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
