"""Side-by-side comparison of several runs (the demo's control systems, a multirun sweep)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from stepeval.reporting.summary import OVERALL, format_cell


def load_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a finished stepeval run?")
    return json.loads(path.read_text(encoding="utf-8"))


def _column(summary: dict) -> str:
    """The run's model, and its input condition when it is not the clean one (docs/robustness.md)."""
    condition = summary.get("input") or "clean"
    return summary["model"] if condition == "clean" else f"{summary['model']} ({condition})"


def comparison_table(summaries: list[dict]) -> str:
    """Rows: metrics (overall over all categories); columns: runs; each cell 'mean (scored/total)'."""
    metrics: list[str] = []
    for summary in summaries:
        metrics += [m for m in summary["metrics"] if m not in metrics]
    lines = [
        "| metric | " + " | ".join(_column(s) for s in summaries) + " |",
        "|" + "---|" * (len(summaries) + 1),
    ]
    for metric in metrics:
        cells = [format_cell(s["metrics"].get(metric, {}).get(OVERALL)) for s in summaries]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    runs = "".join(f"\n- `{_column(s)}`: {s['run_name']}" for s in summaries)
    notes = sorted({note for s in summaries for note in s.get("notes", [])})
    text = "\n".join(lines) + "\n\nEach cell: mean (scored/total turns), over all categories. Runs:" + runs + "\n"
    return text + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "")


NOTES_DIR = ".runs"


def note_run(sweep_dir: str | Path, job_num: int, run_dir: str | Path) -> None:
    """A sweep job's run folder, left in the sweep folder for the comparison (jobs may run in other processes)."""
    folder = Path(sweep_dir) / NOTES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{int(job_num)}.txt").write_text(str(Path(run_dir).resolve()), encoding="utf-8")


def note_problems(sweep_dir: str | Path, job_num: int, problems: list[str]) -> None:
    """A sweep job that ended with problems (not accepted by allow_failures): the sweep's exit status says so,
    also when the job ran in another process (submitit), where the launching process sees only its return value."""
    folder = Path(sweep_dir) / NOTES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{int(job_num)}.problems").write_text("\n".join(problems), encoding="utf-8")


def noted_problems(sweep_dir: str | Path) -> dict[int, list[str]]:
    """Job number -> the problems it noted, for the jobs of this sweep that ended unclean."""
    folder = Path(sweep_dir) / NOTES_DIR
    notes = folder.glob("*.problems") if folder.is_dir() else []
    return {int(p.stem): p.read_text(encoding="utf-8").splitlines() for p in sorted(notes, key=lambda p: int(p.stem))}


def noted_runs(sweep_dir: str | Path) -> list[Path]:
    """The run folders sweep jobs noted, in job order."""
    folder = Path(sweep_dir) / NOTES_DIR
    notes = sorted(folder.glob("*.txt"), key=lambda p: int(p.stem)) if folder.is_dir() else []
    return [Path(p.read_text(encoding="utf-8").strip()) for p in notes]


def robustness_table(runs: list[Path], out: Path) -> None:
    """A sweep over input conditions also writes robustness.md (``stepeval robustness`` on the sweep's views)."""
    from stepeval.reporting import robustness

    try:
        groups = robustness.build([robustness.load_run(Path(d)) for d in runs if Path(d).exists()])
    except (FileNotFoundError, ValueError) as err:  # e.g. a model swept without its clean condition
        print(f"robustness table not written: {err}")
        return
    text = robustness.markdown(groups)
    (out / "robustness.md").write_text(text, encoding="utf-8")
    print(f"\n== Robustness (saved to {out / 'robustness.md'}) ==\n{text}")


class SweepComparison(Callback):
    """Hydra callback: after a --multirun, print and save the comparison of the runs it made."""

    def __init__(self) -> None:
        self.run_dirs: list[Path] = []

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        for note in (Path(config.hydra.sweep.dir) / NOTES_DIR).glob("*.*"):  # an earlier sweep's notes
            if note.suffix in (".txt", ".problems"):
                note.unlink()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, (str, Path)):
            self.run_dirs.append(Path(job_return.return_value))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        # submitit jobs ran in other processes (or on other nodes): their runs are known from the sweep's notes
        runs = self.run_dirs or noted_runs(config.hydra.sweep.dir)
        if runs:
            summaries = [load_summary(d) for d in runs if (Path(d) / "summary.json").exists()]
            table = comparison_table(summaries)
            out = Path(config.hydra.sweep.dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "comparison.md").write_text(table, encoding="utf-8")
            print(f"\n== Comparison of {len(summaries)} runs (saved to {out / 'comparison.md'}) ==\n{table}")
            if len({s.get("input") or "clean" for s in summaries}) > 1:  # a sweep over input conditions
                robustness_table(runs, out)
        unclean = noted_problems(config.hydra.sweep.dir)
        if unclean:  # after the table: a sweep with a job that ended unclean exits 1, wherever its jobs ran
            jobs = ", ".join(f"#{n}" for n in unclean)
            print(f"stepeval run: sweep job(s) {jobs} ended with problems (listed in their output): exit status 1")
            raise SystemExit(1)  # Hydra warns about a callback's Exception and goes on; SystemExit ends the sweep
