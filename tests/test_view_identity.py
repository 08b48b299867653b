"""A view's report goes where no other view's can: two views of one run keep two pages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stepeval import views
from stepeval.reporting.report import default_path
from stepeval.reporting.tables import Run


def test_reports_of_two_views_of_one_run_have_their_own_paths(tmp_path: Path):
    names = {"asr": "none", "judge": "none", "metrics": "default"}
    signals_identity = {"version": "signals-v4", "unavailable": {"speaker": None}}
    full = views.describe([("a", 0), ("b", 0)], 2, None, None, {}, signals_identity, {}, names)
    smoke = views.describe([("a", 0)], 2, 1, None, {}, signals_identity, {}, names)
    runs = [Run(tmp_path, {}, pd.DataFrame(), {}, views.View(name, description)) for name, description in (full, smoke)]
    paths = [default_path(run) for run in runs]
    assert paths[0] != paths[1]
    for run, path in zip(runs, paths, strict=True):
        assert path.parent == views.view_dir(tmp_path, run.view.name)  # next to the view's table and summary
    assert default_path(Run(tmp_path, {}, pd.DataFrame())) == tmp_path / "report.html"  # a run made before views
