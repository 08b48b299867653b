"""What the run's text judge read, item by item, parsed back from its judge records.

Each judge record keeps ``input``: the user message the judge received (the quoted conversation
and reply). Parsing it back and re-laying it out with ``text_messages`` must give the very same
text, so every derived item starts from exactly what the judge read (ASR or text channel, context
included) and nothing about how the run got there is re-derived here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from stepeval.judging.llm_judge import INPUT_FORMAT, Turn, text_messages
from stepeval.judging.rubric import Rubric
from stepeval.store import Key, RecordLog

CONVERSATION = re.compile(r"<conversation>\n(.*?)\n?</conversation>", re.DOTALL)
REPLY = re.compile(r"<reply>\n(.*)\n</reply>\Z", re.DOTALL)


@dataclass(frozen=True)
class Item:
    """One judged turn: the context the judge saw (ending with the user's latest turn) and the reply."""

    metric: str
    conversation_id: str
    turn: int
    category: str
    language: str | None
    context: tuple[Turn, ...]
    reply: str
    value: float | None  # the run's own verdict (for reference; controls re-judge with the validation judge)

    @property
    def unit(self) -> tuple[str, int]:
        return (self.conversation_id, self.turn)

    def messages(self, rubric: Rubric, reply: str | None = None) -> list[dict]:
        return text_messages(rubric, list(self.context), self.reply if reply is None else reply)


def parse_input(text: str) -> tuple[list[Turn], str]:
    """(context turns, reply) from a text judge input; ValueError when it is not that layout."""
    conv, reply = CONVERSATION.search(text), REPLY.search(text)
    if not conv or not reply:
        raise ValueError("no <conversation> and <reply> blocks")
    turns = []
    for line in conv.group(1).splitlines():
        if line.strip():
            data = json.loads(line)
            turns.append(Turn(str(data["role"]), data["text"]))
    return turns, json.loads(reply.group(1))


def judge_log(run_dir: Path, metric: str) -> Path:
    return Path(run_dir) / "records" / f"judge-{metric}.jsonl"


def selected(path: Path, selection: dict[Key, str] | None) -> list[dict]:
    """The records a view uses (``selection``: key -> fingerprint), else the latest record per key."""
    log = RecordLog(path)
    if selection is None:
        return list(log.load().values())
    index = log.index()
    out = []
    for key, fp in selection.items():
        record = index.get(key, fp)
        if record is None:
            raise ValueError(f"{path}: the record of {key[0]} turn {key[1]} that the view uses is missing")
        out.append(record)
    return out


MISHEARD = "ASR transcript in another language than the conversation's (language_match=0): not what the reply said"


def misheard(run_dir: Path, selection: dict[Key, str] | None = None) -> set[Key]:
    """Turns whose reply transcript is in another language than the conversation's (the score log's
    ``language_match`` is 0: e.g. a small offline Whisper writing synthetic Mandarin as Thai). Controls
    derived from such a transcript test nothing: the judge never read what the reply said."""
    path = Path(run_dir) / "records" / "score.jsonl"
    if not path.is_file():
        return set()
    return {
        (str(r["conversation_id"]), int(r["turn"]))
        for r in selected(path, selection)
        if (r.get("metrics") or {}).get("language_match") == 0.0
    }


def load(
    run_dir: Path, rubric: Rubric, selection: dict[Key, str] | None = None, unusable: set[Key] | None = None
) -> tuple[list[Item], dict[str, int]]:
    """The items of ``rubric.metric`` the judge read (the view's records: ``selection``), and counts of
    records left out by reason (``unusable``: turns whose ASR transcript is known to be wrong)."""
    path = judge_log(run_dir, rubric.metric)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no judge records for {rubric.metric!r} (run the judge on this run first)")
    items: list[Item] = []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for record in selected(path, selection):
        text = record.get("input")
        if record.get("status") == "no_input" or not text:
            skip("nothing was judged (failed turn or no transcript)")
            continue
        if (record.get("judge") or {}).get("input_format") != INPUT_FORMAT:
            skip(f"judge input not in format {INPUT_FORMAT}")
            continue
        if record.get("reads") == "audio":
            skip("listening-judge item (the controls are text controls)")
            continue
        if unusable and record.get("reply_source") == "asr" and (str(record["conversation_id"]), int(record["turn"])) in unusable:
            skip(MISHEARD)
            continue
        try:
            context, reply = parse_input(text)
        except (ValueError, KeyError, json.JSONDecodeError):
            skip("judge input could not be parsed")
            continue
        if text_messages(rubric, context, reply)[-1]["content"] != text:
            skip("judge input does not lay out again identically")
            continue
        value = (record.get("metrics") or {}).get(rubric.metric)
        items.append(
            Item(
                metric=rubric.metric,
                conversation_id=str(record["conversation_id"]),
                turn=int(record["turn"]),
                category=str(record.get("category") or "unknown"),
                language=record.get("language"),
                context=tuple(context),
                reply=reply,
                value=None if value is None else float(value),
            )
        )
    items.sort(key=lambda i: i.unit)
    return items, skipped
