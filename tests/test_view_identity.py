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


def test_int8_on_a_cpu_names_the_kernels_its_transcripts_depend_on(monkeypatch):
    from stepeval.asr.engines import WhisperASR

    def identity(compute_type: str, device: str = "cpu") -> dict:
        return WhisperASR("packaged:whisper-base", device=device, compute_type=compute_type).identity()

    assert "cpu_int8_kernels" not in identity("float32")  # the same transcripts on any x86-64 CPU
    assert "cpu_int8_kernels" not in identity("int8", device="cuda")
    monkeypatch.setenv("CT2_USE_MKL", "1")
    on_mkl = identity("int8")
    monkeypatch.setenv("CT2_USE_MKL", "0")
    on_onednn = identity("int8_float32")
    assert on_mkl["cpu_int8_kernels"].startswith("mkl/") and on_onednn["cpu_int8_kernels"].startswith("onednn/")
    assert on_mkl["compute_type"] == "int8"  # and the compute type itself, as always


def test_packaged_cpu_asr_configs_decode_in_float32():
    """The offline configs (demo, tests) must give one transcript per clip on every CPU: no int8 kernels."""
    import yaml

    from stepeval.config import conf_dir

    def engines(node: dict):
        if isinstance(node, dict):
            if node.get("_target_", "").endswith("WhisperASR"):
                yield node
            for value in node.values():
                yield from engines(value)

    offline = [path for path in (conf_dir() / "asr").glob("*.yaml") if "packaged:" in path.read_text()]
    assert offline
    for path in offline:
        found = list(engines(yaml.safe_load(path.read_text())))
        assert found and all(e["compute_type"] == "float32" for e in found), path.name
