"""Category x metric tables with cluster-bootstrap intervals and counts, for one run or many.

Every cell is an ``Interval``: mean, 95% interval, scored and missing counts. A metric that a
run never produced (no judge ran) is "not run", never blank and never 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stepeval import views
from stepeval.applicability import Applicability
from stepeval.reporting.records import turn_scores
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, Interval, cluster_bootstrap, metric_frame
from stepeval.views import View

OVERALL = "overall"
NOT_RUN = "not run"
NOT_APPLICABLE = "not applicable"


@dataclass
class Run:
    """What the reporting commands need from one view of a run folder."""

    root: Path
    manifest: dict
    scores: pd.DataFrame  # records.turn_scores output
    summary: dict = field(default_factory=dict)
    view: View | None = None  # None: a run made before views existed

    @property
    def name(self) -> str:
        return str(self.manifest.get("run_name") or self.root.name)

    @property
    def subset(self) -> str:
        """'subset: 2 of 10 conversations' when the view covers part of the dataset, else ''."""
        return self.view.label if self.view is not None else ""

    @property
    def label(self) -> str:
        """The run's name, marked when it is a subset."""
        return f"{self.name} [{self.subset}]" if self.subset else self.name

    def provenance(self) -> dict[str, object]:
        """What the view's numbers depend on besides the replies: judge (model, endpoint, settings, rubric
        sha256s), ASR identity, signals identity and the metrics config."""
        if self.view is not None:
            d = self.view.description
            judge = {k: v for k, v in (d.get("judge") or {}).items() if k not in ("usage", "name")}
            return {"judge": judge, "asr": d.get("asr"), "signals": d.get("signals"), "metrics": d.get("metrics")}
        config = self.manifest.get("config") or {}
        judge = {k: v for k, v in (self.manifest.get("judge") or {}).items() if k not in ("usage", "name")}
        return {"judge": judge, "asr": self.manifest.get("asr"), "signals": None, "metrics": config.get("metrics")}

    @property
    def model(self) -> str:
        return str(_get(self.manifest, "config", "model", "name") or self.summary.get("model") or "?")

    @property
    def applicability(self) -> Applicability:
        """The view's metrics config (which metric applies where, which direction is better); a run made
        before views uses its manifest's, and one without any the packaged default."""
        if self.view is not None and self.view.description.get("metrics"):
            return Applicability.from_config(self.view.description["metrics"])
        return Applicability.from_config(_get(self.manifest, "config", "metrics") or packaged_metrics_config())

    def configured_metrics(self) -> list[str]:
        """Every metric the metrics config names (a table shows them, as "not run" where absent)."""
        return list(self.applicability.rules)

    def metrics(self) -> list[str]:
        """Metrics with at least one row in this run, in record order."""
        return list(dict.fromkeys(self.scores["metric"]))


def _get(data: dict, *path: str):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def load_run(path: Path) -> Run:
    """Read a view of a run (``<run>/views/<name>``, or a run folder holding one view); a folder that is
    not a stepeval run is an error naming it."""
    root, view = views.resolve(Path(path))
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{root}: no manifest.json, not a stepeval run folder (expected results/<run>/)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path}: not valid JSON ({err})") from err
    summary_path = (views.view_dir(root, view.name) if view is not None else root) / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    return Run(root, manifest, turn_scores(root, view=view), summary, view)


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run or view folders as given; a folder without a manifest (a sweep folder, results/) stands for the
    runs inside it."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "manifest.json").is_file() or (path / views.VIEW_FILE).is_file():
            found.append(path)
            continue
        inner = sorted(p.parent for p in path.glob("*/manifest.json")) if path.is_dir() else []
        if not inner:
            raise FileNotFoundError(f"{path}: neither a run folder (manifest.json) nor a folder of runs")
        found.extend(inner)
    return list(dict.fromkeys(found))


def packaged_metrics_config() -> dict:
    """conf/metrics/default.yaml as shipped: the directions for runs that recorded no metrics config."""
    import yaml

    from stepeval.config import conf_dir

    return yaml.safe_load((conf_dir() / "metrics" / "default.yaml").read_text(encoding="utf-8"))


def direction(metric: str, run: Run | None = None) -> bool | None:
    """True if higher is better, False if lower is, None if neither (or unknown): from the metrics config,
    the one place directions are declared."""
    base = metric.removesuffix("_corpus")
    applicability = run.applicability if run is not None else Applicability.from_config(packaged_metrics_config())
    return applicability.higher_is_better(base)


def direction_word(higher_is_better: bool | None) -> str:
    return {True: "higher is better", False: "lower is better"}.get(higher_is_better, "neutral")


def interval(frame: pd.DataFrame, metric: str, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> Interval:
    return cluster_bootstrap(metric_frame(frame, metric), resamples=resamples, seed=seed)


def category_table(
    frame: pd.DataFrame,
    metrics: list[str] | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict:
    """{"categories": [...], "metrics": {metric: {"overall": Interval | None, "by_category": {cat: Interval}}}}.

    A requested metric with no rows in ``frame`` maps to None ("not run").
    """
    metrics = metrics or list(dict.fromkeys(frame["metric"]))
    categories = sorted(frame["category"].dropna().unique().tolist()) if len(frame) else []
    not_applicable = frame.attrs.get("not_applicable", {}) or {}
    out: dict = {"categories": categories, "metrics": {}, "seed": seed, "resamples": resamples, "not_applicable": not_applicable}
    for metric in metrics:
        part = metric_frame(frame, metric)
        if part.empty:
            out["metrics"][metric] = None
            continue
        by_category = {
            cat: cluster_bootstrap(group, resamples=resamples, seed=seed) for cat, group in part.groupby("category", sort=True)
        }
        out["metrics"][metric] = {OVERALL: cluster_bootstrap(part, resamples=resamples, seed=seed), "by_category": by_category}
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_interval(cell: Interval | None, digits: int = 3) -> str:
    """'0.727 [0.523, 0.909] (22/22)': mean, 95% interval, scored/total turns."""
    if cell is None:
        return NOT_RUN
    counts = f"({cell.scored}/{cell.scored + cell.missing})"
    if cell.mean is None:
        return f"n/a {counts}"
    if cell.low is None:
        return f"{fmt(cell.mean, digits)} [n/a: {cell.conversations} conv.] {counts}"
    return f"{fmt(cell.mean, digits)} [{fmt(cell.low, digits)}, {fmt(cell.high, digits)}] {counts}"


CELL_LEGEND = (
    "Each cell: mean over scored turns [95% cluster-bootstrap interval, conversations resampled] "
    "(scored/total turns); n/a: no turn could be scored; not run: the metric was not computed in this run; "
    "not applicable: the metric does not apply to the category (metrics config)."
)


def absent_cell(table: dict, metric: str, category: str) -> str:
    """A category without rows for a metric: excluded by the applicability config, or simply no turns."""
    return NOT_APPLICABLE if category in table.get("not_applicable", {}).get(metric, []) else "n/a (0/0)"


def escape_markdown(text: str) -> str:
    """Record text inside a Markdown table cell: pipes and newlines would break the row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
