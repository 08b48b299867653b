"""The hub source goes through huggingface_hub's real snapshot machinery and records the resolved commit.

No network here: the snapshot is laid out in a hub cache exactly as huggingface_hub writes it,
and huggingface_hub (offline mode) resolves the revision from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stepeval.data import loader, sources

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "stepfun-ai/StepEval-Audio-360"


def _hub_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "hub"
    repo = cache / "datasets--stepfun-ai--StepEval-Audio-360"
    snapshot = repo / "snapshots" / COMMIT
    (snapshot / "data").mkdir(parents=True)
    shutil.copy(sources.SAMPLE_DIR / "data" / "sample.parquet", snapshot / "data" / "train-00000-of-00001.parquet")
    shutil.copy(sources.SAMPLE_DIR / "audios.tar.gz", snapshot / "audios.tar.gz")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def test_hub_snapshot_resolves_commit_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    files = sources.from_hub(REPO, None, cache_dir=_hub_cache(tmp_path))
    assert files.provenance == {"kind": "hub", "repo_id": REPO, "revision": None, "commit": COMMIT}
    ds = loader.load(files, cache_dir=tmp_path / "extract")
    assert len(ds.conversations) == 10


def test_unreachable_hub_names_the_dataset_and_the_offline_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError) as caught:
        sources.from_hub(REPO, "v9", cache_dir=tmp_path / "empty")
    assert f"{REPO}@v9" in str(caught.value) and "dataset.source=local" in str(caught.value)
