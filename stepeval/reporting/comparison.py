"""Side-by-side comparison of several runs (the demo's control systems, a multirun sweep)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

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
    """Rows: metrics (overall over all categories); columns: runs; each cell 'mean (scored/total)'.

    A summary with a ``failed`` reason stands for a sweep job that made no run (it failed at setup): its column
    says ``failed`` and its line under the table says why; ``problems`` (a count) marks a run that ended unclean."""
    metrics: list[str] = []
    for summary in summaries:
        metrics += [m for m in summary["metrics"] if m not in metrics]
    lines = [
        "| metric | " + " | ".join(_column(s) for s in summaries) + " |",
        "|" + "---|" * (len(summaries) + 1),
    ]
    for metric in metrics:
        cells = ["failed" if s.get("failed") else format_cell(s["metrics"].get(metric, {}).get(OVERALL)) for s in summaries]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    runs = "".join(f"\n- `{_column(s)}`: {_run_line(s)}" for s in summaries)
    notes = sorted({note for s in summaries for note in s.get("notes", [])})
    text = "\n".join(lines) + "\n\nEach cell: mean (scored/total turns), over all categories. Runs:" + runs + "\n"
    return text + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "")


def _run_line(summary: dict) -> str:
    if summary.get("failed"):
        return f"FAILED, no run: {summary['failed']}"
    problems = summary.get("problems")
    return f"{summary['run_name']}" + (f" (ended with {problems} problem(s): see its output)" if problems else "")


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


def note_failure(sweep_dir: str | Path, job_num: int, model: str, reason: str) -> None:
    """A sweep job that made no run (its model server unreachable, a bad config, an exception): the table lists it
    as failed with this one-line reason, and the sweep exits 1."""
    folder = Path(sweep_dir) / NOTES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    note = {"model": model, "reason": reason.strip().splitlines()[0] if reason.strip() else "failed"}
    (folder / f"{int(job_num)}.failed").write_text(json.dumps(note), encoding="utf-8")


def noted_failures(sweep_dir: str | Path) -> dict[int, dict]:
    """Job number -> {model, reason}, for the jobs of this sweep that failed without a run."""
    folder = Path(sweep_dir) / NOTES_DIR
    notes = folder.glob("*.failed") if folder.is_dir() else []
    return {int(p.stem): json.loads(p.read_text(encoding="utf-8")) for p in notes}


def noted_problems(sweep_dir: str | Path) -> dict[int, list[str]]:
    """Job number -> the problems it noted, for the jobs of this sweep that ended unclean."""
    folder = Path(sweep_dir) / NOTES_DIR
    notes = folder.glob("*.problems") if folder.is_dir() else []
    return {int(p.stem): p.read_text(encoding="utf-8").splitlines() for p in sorted(notes, key=lambda p: int(p.stem))}


def noted_runs(sweep_dir: str | Path) -> list[Path]:
    """The run folders sweep jobs noted, in job order."""
    return list(_noted_run_dirs(sweep_dir).values())


def _noted_run_dirs(sweep_dir: str | Path) -> dict[int, Path]:
    folder = Path(sweep_dir) / NOTES_DIR
    notes = sorted(folder.glob("*.txt"), key=lambda p: int(p.stem)) if folder.is_dir() else []
    return {int(p.stem): Path(p.read_text(encoding="utf-8").strip()) for p in notes}


def sweep_summaries(sweep_dir: str | Path) -> list[dict]:
    """One summary per sweep job, in job order: the run's, marked with its problem count, or a stand-in for a job
    that failed without a run (``failed``: its reason)."""
    runs, failures, problems = _noted_run_dirs(sweep_dir), noted_failures(sweep_dir), noted_problems(sweep_dir)
    out = []
    for num in sorted({*runs, *failures}):
        run_dir = runs.get(num)
        if run_dir is not None and (run_dir / "summary.json").exists():
            summary = load_summary(run_dir)
            out.append({**summary, "problems": len(problems.get(num, []))})
        else:
            failure = failures.get(num) or {"model": f"job #{num}", "reason": f"{run_dir} has no summary.json"}
            out.append({"model": failure["model"], "run_name": None, "metrics": {}, "failed": failure["reason"]})
    return out


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

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        for note in (Path(config.hydra.sweep.dir) / NOTES_DIR).glob("*.*"):  # an earlier sweep's notes
            if note.suffix in (".txt", ".problems", ".failed"):
                note.unlink()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        """Runs where the job ran (for submitit, in its process): a job that raised is noted as failed."""
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the exception (reading return_value would raise it)
            model = OmegaConf.select(config, "model.name", default=None) or f"job #{config.hydra.job.num}"
            note_failure(config.hydra.sweep.dir, config.hydra.job.num, str(model), f"{type(error).__name__}: {error}")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        # every job (in this process or, with submitit, in its own) left its run or its failure in the sweep's notes
        summaries = sweep_summaries(config.hydra.sweep.dir)
        if summaries:
            table = comparison_table(summaries)
            out = Path(config.hydra.sweep.dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "comparison.md").write_text(table, encoding="utf-8")
            print(f"\n== Comparison of {len(summaries)} runs (saved to {out / 'comparison.md'}) ==\n{table}")
            if len({s.get("input") or "clean" for s in summaries if not s.get("failed")}) > 1:  # a sweep over conditions
                robustness_table(list(_noted_run_dirs(config.hydra.sweep.dir).values()), out)
        unclean = sorted({*noted_problems(config.hydra.sweep.dir), *noted_failures(config.hydra.sweep.dir)})
        if unclean:  # after the table: a sweep with a job that ended unclean exits 1, wherever its jobs ran
            jobs = ", ".join(f"#{n}" for n in unclean)
            print(f"stepeval run: sweep job(s) {jobs} ended with problems (listed in their output): exit status 1")
            raise SystemExit(1)  # Hydra warns about a callback's Exception and goes on; SystemExit ends the sweep
