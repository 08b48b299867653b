"""Published layouts (tests/dataset_corpus.py): each maps to the right clips, or fails printing a line that then does.

``stepeval data inspect`` runs in-process here; ``stepeval run``'s side composes the printed tokens with Hydra exactly
as ``stepeval run`` does and loads the composed dataset section (the slow test runs the real command).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from stepeval.config import compose, to_container
from stepeval.data import chat, loader, sources
from stepeval.data.columns import ColumnSpec, SchemaError
from stepeval.data.inspect import inspect_command
from stepeval.data.loader import OutsidePath
from tests import dataset_corpus as corpus
from tests.run_helpers import only_run, stepeval_run


def _inspect(root: Path, cache: Path, capsys, *tokens: str, allow: bool = False) -> tuple[int, str, str]:
    code = inspect_command(str(root), None, str(cache), [], list(tokens), allow_outside_paths=allow)
    out, err = capsys.readouterr()
    return code, out, err


def _printed_line(text: str) -> list[str]:
    """The last full mapping line the tool printed, split as a shell would."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().lstrip("'").startswith("dataset.columns.layout=")]
    assert lines, f"no mapping line in:\n{text}"
    return shlex.split(lines[-1])


def _run_dataset(root: Path, cache: Path, tokens: list[str]) -> loader.LoadedDataset:
    """What `stepeval run ... <tokens>` loads: the tokens composed by Hydra, the dataset section loaded."""
    cfg = compose(
        ["dataset=stepeval360", "dataset.source=local", f"dataset.local_dir={root}", f"dataset.cache_dir={cache}", *tokens]
    )
    return loader.load_configured(to_container(cfg)["dataset"])


def _digest(path: Path) -> str:
    return corpus.fingerprint(path)


def _check_conversations(ds: loader.LoadedDataset, name: str) -> None:
    """Every user turn is the right clip, in order, with its transcript and its conversation's category."""
    zh = name in corpus.CHINESE
    got = {c.id: c for c in ds.conversations}
    want = corpus.expected()
    assert sorted(got) == sorted(want), (name, sorted(got))
    for conv_id, turns in want.items():
        conv = got[conv_id]
        assert [_digest(t.audio_path) for t in conv.turns] == [w[0] for w in turns], (name, conv_id)
        texts = [t.text for t in conv.turns]
        assert texts == ([None] * len(turns) if name in corpus.NO_TEXT else [w[1] for w in turns]), (name, conv_id)
        category = turns[0][2]
        assert conv.category == (corpus.CATEGORY_ZH[category] if zh else category), (name, conv_id)


@pytest.mark.parametrize("name", sorted(corpus.LAYOUTS))
def test_layout_maps_or_prints_a_line_that_does(name: str, tmp_path: Path, capsys):
    root, cache = tmp_path / name, tmp_path / "cache"
    corpus.LAYOUTS[name](root)
    code, out, err = _inspect(root, cache, capsys)
    if name in corpus.NEEDS_OVERRIDE:
        assert code == 1 and "cannot settle the column mapping" in err, (out, err)
        assert "Traceback" not in err
        tokens = _printed_line(err)
        assert len(tokens) == 9  # every key, ready to paste
        code, out, err = _inspect(root, cache, capsys, *tokens)
        assert code == 0, err
    else:
        assert code == 0, err
        tokens = _printed_line(out)
    assert "conversations: 4  user turns: 18" in out and "unresolved audio references: 0" in out, out
    _check_conversations(_run_dataset(root, cache, tokens), name)


@pytest.mark.parametrize(
    ("name", "evidence"),
    [
        ("openai_input_audio", ["role = role  (turn field: named like a role; 18 of 40 entries are user turns (user); "
                                "not replayed: assistant, system)", "audio = content", "the audio part of each content list",
                                "text = none  (the text parts of content may be instructions"]),
        ("sharegpt", ["turns = conversations", "role = from", "(human); not replayed: gpt", "audio = value"]),
        ("parallel_lists", ["turns = question_audios", "not answer_audios (answer side)", "audio = question_audios",
                            "text = questions  (a list column named like transcripts, as many entries as the turns"]),
        ("flat_chat_rows", ["role = role  (column: named like a role; 18 of 36 rows are user turns (user)",
                            "audio = content", "turn_index = turn_id"]),
        ("chinese_chat", ["role = 角色", "(用户); not replayed: 助手", "audio = 语音", "text = 文本"]),
        ("chat_unnamed_roles", ["role = who:A  (turn field: by value; clip holds audio only in the entries whose who is 'A'"]),
    ],
)  # fmt: skip
def test_chat_formats_and_parallel_lists_are_detected_with_evidence(name: str, evidence: list[str], tmp_path: Path, capsys):
    root = tmp_path / name
    corpus.LAYOUTS[name](root)
    code, out, err = _inspect(root, tmp_path / "cache", capsys)
    assert code == 0, err
    for line in evidence:
        assert line in out, (line, out)


def test_printed_guesses_say_what_they_guess(tmp_path: Path, capsys):
    root = tmp_path / "calls"
    corpus.chat_caller_agent(root)
    code, _, err = _inspect(root, tmp_path / "c", capsys)
    assert code == 1 and "role = speaker:caller  (UNDECIDED: speaker takes 'caller', 'agent', none a user role" in err
    assert 'dataset.columns.role="speaker:caller"' in _printed_line(err)
    root = tmp_path / "parallel"
    corpus.parallel_lists_two_user_sides(root)
    code, _, err = _inspect(root, tmp_path / "c", capsys)
    assert code == 1 and "several list columns hold audio: ['question_audios', 'prompt_audios_16k']" in err
    tokens = _printed_line(err)
    assert "dataset.columns.turns=question_audios" in tokens and "dataset.columns.audio=question_audios" in tokens


def test_chat_content_parts(tmp_path: Path):
    """The part shapes a chat's content may hold, each read to the reference the loader resolves."""
    wav = corpus.turns()[0].wav_bytes()
    b64 = base64.b64encode(wav).decode()
    assert chat.audio_of([{"type": "input_audio", "input_audio": {"data": b64, "format": "flac"}}]) == {
        "bytes": wav,
        "path": "input_audio.flac",
    }
    assert chat.audio_of([{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64," + b64}}])["bytes"] == wav
    assert chat.audio_of([{"type": "audio_url", "audio_url": {"url": "file:///data/a.wav"}}]) == "/data/a.wav"
    assert chat.audio_of([{"type": "text", "text": "hi"}, {"type": "audio", "audio": {"bytes": wav, "path": "x.wav"}}]) == {
        "bytes": wav,
        "path": "x.wav",
    }
    assert (
        chat.text_of([{"type": "text", "text": "a"}, {"type": "audio", "audio": "x.wav"}, {"type": "text", "text": "b"}])
        == "a\nb"
    )
    assert chat.parse_role("speaker:caller|Client") == ("speaker", frozenset({"caller", "client"}))
    assert chat.parse_role("from") == ("from", None)
    # two audio parts in one user message: an error naming the row and the field
    root = tmp_path / "two"
    corpus.openai_input_audio(root)
    path = root / "data" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["messages"][1]["content"].append(rows[2]["messages"][1]["content"][1])
    corpus.write_jsonl(path, rows)
    with pytest.raises(SchemaError, match=r"row 2 messages\[1\]\.content holds 2 audio parts; a user turn replays one"):
        loader.load(sources.from_local(root), cache_dir=tmp_path / "c")
    # inline audio that is not base64: named, not an unresolved "None"
    rows[2]["messages"][1]["content"].pop()
    rows[1]["messages"][3]["content"][1]["input_audio"]["data"] = "not base64 at all!"
    corpus.write_jsonl(path, rows)
    with pytest.raises(SchemaError, match=r"row 1 messages\[3\]\.content: its inline audio is not valid base64"):
        loader.load(sources.from_local(root), cache_dir=tmp_path / "c")


def test_assistant_turns_are_never_replayed(tmp_path: Path):
    """Both sides of these chats hold audio; only the user side's clips are turns (the answers are reversed clips)."""
    answers = {hashlib.sha256(t.samples[::-1].tobytes()).hexdigest() for t in corpus.turns()}
    for name in ("chinese_chat", "parallel_lists"):
        corpus.LAYOUTS[name](tmp_path / name)
        ds = loader.load(sources.from_local(tmp_path / name), cache_dir=tmp_path / "cache")
        replayed = {_digest(t.audio_path) for c in ds.conversations for t in c.turns}
        assert len(replayed) == 18 and not replayed & answers, name


def test_role_is_settable_with_the_user_value(tmp_path: Path, capsys):
    root = tmp_path / "chat"
    corpus.chinese_chat(root)
    answers = {hashlib.sha256(t.samples[::-1].tobytes()).hexdigest() for t in corpus.turns()}
    # the other side, by naming its value: the assistant clips are what is replayed
    ds = loader.load(sources.from_local(root), ColumnSpec.from_mapping({"role": "角色:助手"}), cache_dir=tmp_path / "c")
    assert {_digest(t.audio_path) for c in ds.conversations for t in c.turns} == answers
    assert ds.mapping.columns["role"] == "角色:助手" and "given" in ds.mapping.evidence["role"]
    # role=none: every entry is a turn, so each conversation has both sides
    ds = loader.load(sources.from_local(root), ColumnSpec.from_mapping({"role": "none"}), cache_dir=tmp_path / "c")
    assert sum(len(c.turns) for c in ds.conversations) == 36
    # through both commands, as an override
    code, out, err = _inspect(root, tmp_path / "c", capsys, 'dataset.columns.role="角色:助手"')
    assert code == 0 and "role = 角色:助手  (turn field: given; 18 of 36 entries are user turns (助手)" in out, (out, err)
    run = _run_dataset(root, tmp_path / "c", ['dataset.columns.role="角色:助手"'])
    assert {_digest(t.audio_path) for c in run.conversations for t in c.turns} == answers


def test_a_role_that_names_no_user_turn_is_refused(tmp_path: Path):
    root = tmp_path / "chat"
    corpus.sharegpt(root)
    with pytest.raises(SchemaError, match=r"dataset.columns.role='value'.*no entry has a user role.*fields: \['from', 'value'\]"):
        loader.load(sources.from_local(root), ColumnSpec.from_mapping({"role": "value"}), cache_dir=tmp_path / "c")
    corpus.flat_chat_rows(tmp_path / "rows")
    with pytest.raises(SchemaError, match=r"role='role:bot': no row has a user role .*values: \['assistant'"):
        loader.load(sources.from_local(tmp_path / "rows"), ColumnSpec.from_mapping({"role": "role:bot"}), cache_dir=tmp_path)


# -- duplicate conversation ids ----------------------------------------------------------------------------------


def _duplicated(tmp_path: Path) -> Path:
    root = tmp_path / "dupes"
    corpus.parallel_lists(root)
    path = root / "data" / "test.parquet"
    frame = pd.read_parquet(path)
    frame.loc[3, "id"] = "conv-a"  # conv-d published under conv-a's id
    frame.to_parquet(path, index=False)
    return root


def test_duplicate_conversation_ids_are_refused_by_inspect_and_run(tmp_path: Path, capsys):
    root = _duplicated(tmp_path)
    code, out, err = _inspect(root, tmp_path / "c", capsys)
    assert code == 1 and "duplicate conversation ids in column 'id'" in err and "'conv-a' on rows 0, 3" in err, err
    with pytest.raises(SchemaError, match=r"duplicate conversation ids in column 'id'.*'conv-a' on rows 0, 3"):
        _run_dataset(root, tmp_path / "c", [])
    # numbering by row is a choice the user makes, not a silent rename
    ds = _run_dataset(root, tmp_path / "c", ["dataset.columns.conversation_id=none"])
    assert [c.id for c in ds.conversations] == ["row0000", "row0001", "row0002", "row0003"]


@pytest.mark.slow
def test_stepeval_run_refuses_duplicate_ids_and_takes_chat_layouts(tmp_path: Path, capsys):
    """The real command: duplicate ids exit 1 naming them; a ShareGPT chat runs as detected (parrot, no ASR); a chat
    that fails detection runs with the line `data inspect` printed, pasted as argv the way a shell splits it."""
    results = tmp_path / "results"

    def run(root: Path, *tokens: str) -> subprocess.CompletedProcess:
        dataset = ["dataset=stepeval360", "dataset.source=local", f"dataset.local_dir={root}", f"dataset.cache_dir={tmp_path}"]
        return stepeval_run(results, *dataset, *tokens, "model=parrot", "asr=none", "progress=false", timeout=600)

    refused = run(_duplicated(tmp_path))
    assert refused.returncode == 1 and "'conv-a' on rows 0, 3" in refused.stderr, refused.stderr
    assert not results.exists() or not any(results.iterdir())  # refused before a run folder was made
    corpus.sharegpt(tmp_path / "chat")
    done = run(tmp_path / "chat")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((only_run(results) / "manifest.json").read_text())
    assert manifest["dataset"]["columns"]["role"] == "from" and manifest["dataset"]["turns"] == 18
    corpus.chat_caller_agent(tmp_path / "calls")
    code, _, err = _inspect(tmp_path / "calls", tmp_path, capsys)
    assert code == 1
    pasted = run(tmp_path / "calls", *_printed_line(err))
    assert pasted.returncode == 0, pasted.stderr[-3000:]
    manifests = [json.loads(p.read_text()) for p in results.glob("*/manifest.json")]
    assert {m["dataset"]["columns"]["role"] for m in manifests} == {"from", "speaker:caller"}
    assert all(m["dataset"]["turns"] == 18 for m in manifests)


def test_run_identity_counts_role_but_not_allow_outside_paths():
    """Which turns are replayed is part of the run; which files may be read is not (and runs from before keep names)."""
    from stepeval.pipeline import run_name_for

    base = ["dataset=stepeval360", "model=parrot"]
    plain = run_name_for(compose(base))
    assert run_name_for(compose([*base, "dataset.allow_outside_paths=true"])) == plain
    assert run_name_for(compose([*base, "dataset.columns.role=from"])) != plain


# -- references that leave the dataset's folder ------------------------------------------------------------------


def _outside_variants(tmp_path: Path) -> dict[str, Path]:
    """The nested-rounds layout four times, one turn's reference leaving the folder by a symlinked file or folder, an
    absolute path, ``..``."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "secret.wav"
    corpus.write_clips(outside, ".")
    (outside / corpus.turns()[0].name).rename(secret)
    roots = {}
    for kind in ("symlink", "symlinked_folder", "absolute", "dotdot"):
        root = tmp_path / kind
        corpus.nested_rounds(root)
        path = root / "data" / "test-00000-of-00001.parquet"
        frame = pd.read_parquet(path)
        rounds = [dict(r) for r in frame.loc[1, "rounds"]]
        if kind == "symlink":
            (root / "audio" / "link.wav").symlink_to(secret)
            rounds[1]["speech"] = "audio/link.wav"
        elif kind == "symlinked_folder":
            (root / "audio" / "more").symlink_to(outside, target_is_directory=True)
            rounds[1]["speech"] = "audio/more/secret.wav"
        else:
            rounds[1]["speech"] = str(secret) if kind == "absolute" else "../../elsewhere/secret.wav"
        frame.at[1, "rounds"] = rounds
        frame.to_parquet(path, index=False)
        roots[kind] = root
    return roots


def test_references_leaving_the_dataset_folder_are_refused_unless_allowed(tmp_path: Path, capsys):
    secret = (tmp_path / "elsewhere" / "secret.wav").resolve()
    for kind, root in _outside_variants(tmp_path).items():
        code, out, err = _inspect(root, tmp_path / "c", capsys)
        assert code == 1, (kind, out, err)
        assert "leave the dataset folder" in err and "row 1 rounds[1].speech (conv-b turn 1)" in err, (kind, err)
        assert str(secret) in err and "dataset.allow_outside_paths=true" in err, (kind, err)
        with pytest.raises(OutsidePath, match=r"row 1 rounds\[1\]\.speech"):
            _run_dataset(root, tmp_path / "c", [])
        ds = _run_dataset(root, tmp_path / "c", ["dataset.allow_outside_paths=true"])
        turn = next(c for c in ds.conversations if c.id == "conv-b").turns[1]
        assert turn.audio_path.resolve() == secret, kind
        code, out, err = _inspect(root, tmp_path / "c", capsys, allow=True)
        assert code == 0, (kind, err)
        code, out, err = _inspect(root, tmp_path / "c", capsys, "dataset.allow_outside_paths=true")
        assert code == 0, (kind, err)


def test_dotdot_that_stays_inside_the_folder_is_fine(tmp_path: Path):
    """A JSON Lines manifest in data/ pointing at ../audio/...: relative to its own folder, still inside."""
    root = tmp_path / "ds"
    corpus.rows_per_turn_string_index_shuffled(root)
    path = root / "data" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    corpus.write_jsonl(path, [{**r, "audio_path": "../" + r["audio_path"]} for r in rows])
    ds = loader.load(sources.from_local(root), cache_dir=tmp_path / "c")
    assert sum(len(c.turns) for c in ds.conversations) == 18
    assert all(t.audio_path.resolve().is_relative_to(root.resolve()) for c in ds.conversations for t in c.turns)


def test_chat_read_through_datasets_maps_the_same(tmp_path: Path):
    """The hub path (datasets.load_dataset) turns mixed string/part content into JSON text; it maps as the local path."""
    root = tmp_path / "openai_input_audio"
    corpus.openai_input_audio(root)
    files = sources.from_datasets_folder(root, {"kind": "packaged"}, None, tmp_path / "datasets-cache")
    assert isinstance(files.table.iloc[0]["messages"][1]["content"], str)  # what datasets made of the parts
    ds = loader.load(files, cache_dir=tmp_path / "c")
    assert ds.mapping.columns["audio"] == "content" and ds.mapping.columns["role"] == "role"
    _check_conversations(ds, "openai_input_audio")


def test_audio_given_as_a_path_into_a_chat_list_implies_the_turns(tmp_path: Path, capsys):
    """`layout=conversation audio=messages.content` (the issue's attempt) keeps the explicit audio and finds the rest."""
    root = tmp_path / "chat"
    corpus.chat_bare_clip_names(root)
    tokens = ["dataset.columns.layout=conversation", "dataset.columns.audio=messages.content"]
    code, out, err = _inspect(root, tmp_path / "c", capsys, *tokens)
    assert code == 0, err
    assert "turns = messages  (given audio=messages.content is a field of its entries" in out
    assert "role = role  (turn field: named like a role; 18 of 36 entries are user turns (user)" in out
    _check_conversations(_run_dataset(root, tmp_path / "c", tokens), "chat_bare_clip_names")
