"""Judging derived items with a cache, so a rerun of the validation costs nothing.

Every verdict is stored in ``records/validation-<metric>.jsonl`` under
``fingerprint(judge identity, rubric sha256, input sha256)``: the same formula as the run's own
judge records, so an original item the run already judged with this very judge is reused from
``records/judge-<metric>.jsonl`` without a request. Failed requests are not cached (retried next time).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stepeval.judging.configured import judge_client
from stepeval.judging.identity import bare_url
from stepeval.judging.llm_judge import JudgeClient, add_usage, cut_off, input_sha256
from stepeval.judging.rubric import Rubric
from stepeval.store import GroupCommitter, RecordLog, fingerprint
from stepeval.validation.items import Item, judge_log


@dataclass
class Task:
    """One request: an item (original or derived) as the judge will read it."""

    item: Item
    variant: str  # "original", "shuffle", "truncate", "wer-0.2", ...
    messages: list[dict]
    extra: dict = field(default_factory=dict)


@dataclass
class Outcome:
    value: float | None
    status: str  # ok | unparseable | tied | failed
    missing: str | None = None
    reused: bool = False


@dataclass
class Tally:
    reused: int = 0
    computed: int = 0
    failed: int = 0
    usage: dict = field(default_factory=dict)


def build_client(judge: DictConfig, seed_offset: int = 0, modality: str = "text") -> JudgeClient:
    """The text (or listening) judge a judge config describes (``seed_offset`` shifts its seed: the
    self-consistency repeat)."""
    return judge_client(judge, modality, seed_offset=seed_offset)


def cache_path(run_dir: Path, metric: str) -> Path:
    return Path(run_dir) / "records" / f"validation-{metric}.jsonl"


def read_lines(path: Path) -> list[dict]:
    """Records of a JSON Lines file in order (a torn last line is ignored; a corrupt one names the line)."""
    if not path.is_file():
        return []
    out = []
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines[:-1], start=1):
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: corrupt record ({err})") from err
    return out


class CachedJudge:
    """One judge configuration grading one rubric's items, through the cache."""

    def __init__(self, client: JudgeClient, rubric: Rubric, run_dir: Path, concurrency: int, role: str):
        self.client = client
        self.rubric = rubric
        self.role = role  # "primary", "repeat", "second": for the record only
        found = client.identity()  # recorded without the endpoint's credentials (the fingerprint uses it whole)
        self.identity = {**found, "base_url": bare_url(found.get("base_url"))}
        self.identity.update({"rubric": rubric.name, "rubric_sha256": rubric.sha256})
        self.concurrency = max(1, int(concurrency))
        self.log = RecordLog(cache_path(run_dir, rubric.metric))
        self.committer = GroupCommitter(self.log)  # fsyncs off the event loop, batched
        self.cache: dict[str, dict] = {
            r["fingerprint"]: r for r in read_lines(self.log.path) if r.get("status") != "failed" and not cut_off(r)
        }
        for record in RecordLog(judge_log(run_dir, rubric.metric)).load().values():
            usable = record.get("status") not in (None, "failed", "skipped", "no_input") and not cut_off(record)
            if usable and record.get("fingerprint"):
                self.cache.setdefault(
                    record["fingerprint"],
                    {
                        "value": (record.get("metrics") or {}).get(rubric.metric),
                        "status": record["status"],
                        "missing": (record.get("missing") or {}).get(rubric.metric),
                    },
                )
        self.tally = Tally()

    def fingerprint(self, messages: list[dict]) -> str:
        return fingerprint(self.client.identity(), self.rubric.sha256, input_sha256(messages))

    async def _one(self, task: Task, semaphore: asyncio.Semaphore) -> Outcome:
        fp = self.fingerprint(task.messages)
        hit = self.cache.get(fp)
        if hit is not None:
            self.tally.reused += 1
            value = hit.get("value")
            return Outcome(None if value is None else float(value), hit.get("status", "ok"), hit.get("missing"), True)
        async with semaphore:
            verdict = await self.client.judge(task.messages, self.rubric)
        add_usage(self.tally.usage, verdict.usage)
        record: dict[str, Any] = {
            "conversation_id": task.item.conversation_id,
            "turn": task.item.turn,
            "category": task.item.category,
            "metric": self.rubric.metric,
            "variant": task.variant,
            "role": self.role,
            "judge": self.identity,
            "input_sha256": input_sha256(task.messages),
            "fingerprint": fp,
            "status": verdict.status,
            "value": verdict.value,
            "missing": verdict.missing,
            "extra": task.extra,
            "samples": verdict.samples,
            "usage": verdict.usage,
            "cost_usd": verdict.cost_usd,
        }
        await self.committer.append(record)
        if verdict.status == "failed":
            self.tally.failed += 1
        else:
            self.tally.computed += 1
            self.cache[fp] = record
        return Outcome(verdict.value, verdict.status, verdict.missing)

    async def judge_all(self, tasks: list[Task]) -> list[Outcome]:
        semaphore = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._one(t, semaphore) for t in tasks)))

    def close(self) -> None:
        self.log.close()


def quiet_http_logs() -> None:
    for name in ("httpx", "httpx2"):  # one INFO line per request would drown the output
        logging.getLogger(name).setLevel(logging.WARNING)
