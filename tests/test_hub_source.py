"""The hub source goes through huggingface_hub's real snapshot machinery and records the resolved commit.

No network here: the snapshot is laid out in a hub cache exactly as huggingface_hub writes it,
and huggingface_hub (offline mode) resolves the revision from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepeval.data import loader, sources
from stepeval.data.columns import ColumnSpec

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


def test_hub_snapshot_resolves_commit_and_loads_through_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    files = sources.from_hub(REPO, None, cache_dir=_hub_cache(tmp_path), datasets_cache=tmp_path / "datasets")
    assert files.provenance["commit"] == COMMIT and files.provenance["kind"] == "hub"
    assert files.provenance["loader"].startswith("datasets ") and files.provenance["split"] == "train"
    assert list((tmp_path / "datasets").rglob("*.arrow"))  # the table went through the datasets cache
    ds = loader.load(files, cache_dir=tmp_path / "extract")
    assert len(ds.conversations) == 10
    assert set(files.hashes()) == {"data/train-00000-of-00001.parquet", "audios.tar.gz"}


OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def test_hub_repo_with_embedded_audio_loads_the_pinned_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A repo in the layout datasets writes for Audio columns (bytes in the parquet), two commits: the revision decides."""
    import huggingface_hub.constants
    import soundfile as sf

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    repo = cache / "datasets--someone--spoken-qa"
    packaged = sources.PACKAGED["spoken_qa_mini"]
    for commit, rows in ((COMMIT, 4), (OTHER, 2)):
        snapshot = repo / "snapshots" / commit
        (snapshot / "data").mkdir(parents=True)
        shutil.copy(packaged / "README.md", snapshot / "README.md")
        table = pd.read_parquet(packaged / "data" / "test-00000-of-00001.parquet")
        pq.write_table(
            pa.Table.from_pandas(table.head(rows), preserve_index=False).replace_schema_metadata(
                pq.read_schema(packaged / "data" / "test-00000-of-00001.parquet").metadata
            ),
            snapshot / "data" / "test-00000-of-00001.parquet",
        )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    spec = ColumnSpec.from_mapping({"conversation_id": "question_id", "turn_index": "none"})
    latest = sources.from_hub("someone/spoken-qa", None, cache_dir=cache, datasets_cache=tmp_path / "datasets")
    pinned = sources.from_hub("someone/spoken-qa", OTHER, cache_dir=cache, datasets_cache=tmp_path / "datasets")
    assert (latest.provenance["commit"], pinned.provenance["commit"]) == (COMMIT, OTHER)
    assert latest.archive is None
    ds = loader.load(latest, spec, cache_dir=tmp_path / "stepeval")
    assert len(loader.load(pinned, spec, cache_dir=tmp_path / "stepeval").conversations) == 2
    assert [c.id for c in ds.conversations] == ["qa-001", "qa-002", "qa-003", "qa-004"]
    assert [c.category for c in ds.conversations] == ["translation", "arithmetic", "translation", "word games"]
    first = ds.conversations[0].turns[0]
    assert first.text == "How do you say thank you in Chinese?" and first.audio_path.suffix == ".flac"
    raw = table.iloc[0]["audio"]["bytes"]
    assert first.audio_path.read_bytes() == raw and sf.info(str(first.audio_path)).samplerate == 16000


def test_unreachable_hub_names_the_dataset_and_the_offline_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError) as caught:
        sources.from_hub(REPO, "v9", cache_dir=tmp_path / "empty")
    assert f"{REPO}@v9" in str(caught.value) and "dataset.source=local" in str(caught.value)
