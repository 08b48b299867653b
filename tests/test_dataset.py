"""Loading StepEval-Audio-360-shaped data whose schema is unknown: both layouts, mapping, clear failures."""

from __future__ import annotations

import os
import shlex
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


# -- odd layouts map in one step with the line the tool prints ------------------------------------------------

CATEGORY_ZH = {
    "singing": "唱歌",
    "creativity": "创意",
    "role-playing": "角色扮演",
    "logical reasoning": "逻辑推理",
    "voice understanding": "语音理解",
    "voice instruction following": "语音指令遵循",
    "gaming": "游戏",
    "speech emotion control": "情感控制",
    "language ability": "语言能力",
}


def _sample_rows() -> list[tuple[str, str, str, list[dict]]]:
    table = pd.read_parquet(SAMPLE / "data" / "sample.parquet")
    return [(r["conversation_id"], r["category"], r["language"], list(r["turns"])) for _, r in table.iterrows()]


def _expected_categories(rename: dict[str, str] | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, category, _, _ in _sample_rows():
        name = (rename or {}).get(category, category)
        counts[name] = counts.get(name, 0) + 1
    return counts


def _printed_line(output: str) -> list[str]:
    """The mapping line the tool printed (last line starting with a dataset.columns token), as argv tokens."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip().lstrip("'").startswith("dataset.columns.layout=")]
    assert lines, f"no mapping line in:\n{output}"
    return shlex.split(lines[-1])


def _inspect(root: Path, *tokens: str) -> subprocess.CompletedProcess:
    return _stepeval("data", "inspect", str(root), *tokens)


def _check_counts(out: str, categories: dict[str, int]) -> None:
    assert "conversations: 10  user turns: 22" in out, out
    for name, count in categories.items():
        assert f"  {name}: {count}\n" in out, (name, out)
    assert "unresolved audio references: 0" in out and "unusable audio files: 0" in out


def _run_config_loads(root: Path, tokens: list[str]) -> loader.LoadedDataset:
    """`stepeval run` takes the same tokens: Hydra composes them, and the composed dataset section loads."""
    result = _stepeval("run", "dataset=stepeval360", "dataset.source=local", f"dataset.local_dir={root}", *tokens, "--cfg", "job")
    assert result.returncode == 0, result.stderr
    import yaml

    config = yaml.safe_load(result.stdout)
    return loader.load_configured(config["dataset"])


def _nested_speech_utterance(tmp_path: Path) -> Path:
    rows = [
        {
            "uid": conv_id,
            "task": category,
            "lang": language,
            "dialogue": [{"speech": t["audio"], "utterance": t["text"]} for t in turns],
        }
        for conv_id, category, language, turns in _sample_rows()
    ]
    return _copy_with_table(tmp_path, pd.DataFrame(rows))


def test_nested_speech_and_utterance_fields_map_in_one_step(tmp_path: Path):
    root = _nested_speech_utterance(tmp_path)
    first = _inspect(root)
    tokens = _printed_line(first.stdout + first.stderr)
    assert "dataset.columns.audio=speech" in tokens and "dataset.columns.text=utterance" in tokens
    assert "dataset.columns.turns=dialogue" in tokens and "dataset.columns.conversation_id=uid" in tokens
    second = _inspect(root, *tokens)
    assert second.returncode == 0, second.stderr
    _check_counts(second.stdout, _expected_categories())
    ds = _run_config_loads(root, tokens)
    texts = {c.id: [t.text for t in c.turns] for c in ds.conversations}
    assert texts["sample-logic-zh"] == ["小明有三个苹果，又买了两个，现在有几个？", "如果他吃掉一个，还剩几个？"]


def test_nested_field_can_be_mapped_by_dotted_path_or_turn_field(tmp_path: Path):
    root = _nested_speech_utterance(tmp_path)
    for audio in ("speech", "dialogue.speech"):
        spec = ColumnSpec.from_mapping(
            {"layout": "conversation", "turns": "dialogue", "audio": audio, "text": "dialogue.utterance"}
        )
        ds = loader.load(sources.from_local(root), spec)
        assert sum(len(c.turns) for c in ds.conversations) == 22
        assert ds.conversations[0].turns[0].text == "Can you sing me a short lullaby about the moon?"
    with pytest.raises(SchemaError, match=r"'voice' is neither a field of the turns in 'dialogue'.*speech"):
        loader.load(sources.from_local(root), ColumnSpec.from_mapping({"audio": "voice", "turns": "dialogue"}))


def _turn_rows_with_row_id(session: str = "session", category: str = "scene") -> pd.DataFrame:
    rows, n = [], 0
    for conv_id, cat, _, turns in _sample_rows():
        for index, turn in enumerate(turns):
            rows.append(
                {
                    "id": f"utt{n:03d}",
                    session: conv_id,
                    "t": index,
                    "speech_path": turn["audio"],
                    category: cat,
                    "text": turn["text"],
                }
            )
            n += 1
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # shuffled: t must restore the order


def test_per_row_id_is_not_taken_as_the_conversation_id(tmp_path: Path):
    root = _copy_with_table(tmp_path, _turn_rows_with_row_id())
    result = _inspect(root)
    assert result.returncode == 0, result.stderr
    tokens = _printed_line(result.stdout)
    assert "dataset.columns.conversation_id=session" in tokens and "dataset.columns.turn_index=t" in tokens
    assert "id is unique per row" in result.stdout  # the evidence shows why `id` was passed over
    _check_counts(result.stdout, _expected_categories())
    ds = loader.load(sources.from_local(root))
    by_id = {c.id: c for c in ds.conversations}
    assert [t.audio_path.name for t in by_id["sample-gaming-en"].turns] == ["turn_0.wav", "turn_1.wav", "turn_2.wav"]


def test_undecidable_turn_rows_fail_with_the_full_mapping_line_that_then_works(tmp_path: Path):
    """No column is named like a conversation id or a category: fail, list candidates, print the line."""
    root = _copy_with_table(tmp_path, _turn_rows_with_row_id(session="dlg", category="kind"))
    first = _inspect(root)
    assert first.returncode != 0
    assert "Traceback" not in first.stderr
    assert "candidates: dlg" in first.stderr and "kind" in first.stderr
    tokens = _printed_line(first.stderr)
    assert len(tokens) == 9  # every key (role included), ready to paste
    assert "dataset.columns.conversation_id=dlg" in tokens and "dataset.columns.category=kind" in tokens
    second = _inspect(root, *tokens)
    assert second.returncode == 0, second.stderr
    _check_counts(second.stdout, _expected_categories())
    assert len(_run_config_loads(root, tokens).conversations) == 10


def test_chinese_named_category_column_is_detected(tmp_path: Path):
    rows = []
    for conv_id, category, _, turns in _sample_rows():
        for index, turn in enumerate(turns):
            rows.append(
                {"对话id": conv_id, "轮次": index, "音频": turn["audio"], "类别": CATEGORY_ZH[category], "文本": turn["text"]}
            )
    root = _copy_with_table(tmp_path, pd.DataFrame(rows))
    result = _inspect(root)
    assert result.returncode == 0, result.stderr
    tokens = _printed_line(result.stdout)
    assert 'dataset.columns.category="类别"' in tokens
    _check_counts(result.stdout, _expected_categories(CATEGORY_ZH))
    assert "  角色扮演: 1\n" in result.stdout and "  语言能力: 2\n" in result.stdout
    assert _run_config_loads(root, tokens).counts("category")["角色扮演"] == 1


def test_category_column_of_empty_values_is_not_a_category_column(tmp_path: Path):
    frame = _turn_rows_with_row_id(category="kind")
    frame["category"] = None  # named like a category, but it would make every conversation 'unknown'
    root = _copy_with_table(tmp_path, frame)
    result = _inspect(root)
    assert result.returncode != 0
    assert "category (every value empty" in result.stderr
    assert "dataset.columns.category=kind" in _printed_line(result.stderr)


def test_empty_parquet_says_the_dataset_is_empty_and_where(tmp_path: Path):
    root = _copy_with_table(tmp_path, _as_turn_rows(renamed=False).iloc[0:0])
    result = _inspect(root)
    assert result.returncode == 1
    assert "dataset is empty: 0 rows in" in result.stderr and "train-00000-of-00001.parquet" in result.stderr


def test_inspect_cache_dir_is_where_its_help_says(tmp_path: Path):
    wide = {**os.environ, "COLUMNS": "1000"}  # argparse wraps help at hyphens otherwise
    help_text = subprocess.run(
        [sys.executable, "-m", "stepeval.cli", "data", "inspect", "--help"], capture_output=True, text=True, env=wide
    ).stdout
    assert "<cache-dir>/audio/<hash>/" in help_text
    cache = tmp_path / "X"
    result = _stepeval("data", "inspect", "sample", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("audio extracted to: "))
    folder = Path(line.split(": ", 1)[1])
    assert folder.parent == cache / "audio" and (folder / "audios" / "sample-gaming-en" / "turn_2.wav").exists()
