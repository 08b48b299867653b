"""What a no-op rerun pays before any work: no SDK import for a run that talks to no endpoint, and each
multirun job's config composed once (Hydra's sweeper composes every job to check the batch; ours hands
those configs to the launcher instead of composing them again). Timings are `make bench` material
(docs/performance.md); these tests check the mechanisms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.run_helpers import stepeval_run

REPO = Path(__file__).resolve().parents[1]


def test_the_pipeline_and_the_hydra_app_import_without_the_openai_sdk():
    code = (
        "import sys\n"
        "import stepeval.pipeline, stepeval.hydra_app, stepeval.stages.judge, stepeval.transport\n"
        "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith('openai.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def test_a_multirun_composes_each_job_once_and_a_bad_job_stops_the_batch_before_any_runs(tmp_path: Path):
    counter = tmp_path / "compositions.txt"
    probe = (
        "import sys\n"
        "from hydra._internal.config_loader_impl import ConfigLoaderImpl\n"
        "real = ConfigLoaderImpl.load_sweep_config\n"
        "def counted(self, master_config, sweep_overrides):\n"
        f"    open({str(counter)!r}, 'a').write(' '.join(sweep_overrides) + '\\n')\n"
        "    return real(self, master_config, sweep_overrides)\n"
        "ConfigLoaderImpl.load_sweep_config = counted\n"
        "from stepeval.cli import main\n"
        "sys.exit(main())\n"
    )
    common = ["dataset=sample", "asr=none", "limit=1", f"results_dir={tmp_path / 'results'}", "progress=false"]
    run = subprocess.run(
        [sys.executable, "-c", probe, "run", "--multirun", "model=silence,noise", *common],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    composed = counter.read_text().splitlines()
    assert sorted(line for line in composed) == sorted(set(composed)), composed  # each job once
    assert sorted(line.split()[0] for line in composed) == ["model=noise", "model=silence"]
    assert "compose_once" in (tmp_path / "results" / "sweeps" / "multirun.yaml").read_text()

    bad = stepeval_run(tmp_path / "bad", "--multirun", "model=silence,no_such_model", "dataset=sample", "asr=none")
    assert bad.returncode != 0 and "model/no_such_model" in bad.stderr + bad.stdout
    assert not (tmp_path / "bad").exists() or not [p for p in (tmp_path / "bad").iterdir() if p.name != "sweeps"]
