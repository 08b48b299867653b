"""Input checks before any work, and faults met on the way: unknown `+key`s, the schema as a group option,
timeouts of 0, overrides Hydra cannot parse, an ASR without weights, a full disk, progress bars in a log."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import resource
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from stepeval import audio as audio_io
from stepeval import pipeline
from stepeval import store as store_mod
from stepeval.asr.weights import whisper_weights
from stepeval.config import check_config, check_overrides, conf_dir, group_options, register_schemas
from stepeval.stages import progress
from stepeval.store import RecordLog, write_json_atomic
from tests.run_helpers import only_run, stepeval_run

OPTIONS = group_options()


def config(results: Path, *overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["progress=false", f"results_dir={results}", *overrides])


# --- keys the schema does not know ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+modle=parrot", "modle: not a key of the run config (did you mean model?)"),
        ("+model.timeout=3", "model.timeout: not a key of the model config (did you mean model.timeout_s?)"),
        ("+dataset.columns.layuot=turn", "dataset.columns.layuot: not a key of the dataset.columns config (did you mean"),
        ("+zzz=1", "zzz: not a key of the run config; known keys: allow_failures, asr,"),
    ],
)
def test_an_added_key_the_schema_does_not_know_is_refused_naming_it(tmp_path: Path, override: str, message: str):
    cfg = config(tmp_path, "dataset=sample", "model=silence", "asr=none", override)  # Hydra lets `+` past the schema
    with pytest.raises(ValueError) as caught:
        pipeline.run(cfg)
    assert str(caught.value).startswith(message)
    assert not any(tmp_path.iterdir())


def test_keys_the_schema_leaves_open_can_still_be_added(tmp_path: Path):
    cfg = config(tmp_path, "dataset=sample", "model=silence", "asr=none", "+model.sampling.temperature=0.5")
    check_config(cfg)  # sampling is a free mapping (temperature, top_p, ... whatever the server takes)


# --- group options and overrides Hydra cannot parse -------------------------------------------------------------


@pytest.mark.parametrize("args", [["asr=schema"], ["model=schema"], ["-m", "model=parrot,schema"]])
def test_the_schema_is_no_option_of_its_group(args: list[str]):
    group = next(a for a in args if "=" in a).split("=")[0]
    with pytest.raises(ValueError, match=rf"^{group}=schema: 'schema' is what every {group} option starts from") as caught:
        check_overrides([a for a in args if not a.startswith("-")], OPTIONS)
    offered = str(caught.value).split("pick one of: ")[1].split(", ")
    assert offered == [o for o in OPTIONS[group] if o != "schema"]


def test_a_glob_over_a_group_leaves_the_schema_out_or_is_refused():
    with pytest.raises(ValueError, match=r"^model=glob\(\*\): the glob takes in 'schema', which is no option") as caught:
        check_overrides(["model=glob(*)"], OPTIONS)
    suggested = str(caught.value).rsplit("leave it out: ", 1)[1]
    (arg,) = shlex.split(suggested)
    check_overrides([arg], OPTIONS)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = OverridesParser.create().parse_overrides([arg])[0].value().filter([*OPTIONS["model"], "schema"])
    assert swept == OPTIONS["model"]  # every option file, not the schema Hydra also lists
    check_overrides(["model=glob(parrot*)"], OPTIONS)  # a glob that does not reach the schema is Hydra's to expand


def test_a_misspelt_option_lists_the_options_without_the_schema():
    with pytest.raises(ValueError, match=r"^model=parot: Could not find 'model/parot'; the options of model are: ") as caught:
        check_overrides(["model=parot"], OPTIONS)
    listed = str(caught.value).split("are: ")[1].split(", ")
    assert listed == [o for o in OPTIONS["model"] if o != "schema"] and "parrot" in listed


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1?api-version=2024-10-01", "http://h/v1?q=it's", 'http://h/v1?q="x"&r=1']
)
def test_an_unquoted_url_names_the_override_and_its_quoted_form_parses(url: str):
    with pytest.raises(ValueError) as caught:
        check_overrides(["dataset=sample", f"model.base_url={url}"], OPTIONS)
    message = str(caught.value)
    assert message.startswith(f"cannot parse the override {'model.base_url=' + url!r}")
    assert "mismatched input '='" in message  # Hydra's reason, kept
    suggested = message.rsplit("e.g. ", 1)[1]
    (arg,) = shlex.split(suggested)  # what the shell hands over when the line is pasted
    check_overrides([arg], OPTIONS)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert OverridesParser.create().parse_overrides([arg])[0].value() == url


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("asr=schema", "asr=schema: 'schema' is what every asr option starts from"),
        ("+modle=parrot", "modle: not a key of the run config (did you mean model?)"),
        ("model.timeout_s=0", "model.timeout_s=0.0: must be > 0"),
        ("model.base_url=http://127.0.0.1:9/v1?a=b", "cannot parse the override 'model.base_url=http://127.0.0.1:9/v1?a=b'"),
        ("model.base_url=http://u:hunter2pw@127.0.0.1:9/v1?a=b", "cannot parse the override 'model.base_url=http://"),
    ],
)
def test_the_command_line_says_which_argument_is_wrong_and_starts_nothing(tmp_path: Path, override: str, named: str):
    result = stepeval_run(tmp_path, "dataset=sample", "model=silence", "asr=none", override)
    assert result.returncode == 1
    assert f"stepeval run: error: {named}" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2pw" not in result.stderr + result.stdout
    assert not any(tmp_path.iterdir())


# --- numbers that `value or default` used to turn into the default ----------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.timeout_s=0", "model.timeout_s=0.0: must be > 0"),
        ("model.timeout_s=-5", "model.timeout_s=-5.0: must be > 0"),
        ("model.max_retries=-1", "model.max_retries=-1: must be >= 0"),
        ("judge.timeout_s=0", "judge.timeout_s=0.0: must be > 0"),
        ("judge.samples=0", "judge.samples=0: must be >= 1"),
        ("judge.requests_per_minute=0", "judge.requests_per_minute=0.0: must be > 0"),
        ("workers.scoring_threads=0", "workers.scoring_threads=0: must be >= 1"),
        ("model=parrot_fleet", None),  # a launch section as shipped is fine
        (("model=parrot_fleet", "model.launch.startup_timeout_s=0"), "model.launch.startup_timeout_s=0.0: must be > 0"),
        (("model=parrot_fleet", "model.launch.replicas=0"), "model.launch.replicas=0: must be >= 1"),
        ("model.endpoints=[{base_url: 'http://127.0.0.1:9/v1', concurrency: 0}]", "model.endpoints[0].concurrency=0"),
    ],
)
def test_non_positive_timeouts_and_counts_are_refused_naming_the_key(tmp_path: Path, override, named: str | None):
    overrides = override if isinstance(override, tuple) else (override,)
    cfg = config(tmp_path, "dataset=sample", "model=silence", "asr=none", *overrides)
    if named is None:
        check_config(cfg)
        return
    with pytest.raises(ValueError, match="^" + re.escape(named)):
        check_config(cfg)


def test_a_timeout_that_is_set_reaches_the_wire_client_as_set():
    from stepeval.client.build import endpoints_from, wire_client

    model = {"name": "m", "base_url": "http://127.0.0.1:9/v1", "timeout_s": 0.25, "max_retries": 0}
    assert endpoints_from(model, 1)[0].timeout_s == 0.25
    assert wire_client(model, 1).settings.timeout_s == 0.25
    assert endpoints_from({**model, "timeout_s": None}, 1)[0].timeout_s == 300.0  # null: the default


# --- the ASR's weights before the first turn --------------------------------------------------------------------


def _cached_snapshot(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face cache entry laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>/)."""
    commit = "0" * 40
    entry = cache / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def test_whisper_weights_are_found_in_the_cache_or_missing_ones_named_without_downloading(tmp_path: Path):
    empty = tmp_path / "empty"
    with pytest.raises(RuntimeError, match=rf"Whisper large-v3: its weights are not in the Hugging Face cache \({empty}\)"):
        whisper_weights("large-v3", cache_dir=str(empty), allow_download=False)
    files = {"model.bin": b"weights", "config.json": b"{}", "tokenizer.json": b"{}"}
    snapshot = _cached_snapshot(tmp_path / "hub", "Systran/faster-whisper-large-v3", files)
    assert whisper_weights("large-v3", cache_dir=str(tmp_path / "hub"), allow_download=False) == snapshot
    folder = tmp_path / "ct2"
    folder.mkdir()
    with pytest.raises(RuntimeError, match=f"Whisper folder {folder} has no model.bin"):
        whisper_weights(str(folder))
    with pytest.raises(ValueError, match="'large-v9' is neither a folder nor a faster-whisper size"):
        whisper_weights("large-v9")


def test_whisper_weights_that_cannot_be_downloaded_are_one_line_naming_the_cache(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    from tests.http_fake import FakeServer, Scripted

    with FakeServer() as hub:  # a hub that answers every request with 503: no weights come from it
        hub.fallback = lambda request: Scripted(status=503, json={"error": "unavailable"})
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 2)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # (the tests run with HF_HUB_OFFLINE=1)
        with pytest.raises(RuntimeError) as caught:
            whisper_weights("large-v3", cache_dir=str(tmp_path / "hub"), allow_download=True)
        asked = len(hub.requests)
    message = str(caught.value)
    assert message.startswith(f"Whisper large-v3: its weights are not in the Hugging Face cache ({tmp_path / 'hub'})")
    assert "and could not be downloaded (" in message and "\n" not in message
    assert asked >= 1  # the download was tried (against the stand-in), not skipped
    assert not any((tmp_path / "hub").rglob("model.bin"))


def test_an_offline_run_with_a_whisper_not_cached_stops_before_the_first_turn(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cfg = config(tmp_path / "results", "dataset=sample", "model=parrot", "asr=whisper_large_v3", "limit=1")
    with pytest.raises(RuntimeError) as caught:
        pipeline.run(cfg)
    message = str(caught.value)
    assert message.startswith("asr=whisper_large_v3 cannot run: Whisper large-v3: its weights are not in the Hugging Face")
    assert message.endswith("Pick another ASR config, e.g. asr=whisper_base_offline, asr=none (none: no transcripts)")
    assert "\n" not in message
    assert not (tmp_path / "results").exists()  # nothing replayed


# --- a full disk ----------------------------------------------------------------------------------------------


class _FullDisk:
    """A file whose writes stop with ENOSPC after ``room`` bytes, as a real full disk does (part of the data lands)."""

    def __init__(self, inner, room: int):
        self.inner, self.room = inner, room

    def write(self, data):
        if len(data) > self.room:
            self.inner.write(data[: self.room])
            self.inner.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.inner.write(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()


def _full_for(predicate, room: int = 100):
    def opener(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(handle, room) if any(c in mode for c in "wa+") and predicate(Path(path)) else handle

    return opener


def test_a_json_write_on_a_full_disk_names_the_file_keeps_the_old_one_and_leaves_no_temporary(tmp_path: Path, monkeypatch):
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"status": "running"})
    monkeypatch.setattr(store_mod, "open", _full_for(lambda p: True, room=5), raising=False)
    with pytest.raises(OSError, match=rf"cannot write {path} \(disk full\): No space left on device") as caught:
        write_json_atomic(path, {"status": "complete", "pad": "x" * 100})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert json.loads(path.read_text()) == {"status": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_a_record_append_on_a_full_disk_names_the_log_and_leaves_no_torn_line(tmp_path: Path, monkeypatch):
    log = RecordLog(tmp_path / "records" / "replay.jsonl")
    log.append({"conversation_id": "a", "turn": 0, "status": "ok"})
    log.close()
    monkeypatch.setattr(store_mod, "open", _full_for(lambda p: True, room=10), raising=False)
    with pytest.raises(OSError, match=rf"cannot write {log.path} \(disk full\)"):
        log.append({"conversation_id": "b", "turn": 0, "status": "ok", "text": "y" * 200})
    monkeypatch.undo()
    assert log.path.read_bytes().endswith(b"}\n")  # the half-written line was cut
    log.append({"conversation_id": "c", "turn": 0, "status": "ok"})
    assert [r["conversation_id"] for r in log.load_all()] == ["a", "c"]


def test_a_failed_run_on_a_disk_without_room_for_a_temporary_is_still_marked_failed(tmp_path: Path, monkeypatch):
    from stepeval.store import RunStore

    with RunStore(tmp_path) as store:
        store.write_manifest({"status": "running", "error": None, "sessions": [{"started_at": "t"}], "pad": "x" * 400})
        # no room for a new file; the manifest's own blocks can be overwritten
        monkeypatch.setattr(store_mod, "open", _full_for(lambda p: p.name.endswith(".tmp"), room=0), raising=False)
        manifest = store.read_manifest()
        full = OSError(errno.ENOSPC, f"cannot write {tmp_path}/audio/a/turn_0.wav (disk full): No space left on device")
        pipeline._fail_manifest(store, manifest, full)
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["status"] == "failed" and "turn_0.wav (disk full)" in saved["error"] and saved["pad"] == "x" * 400
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_run_that_fills_the_disk_stops_naming_the_file_and_marks_its_manifest_failed(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(audio_io, "open", _full_for(lambda p: p.suffix == ".tmp" and "audio" in p.parts), raising=False)
    cfg = config(tmp_path, "dataset=sample", "model=parrot", "asr=none", "limit=2", "concurrency=1")
    with pytest.raises(OSError) as caught:
        pipeline.run(cfg)
    assert caught.value.errno == errno.ENOSPC
    run = only_run(tmp_path)
    wav = Path(caught.value.filename)
    assert wav.suffix == ".wav" and wav.is_relative_to(run / "audio") and not wav.exists()
    assert f"cannot write {wav} (disk full)" in str(caught.value)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and str(wav) in manifest["error"] and "disk full" in manifest["error"]
    assert manifest["sessions"][-1]["error"] == manifest["error"]
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # no temporary left for the next start
    assert RecordLog(run / "records" / "replay.jsonl").load_all() == []  # the turn was not recorded as done


@pytest.mark.slow
def test_a_file_size_limit_of_the_os_stops_a_real_run_with_the_path_and_a_failed_manifest(tmp_path: Path):
    """RLIMIT_FSIZE: the kernel refuses (EFBIG) any write past 64 KiB, so the first reply's audio cannot be written,
    while the small records and manifest can."""
    results = tmp_path / "results"
    warm = stepeval_run(results / "warm", "dataset=sample", "model=silence", "asr=none", "limit=1")  # unpacks the sample
    assert warm.returncode == 0, warm.stderr
    limit = 64 * 1024

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "stepeval.cli", "run", "dataset=sample", "model=parrot", "asr=none", "limit=2"]
    command += [f"results_dir={results / 'full'}", "progress=false"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=limited)
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("stepeval run: error:")]
    run = only_run(results / "full")
    assert f"cannot write {run / 'audio'}" in line and ".wav: File too large" in line
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "File too large" in manifest["error"] and str(run / "audio") in manifest["error"]
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


# --- progress off a terminal ----------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_whole_lines_without_control_codes():
    out = io.StringIO()
    bars = [
        progress.bar(file=out, total=0, desc=name, unit="turn", position=i, mininterval=0)
        for i, name in enumerate(["replay", "asr"])
    ]
    for bar in bars:
        bar.total += 3
        bar.refresh()
        bar.update(3)
        bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines and all(line.strip() == line and line for line in lines)
    assert any(line.startswith("replay: 3/3 turn [") for line in lines)
    assert lines[-1].startswith("asr: 3/3 turn [")


def test_progress_off_a_terminal_prints_rarely_and_always_a_last_line():
    out = io.StringIO()
    bar = progress.bar(file=out, total=0, desc="score", unit="conv", mininterval=3600)
    for _ in range(50):  # the run grows a bar one conversation at a time
        bar.total += 1
        bar.refresh()
        bar.update(1)
    assert out.getvalue() == ""
    bar.close()
    (line,) = out.getvalue().splitlines()
    assert line.startswith("score: 50/50 conv [")


def test_progress_on_a_terminal_is_tqdm_itself():
    tty = _Tty()
    bar = progress.bar(file=tty, total=2, desc="replay")
    bar.update(2)
    bar.close()
    assert type(bar) is not progress.PlainBar and "\r" in tty.getvalue()


@pytest.mark.slow
def test_a_run_logging_to_a_file_writes_progress_as_lines(tmp_path: Path):
    command = [sys.executable, "-m", "stepeval.cli", "run", "dataset=sample", "model=silence", "asr=none", "limit=2"]
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        done = subprocess.run([*command, f"results_dir={tmp_path}/r", "progress=true"], stdout=fh, stderr=fh, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "\x1b[" not in text
    assert any(line.startswith("replay: 4/4 turn [") for line in text.splitlines()), text
