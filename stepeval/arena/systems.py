"""The systems an arena compares: each a view's replies (what the text judge reads and the audio the listening
judge hears), plus derived control systems made from one of them.

What the text judge reads of a reply follows the judge's ``reads`` setting exactly as the run's own judge stage
does (``stages.judge.reply_side``): the text channel, the ASR transcript of the reply, or the text channel else the
ASR. The ASR record is the run's latest successful one for the turn's audio.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from stepeval import audio as audio_io
from stepeval import views
from stepeval.data import loader
from stepeval.records import AsrRecord, Key, ReplayRecord
from stepeval.stages.judge import reply_side
from stepeval.store import RecordLog, load_manifest

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
CONTROLS = ("copy", "truncated", "swapped")


@dataclass(frozen=True)
class Reply:
    text: str | None  # what the text judge reads; None: nothing to read (the reason in ``missing``)
    audio: Path | None
    missing: str | None = None


@dataclass
class System:
    name: str
    source: str  # the view folder (or, for a control, "<control> of <system>")
    replies: dict[Key, Reply]
    categories: dict[Key, str] = field(default_factory=dict)
    control_of: str | None = None  # a derived control: the system it was made from
    control: str | None = None


@dataclass(frozen=True)
class UserTurn:
    text: str | None
    audio: Path | None


def load_system(path: Path, reads: str) -> tuple[System, dict[Key, UserTurn], dict]:
    """A view folder (or a run folder with one view) as a system, with the user's turns from the run's dataset."""
    run_dir, view = views.resolve(Path(path))
    manifest = load_manifest(run_dir)
    if not manifest:
        raise ValueError(f"{path}: not a stepeval run or view (no manifest.json)")
    replays = {k: ReplayRecord.from_json(r) for k, r in RecordLog(run_dir / "records" / "replay.jsonl").load().items()}
    asr_path = run_dir / "records" / "asr.jsonl"
    transcripts = {k: AsrRecord.from_json(r) for k, r in RecordLog(asr_path).load().items()} if asr_path.is_file() else None
    keys = set(view.keys) if view is not None and view.keys else set(replays)
    replies: dict[Key, Reply] = {}
    categories: dict[Key, str] = {}
    for key in sorted(keys):
        record = replays.get(key)
        if record is None or record.status != "ok":
            continue
        side = reply_side(record, (transcripts or {}).get(key), reads, transcripts is not None)
        audio = run_dir / record.audio if record.audio else None
        replies[key] = Reply(side.text, audio, side.missing)
        categories[key] = record.category
    config = manifest.get("config") or {}
    model = (config.get("model") or {}).get("name") or run_dir.name
    users = _user_turns(config.get("dataset") or {}, run_dir)
    label = str(model)
    source = str(view_dir) if (view_dir := (views.view_dir(run_dir, view.name) if view else None)) else str(run_dir)
    return System(label, source, replies, categories), users, manifest


def _user_turns(dataset: dict, run_dir: Path) -> dict[Key, UserTurn]:
    try:
        loaded = loader.load_configured(dataset, strict=False)
    except Exception as err:  # the judge needs the user's turns: say which dataset could not be reopened
        raise ValueError(f"{run_dir}: its dataset could not be reopened for the arena ({type(err).__name__}: {err})") from err
    return {
        (c.id, t.index): UserTurn(t.text, Path(t.audio_path) if t.audio_path else None)
        for c in loaded.conversations
        for t in c.turns
    }


def unique_names(systems: list[System]) -> None:
    """Two views of one model (two judges, two ASRs) are two systems: number them by their source."""
    seen: dict[str, int] = {}
    for s in systems:
        seen[s.name] = seen.get(s.name, 0) + 1
    count: dict[str, int] = {}
    for s in systems:
        if seen[s.name] > 1:
            count[s.name] = count.get(s.name, 0) + 1
            s.name = f"{s.name}#{count[s.name]}"


def truncate_text(text: str | None, share: float = 1 / 3) -> str | None:
    """The first third of a reply (CJK by characters, other scripts by words)."""
    if not text:
        return text
    if CJK.search(text):
        return text[: max(1, int(len(text) * share))]
    words = text.split()
    return " ".join(words[: max(1, int(len(words) * share))])


def derive(base: System, control: str, folder: Path) -> System:
    """A control system made from ``base``: an exact ``copy``, its replies ``truncated`` to their first third (text
    and audio), or its replies ``swapped`` with those of other conversations (same category first)."""
    if control not in CONTROLS:
        raise ValueError(f"arena control {control!r}: use one of {list(CONTROLS)}")
    replies: dict[Key, Reply] = {}
    if control == "copy":
        replies = dict(base.replies)
    elif control == "truncated":
        folder.mkdir(parents=True, exist_ok=True)
        for key, reply in base.replies.items():
            audio = None
            if reply.audio is not None and reply.audio.is_file():
                samples, rate = audio_io.read(reply.audio)
                audio = folder / f"{_slug(base.name)}-{key[0]}-{key[1]}.wav"
                audio_io.write_wav_atomic(audio, samples[: max(1, int(samples.size / 3))], rate)
            replies[key] = replace(reply, text=truncate_text(reply.text), audio=audio)
    else:
        keys = sorted(base.replies)
        for key in keys:
            others = [k for k in keys if k[0] != key[0]]
            same = [k for k in others if base.categories.get(k) == base.categories.get(key)]
            pool = same or others
            if pool:
                replies[key] = base.replies[pool[_stable_index(key, len(pool))]]
    return System(f"{base.name}+{control}", f"{control} of {base.name}", replies, dict(base.categories), base.name, control)


def _stable_index(key: Key, n: int) -> int:
    import hashlib

    return int(hashlib.sha256(json.dumps(list(key)).encode()).hexdigest(), 16) % n


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
