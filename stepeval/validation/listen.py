"""Controls for the listening rubrics (voice_control, audio_quality): derived reply audio a listening
judge must rank lower.

- ``audio_swap`` (voice control): the reply audio of another conversation (same category first): a
  voice made for another request.
- ``audio_truncate`` (both): the reply audio cut to its first fifth.
- ``audio_noise`` (audio quality): white noise mixed in at 0 dB SNR.
- ``audio_clip`` (audio quality): hard-clipped at a tenth of its peak, then brought back to full scale.
- ``flat_voice`` (voice control): the reply's words (the transcript the run has of it) rendered by
  ``espeak-ng`` with its default, flat prosody: no emotion, no singing, no requested speed. Needs
  espeak-ng on PATH (``make system-deps``); without it the control is skipped and the validation says so.

Items are rebuilt from the judge records the view uses: the record's ``input`` (what the judge read,
attachments by hash) must lay out again identically from the reply audio, the user's audio and the
conversation, else the item is left out with the reason. Derived audio is written once (seeded) under
``<run>/validation_audio/`` and judged through the same cache as the text controls, so a rerun sends nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepeval import audio as audio_io
from stepeval.judging.audio_judge import AUDIO_RATE, audio_messages
from stepeval.judging.llm_judge import Turn, readable
from stepeval.judging.rubric import Rubric
from stepeval.store import RecordLog, safe_name
from stepeval.validation import controls
from stepeval.validation.items import CONVERSATION, judge_log, selected
from stepeval.validation.runner import CachedJudge, Task
from stepeval.views import View

METRICS = ("voice_control", "audio_quality")
FOLDER = "validation_audio"
REQUEST = re.compile(r"<request>\n(.*?)\n</request>", re.DOTALL)
USER_AUDIO_MARK = "The user's latest request, as audio:"
ESPEAK_VOICES = {"zh": "cmn", "en": "en"}


@dataclass(frozen=True)
class AudioControl:
    name: str
    expected: str
    metrics: tuple[str, ...]
    description: str


CONTROLS = {
    "audio_swap": AudioControl(
        "audio_swap", "down", ("voice_control",), "reply audio swapped with another conversation's (same category first)"
    ),
    "audio_truncate": AudioControl("audio_truncate", "down", METRICS, "reply audio cut to its first fifth"),
    "audio_noise": AudioControl("audio_noise", "down", ("audio_quality",), "white noise mixed in at 0 dB SNR"),
    "audio_clip": AudioControl(
        "audio_clip", "down", ("audio_quality",), "hard-clipped at a tenth of its peak, brought back to full scale"
    ),
    "flat_voice": AudioControl(
        "flat_voice", "down", ("voice_control",), "the reply's words rendered flat by espeak-ng (no requested style)"
    ),
}


@dataclass(frozen=True)
class ListenItem:
    """One listened turn: what the judge got besides the reply audio, and the reply audio."""

    metric: str
    conversation_id: str
    turn: int
    category: str
    language: str | None
    earlier: tuple[Turn, ...]
    request_text: str | None
    request_audio: Path | None
    reply_audio: Path
    reply_words: str | None  # the run's transcript of the reply (for the flat rendering)

    @property
    def unit(self) -> tuple[str, int]:
        return (self.conversation_id, self.turn)

    def messages(self, rubric: Rubric, reply_audio: Path | None = None) -> list[dict]:
        return audio_messages(rubric, list(self.earlier), self.request_text, self.request_audio, reply_audio or self.reply_audio)


def _earlier(text: str) -> list[Turn]:
    match = CONVERSATION.search(text)
    if not match:
        return []
    return [Turn(str(d["role"]), d["text"]) for d in map(json.loads, match.group(1).splitlines()) if d]


def load(run_dir: Path, view: View | None, rubric: Rubric, manifest: dict) -> tuple[list[ListenItem], dict[str, int]]:
    """The listened items of ``rubric.metric`` the view uses, and counts of records left out by reason."""
    path = judge_log(run_dir, rubric.metric)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no judge records for {rubric.metric!r} (run the listening judge first)")
    chosen = view.selection.get(path.stem) if view is not None else None
    records = selected(path, chosen)
    replays = RecordLog(Path(run_dir) / "records" / "replay.jsonl").load()
    transcripts = RecordLog(Path(run_dir) / "records" / "asr.jsonl").load()
    conversations: dict | None = None
    skipped: dict[str, int] = {}
    found: list[ListenItem] = []

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for record in records:
        text = record.get("input")
        if record.get("status") == "no_input" or not text or record.get("reads") != "audio":
            skip("nothing was listened to (failed turn or no audio)")
            continue
        key = (str(record["conversation_id"]), int(record["turn"]))
        replay = replays.get(key) or {}
        if not replay.get("audio"):
            skip("reply audio not found in records/replay.jsonl")
            continue
        request_audio = None
        if USER_AUDIO_MARK in text:
            if conversations is None:
                from stepeval.reporting.report import dataset_conversations

                conversations, _ = dataset_conversations(manifest)
            conv = conversations.get(key[0])
            user = next((t for t in conv.turns if t.index == key[1]), None) if conv else None
            request_audio = user.audio_path if user is not None else None
            if request_audio is None:
                skip("the user's audio could not be found in the dataset")
                continue
        request = REQUEST.search(text)
        heard = transcripts.get(key) or {}
        item = ListenItem(
            metric=rubric.metric,
            conversation_id=key[0],
            turn=key[1],
            category=str(record.get("category") or "unknown"),
            language=record.get("language"),
            earlier=tuple(_earlier(text)),
            request_text=json.loads(request.group(1)) if request else None,
            request_audio=Path(request_audio) if request_audio else None,
            reply_audio=Path(run_dir) / replay["audio"],
            reply_words=heard.get("text") if heard.get("status") == "ok" else replay.get("text"),
        )
        try:
            same = readable(item.messages(rubric)) == text
        except (ValueError, OSError):
            same = False
        if not same:
            skip("judge input does not lay out again identically (audio changed or missing)")
            continue
        found.append(item)
    found.sort(key=lambda i: i.unit)
    return found, skipped


# --- derived audio ------------------------------------------------------------------------------


def truncated(samples: np.ndarray) -> np.ndarray:
    return samples[: max(1, len(samples) // 5)]


def noisy(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise at the signal's own RMS (0 dB SNR), scaled back under full scale."""
    rms = float(np.sqrt(np.mean(samples**2))) or 1e-3
    mixed = samples + rng.normal(0.0, rms, len(samples))
    return (mixed / max(1.0, float(np.max(np.abs(mixed))) / 0.99)).astype(np.float32)


def clipped(samples: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(samples))) or 1.0
    level = peak / 10.0
    return (np.clip(samples, -level, level) / level * 0.99).astype(np.float32)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def flat_rendering(words: str, language: str | None, out: Path) -> None:
    """The words spoken by espeak-ng (its default prosody), as a wav at ``out``."""
    voice = ESPEAK_VOICES.get((language or "en").split("-")[0], "en")
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), words], check=True, capture_output=True, timeout=60)
    samples, rate = audio_io.read(raw, rate=AUDIO_RATE)
    audio_io.write_wav_atomic(out, samples, rate)
    raw.unlink(missing_ok=True)


def swaps(found: list[ListenItem]) -> dict[tuple[str, int], tuple[ListenItem, bool]]:
    """unit -> (the item whose reply audio replaces it, crossed categories); other conversations only,
    other audio only, the same category first."""
    out = {}
    for item in found:
        own = audio_io.file_sha256(item.reply_audio)
        others = [o for o in found if o.conversation_id != item.conversation_id and audio_io.file_sha256(o.reply_audio) != own]
        same = [o for o in others if o.category == item.category]
        pool = same or others
        if pool:
            out[item.unit] = (pool[controls.rng_for(0, "audio_swap", item.unit).integers(len(pool))], not same)
    return out


def derived_audio(run_dir: Path, item: ListenItem, name: str, seed: int, swapped: dict) -> tuple[Path | None, dict]:
    """The derived reply audio of ``item`` for control ``name`` (written once), and what to record; None: not derivable."""
    out = Path(run_dir) / FOLDER / name / f"{safe_name(item.conversation_id)}_{item.turn}.wav"
    if name == "audio_swap":
        swap = swapped.get(item.unit)
        if swap is None:
            return None, {}
        return swap[0].reply_audio, {"from": list(swap[0].unit), "cross_category": swap[1]}
    if name == "flat_voice":
        if not item.reply_words or not item.reply_words.strip():
            return None, {}
        if not out.is_file():
            flat_rendering(item.reply_words, item.language, out)
        return out, {"words": item.reply_words}
    if not out.is_file():
        samples, rate = audio_io.read(item.reply_audio, rate=AUDIO_RATE)
        if name == "audio_truncate":
            samples = truncated(samples)
        elif name == "audio_noise":
            samples = noisy(samples, controls.rng_for(seed, "audio_noise", item.unit))
        else:
            samples = clipped(samples)
        out.parent.mkdir(parents=True, exist_ok=True)
        audio_io.write_wav_atomic(out, samples, rate)
    return out, {}


async def validate_rubric(
    result: dict,
    run_dir: Path,
    view: View | None,
    rubric: Rubric,
    client,
    judge,
    wanted: tuple[str, ...],
    th: controls.Thresholds,
    seed: int,
    resamples: int,
    limit: int | None = None,
    manifest: dict | None = None,
) -> None:
    """Judge the original and derived audio of one listening rubric; add its checks to ``result``."""
    try:
        found, skipped = load(run_dir, view, rubric, manifest or {})
    except FileNotFoundError as err:
        result["skipped"][rubric.metric] = {str(err): 1}
        return
    if limit is not None:
        keep = list(dict.fromkeys(i.conversation_id for i in found))[:limit]
        found = [i for i in found if i.conversation_id in keep]
    names = [n for n, c in CONTROLS.items() if n in wanted and rubric.metric in c.metrics]
    if "flat_voice" in names and not espeak_available():
        names.remove("flat_voice")
        skipped = {**skipped, "flat_voice: espeak-ng not installed (make system-deps), control not run": len(found)}
    result["skipped"][rubric.metric] = skipped
    total = len(found) + sum(v for k, v in skipped.items() if not k.startswith("flat_voice"))
    unusable = (total - len(found)) / total if total else 1.0
    swapped = swaps(found) if "audio_swap" in names else {}
    tasks = [Task(i, "original", i.messages(rubric)) for i in found]  # type: ignore[arg-type]
    for name in names:
        for item in found:
            audio, extra = derived_audio(run_dir, item, name, seed, swapped)
            if audio is not None:
                tasks.append(Task(item, name, item.messages(rubric, audio), extra))  # type: ignore[arg-type]
    cached = CachedJudge(client, rubric, run_dir, judge.concurrency, "primary")
    try:
        outcomes = await cached.judge_all(tasks)
    finally:
        cached.close()
    result.setdefault("requests", {})[rubric.metric] = {
        "primary": {"reused": cached.tally.reused, "computed": cached.tally.computed, "failed": cached.tally.failed}
    }
    values: dict[str, dict] = {}
    for task, outcome in zip(tasks, outcomes, strict=True):
        values.setdefault(task.variant, {})[task.item.unit] = outcome.value
    original = values.get("original", {})
    for name in names:
        derived = values.get(name, {})
        paired = controls.paired(original, derived, rubric.metric, seed, resamples)
        check = controls.check_entry(name, CONTROLS[name], rubric.metric, len(found), derived, paired, th, unusable)
        if name == "audio_swap":
            check["cross_category"] = sum(bool(t.extra.get("cross_category")) for t in tasks if t.variant == name)
        result["checks"].append(check)
