"""Loading StepEval-Audio-360-shaped data whose schema is unknown: both layouts, mapping, clear failures."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stepeval.data import loader, sources
from stepeval.data.columns import ColumnSpec, SchemaError

SAMPLE = sources.SAMPLE_DIR


def _stepeval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stepeval.cli", *args], capture_output=True, text=True, timeout=120)


def _copy_with_table(tmp_path: Path, frame: pd.DataFrame) -> Path:
    root = tmp_path / "dataset"
    (root / "data").mkdir(parents=True)
    shutil.copy(SAMPLE / "audios.tar.gz", root / "audios.tar.gz")
    frame.to_parquet(root / "data" / "train-00000-of-00001.parquet", index=False)
    return root


def _as_turn_rows(renamed: bool) -> pd.DataFrame:
    """The sample re-laid as one row per turn, optionally with unfamiliar column names."""
    table = pd.read_parquet(SAMPLE / "data" / "sample.parquet")
    rows = []
    for _, conv in table.iterrows():
        for index, turn in enumerate(conv["turns"]):
            rows.append(
                {
                    "dialog_id": conv["conversation_id"],
                    "round": index,
                    "task": conv["category"],
                    "lang": conv["language"],
                    "wav_path": turn["audio"],
                    "transcript": turn["text"],
                }
            )
    frame = pd.DataFrame(rows).iloc[::-1]  # rows out of order: the turn index must restore it
    if renamed:
        frame = frame.rename(columns={"dialog_id": "sess", "round": "k", "wav_path": "clip", "task": "kind"})
    return frame


def test_sample_loads_with_every_category_and_two_languages():
    ds = loader.load(sources.bundled_sample())
    assert ds.mapping.layout == "conversation"
    assert len(ds.counts("category")) == 9
    assert set(ds.counts("language")) >= {"en", "zh"}
    assert all(2 <= len(c.turns) <= 3 for c in ds.conversations)
    assert all(t.audio_path.exists() for c in ds.conversations for t in c.turns)


def test_inspect_sample_prints_schema_and_counts():
    result = _stepeval("data", "inspect", "sample")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    table = pd.read_parquet(SAMPLE / "data" / "sample.parquet")
    turns = sum(len(t) for t in table["turns"])
    for column in table.columns:
        assert f"  {column}:" in out
    assert f"conversations: {len(table)}  user turns: {turns}" in out
    assert "  speech emotion control: 1" in out and "  zh: " in out
    assert "unresolved audio references: 0" in out


def test_turn_layout_is_detected_and_reordered(tmp_path: Path):
    root = _copy_with_table(tmp_path, _as_turn_rows(renamed=False))
    ds = loader.load(sources.from_local(root))
    reference = loader.load(sources.bundled_sample())
    assert ds.mapping.layout == "turn"
    by_id = {c.id: c for c in ds.conversations}
    for conv in reference.conversations:
        got = by_id[conv.id]
        assert [t.text for t in got.turns] == [t.text for t in conv.turns]
        assert [t.audio_path.name for t in got.turns] == [t.audio_path.name for t in conv.turns]
        assert (got.category, got.language) == (conv.category, conv.language)


def test_renamed_columns_fail_naming_what_was_found(tmp_path: Path):
    root = _copy_with_table(tmp_path, _as_turn_rows(renamed=True))
    with pytest.raises(SchemaError) as caught:
        loader.load(sources.from_local(root))
    message = str(caught.value)
    for column in ("sess", "k", "clip", "kind", "lang", "transcript"):
        assert column in message
    assert "dataset.columns" in message
    result = _stepeval("data", "inspect", str(root))
    assert result.returncode == 1 and "sess" in result.stderr and "dataset.columns" in result.stderr


def test_renamed_columns_map_through_config(tmp_path: Path):
    root = _copy_with_table(tmp_path, _as_turn_rows(renamed=True))
    spec = ColumnSpec.from_mapping(
        {"layout": "turn", "conversation_id": "sess", "turn_index": "k", "audio": "clip", "category": "kind"}
    )
    ds = loader.load(sources.from_local(root), spec)
    assert len(ds.conversations) == 10 and ds.counts("category")["language ability"] == 2
    result = _stepeval(
        "data",
        "inspect",
        str(root),
        "--column",
        "layout=turn",
        "--column",
        "conversation_id=sess",
        "--column",
        "turn_index=k",
        "--column",
        "audio=clip",
        "--column",
        "category=kind",
    )
    assert result.returncode == 0, result.stderr
    assert "conversations: 10" in result.stdout


def test_misconfigured_column_names_the_key(tmp_path: Path):
    root = _copy_with_table(tmp_path, _as_turn_rows(renamed=True))
    with pytest.raises(SchemaError, match=r"dataset.columns.audio='nope' is not a column"):
        loader.load(
            sources.from_local(root), ColumnSpec.from_mapping({"layout": "turn", "conversation_id": "sess", "audio": "nope"})
        )


def test_language_detected_when_no_column(tmp_path: Path):
    frame = _as_turn_rows(renamed=False).drop(columns=["lang"])
    ds = loader.load(sources.from_local(_copy_with_table(tmp_path, frame)))
    langs = {c.id: (c.language, c.language_source) for c in ds.conversations}
    assert langs["sample-logic-zh"] == ("zh", "detected")
    assert langs["sample-gaming-en"] == ("en", "detected")


def test_unresolved_audio_is_listed_by_inspect_and_refused_by_run(tmp_path: Path):
    frame = _as_turn_rows(renamed=False)
    frame.loc[frame.index[0], "wav_path"] = "audios/missing/turn_9.wav"
    root = _copy_with_table(tmp_path, frame)
    with pytest.raises(FileNotFoundError, match="turn_9.wav"):
        loader.load(sources.from_local(root))
    result = _stepeval("data", "inspect", str(root))
    assert result.returncode == 1
    assert "unresolved audio references: 1" in result.stdout and "audios/missing/turn_9.wav" in result.stdout


def test_git_lfs_pointer_instead_of_archive_is_named(tmp_path: Path):
    root = _copy_with_table(tmp_path, _as_turn_rows(renamed=False))
    (root / "audios.tar.gz").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
    with pytest.raises(FileNotFoundError, match="git lfs pull"):
        sources.from_local(root)
