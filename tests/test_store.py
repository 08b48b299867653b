"""The record log survives a torn write; the run folder refuses a second concurrent writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepeval.store import RecordLog, RunStore, fingerprint, safe_name


def test_torn_last_line_is_ignored_then_cut_before_the_next_append(tmp_path: Path):
    log = RecordLog(tmp_path / "replay.jsonl")
    log.append({"conversation_id": "a", "turn": 0, "value": 1})
    log.close()
    with open(log.path, "ab") as fh:
        fh.write(b'{"conversation_id": "a", "turn": 1, "val')  # killed mid-write
    assert list(RecordLog(log.path).load()) == [("a", 0)]
    again = RecordLog(log.path)
    again.append({"conversation_id": "a", "turn": 1, "value": 2})
    again.close()
    assert RecordLog(log.path).load()[("a", 1)]["value"] == 2
    assert log.path.read_text().count("\n") == 2


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path: Path):
    path = tmp_path / "score.jsonl"
    path.write_text('{"conversation_id": "a", "turn": 0}\nnot json\n{"conversation_id": "b", "turn": 0}\n')
    with pytest.raises(ValueError, match=r"score.jsonl:2: corrupt record"):
        RecordLog(path).load()


def test_last_record_for_a_key_wins(tmp_path: Path):
    log = RecordLog(tmp_path / "x.jsonl")
    log.append({"conversation_id": "a", "turn": 0, "fingerprint": "old"})
    log.append({"conversation_id": "a", "turn": 0, "fingerprint": "new"})
    assert RecordLog(log.path).load()[("a", 0)]["fingerprint"] == "new"


def test_second_writer_on_the_same_run_is_refused(tmp_path: Path):
    with RunStore(tmp_path / "run"):
        with pytest.raises(RuntimeError, match="in use by another stepeval process"):
            with RunStore(tmp_path / "run"):
                pass


def test_fingerprint_is_order_insensitive_for_mappings_and_safe_names_are_unique():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1}) != fingerprint({"a": 1, "b": 3})
    assert safe_name("plain-id_1") == "plain-id_1"
    assert safe_name("a/b") != safe_name("a b") and "/" not in safe_name("a/b")


def test_group_commit_writes_each_records_files_before_the_record(tmp_path: Path):
    import asyncio

    from stepeval.store import GroupCommitter

    log = RecordLog(tmp_path / "records" / "replay.jsonl")
    committer = GroupCommitter(log)
    seen: list[tuple[bool, bool]] = []
    real = log.append_many

    def append_many(records):  # when the records go in, every file of the batch is already in place
        seen.extend(((tmp_path / "audio" / f"{r['turn']}.wav").exists(), (tmp_path / "audio").is_dir()) for r in records)
        real(records)

    log.append_many = append_many

    async def go():
        await asyncio.gather(
            *(
                committer.append({"conversation_id": "c", "turn": t}, [(tmp_path / "audio" / f"{t}.wav", b"RIFF%d" % t)])
                for t in range(5)
            )
        )

    asyncio.run(go())
    log.close()
    assert seen == [(True, True)] * 5
    assert sorted(log.load()) == [("c", t) for t in range(5)]
    assert [(tmp_path / "audio" / f"{t}.wav").read_bytes() for t in range(5)] == [b"RIFF%d" % t for t in range(5)]
    assert not list((tmp_path / "audio").glob(".*.tmp"))


def test_a_file_that_cannot_be_written_fails_its_own_record_and_the_rest_of_the_batch_is_kept(tmp_path: Path):
    import asyncio

    from stepeval.store import GroupCommitter

    log = RecordLog(tmp_path / "records" / "replay.jsonl")
    committer = GroupCommitter(log)
    (tmp_path / "blocked").write_text("a file where the audio folder should be")

    async def go():
        return await asyncio.gather(
            committer.append({"conversation_id": "c", "turn": 0}, [(tmp_path / "blocked" / "0.wav", b"RIFF")]),
            committer.append({"conversation_id": "c", "turn": 1}, [(tmp_path / "audio" / "1.wav", b"RIFF1")]),
            committer.append({"conversation_id": "c", "turn": 2}),
            return_exceptions=True,
        )

    outcomes = asyncio.run(go())
    log.close()
    assert isinstance(outcomes[0], OSError) and "blocked" in str(outcomes[0])
    assert outcomes[1:] == [None, None]
    assert sorted(log.load()) == [("c", 1), ("c", 2)]  # no record names the file that was not written
    assert (tmp_path / "audio" / "1.wav").read_bytes() == b"RIFF1"
