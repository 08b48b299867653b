"""The judge stage: every configured rubric grades every replayed turn; one record log per metric.

A judge record's fingerprint is fingerprint(judge identity, rubric sha256, input sha256), so a
rerun asks the judge again only where the judge, the rubric or what the judge would read changed
(editing one rubric file recomputes that metric alone). Items that cannot be judged (turn failed,
no transcript) and replies the judge graded unparseably are recorded with the metric null and a
reason: missing, never 0. Requests that failed after our retries are retried on the next run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from stepeval import audio as audio_io
from stepeval.judging import rubric as rubric_mod
from stepeval.judging.audio_judge import USER_SIDES, audio_messages
from stepeval.judging.llm_judge import (
    INPUT_FORMAT,
    OPENAI_DEFAULT,
    JudgeClient,
    Prices,
    Settings,
    Turn,
    Verdict,
    add_usage,
    input_sha256,
    readable,
    text_messages,
)
from stepeval.judging.rate_limit import JudgeEndpointError, Limits, RetryPolicy
from stepeval.judging.rubric import Rubric
from stepeval.stages.replay import StageStats
from stepeval.store import RunStore, fingerprint

READS = ("asr", "text", "text_then_asr")
USER_ASR_LOG = "user_asr"  # transcripts of user audio, for datasets without transcripts
NO_TRANSCRIPT = "(no transcript)"


def log_name(metric: str) -> str:
    return f"judge-{metric}"


@dataclass
class JudgeStats(StageStats):
    """A judge log's counts; ``computed`` includes the unparseable and no-input items."""

    unparseable: int = 0
    no_input: int = 0
    usage: dict = field(default_factory=dict)
    current: dict = field(default_factory=dict)  # status -> count over all current records, reused ones included

    def line(self) -> str:
        total = self.reused + self.computed + self.failed
        text = f"{self.stage}: {total} records: {self.reused} reused, {self.computed} computed"
        extra = [f"{n} {what}" for n, what in ((self.unparseable, "unparseable"), (self.no_input, "without input")) if n]
        if self.failed:
            extra.append(f"{self.failed} failed")
        return text + (f" ({', '.join(extra)})" if extra else "")


def enabled(judge: DictConfig) -> bool:
    return bool(judge.get("metrics"))


def _check(judge: DictConfig) -> list[Rubric]:
    if judge.reads not in READS:
        raise ValueError(f"judge.reads={judge.reads!r}; expected one of {list(READS)}")
    if judge.audio_user not in USER_SIDES:
        raise ValueError(f"judge.audio_user={judge.audio_user!r}; expected one of {list(USER_SIDES)}")
    if judge.concurrency < 1:
        raise ValueError(f"judge.concurrency must be >= 1, got {judge.concurrency}")
    rubrics = rubric_mod.load_all(rubric_mod.rubrics_dir(judge.rubrics_dir), [str(m) for m in judge.metrics])
    for modality in sorted({r.modality for r in rubrics}):
        model, base_url = _endpoint(judge, modality)
        if not model:
            raise ValueError(f"judge={judge.name}: judge.{'audio_' if modality == 'audio' else ''}model is not set")
        if base_url is None and not judge.api_key:
            raise ValueError(
                f"judge={judge.name}: model {model!r} is called at {OPENAI_DEFAULT} and needs an API key: "
                "set OPENAI_API_KEY (or judge.base_url for a local OpenAI-compatible server)"
            )
    return rubrics


def _endpoint(judge: DictConfig, modality: str) -> tuple[str | None, str | None]:
    if modality == "audio":
        return judge.audio_model or judge.model, judge.audio_base_url or judge.base_url
    return judge.model, judge.base_url


def _endpoint_info(judge: DictConfig, modality: str) -> dict:
    model, base_url = _endpoint(judge, modality)
    return {"model": model, "base_url": base_url or OPENAI_DEFAULT}


def describe(judge: DictConfig) -> dict:
    """The manifest's judge section (never the API key). Loads and checks the rubrics, so a bad
    judge config fails before any turn is replayed."""
    info: dict[str, Any] = {"name": judge.name}
    if not enabled(judge):
        return info
    rubrics = _check(judge)
    info.update(
        {
            "rubrics": {r.metric: {"name": r.name, **r.describe()} for r in rubrics},
            "endpoints": {m: _endpoint_info(judge, m) for m in sorted({r.modality for r in rubrics})},
            "reads": judge.reads,
            "audio_user": judge.audio_user,
            "input_format": INPUT_FORMAT,
            "settings": {
                "temperature": judge.temperature,
                "seed": judge.seed,
                "samples": judge.samples,
                "aggregation": {"yes_no": "majority", "likert": "mean"},
                "structured_output": judge.structured_output,
                "max_tokens": judge.max_tokens,
            },
            "prices_usd_per_mtok": {
                "input": judge.price_input_per_mtok,
                "output": judge.price_output_per_mtok,
                "audio_input": judge.price_audio_input_per_mtok,
            },
        }
    )
    return info


def _client(judge: DictConfig, modality: str, limits: Limits) -> JudgeClient:
    model, base_url = _endpoint(judge, modality)
    settings = Settings(
        temperature=judge.temperature,
        seed=judge.seed,
        samples=judge.samples,
        structured_output=judge.structured_output,
        max_tokens=judge.max_tokens,
        timeout_s=judge.timeout_s,
    )
    policy = RetryPolicy(judge.max_retries, judge.backoff_base_s, judge.backoff_max_s, judge.retry_after_max_s)
    prices = Prices(judge.price_input_per_mtok, judge.price_output_per_mtok, judge.price_audio_input_per_mtok)
    return JudgeClient(str(model), base_url, judge.api_key, settings, policy, limits, prices)


# --- what the judge reads -------------------------------------------------------------------


@dataclass
class Side:
    """A text the judge reads, where it came from, or why there is none."""

    text: str | None
    source: str | None
    missing: str | None = None


def reply_side(replay: dict, asr: dict | None, reads: str, asr_enabled: bool) -> Side:
    def from_text() -> Side:
        if replay.get("text") is not None:
            return Side(replay["text"], "text")
        if replay.get("transcript") is not None:
            return Side(replay["transcript"], "model_transcript")
        return Side(None, None, "reply has no text channel (judge.reads=text)")

    def from_asr() -> Side:
        if not replay.get("audio"):
            return Side(None, None, f"reply has no audio to transcribe (judge.reads={reads})")
        if not asr_enabled:
            return Side(None, None, f"no ASR transcript of the reply: asr=none (judge.reads={reads})")
        if asr is None or asr.get("status") != "ok":
            return Side(None, None, f"ASR of the reply failed: {(asr or {}).get('error', 'no record')}")
        return Side(asr.get("text") or "", "asr")

    if reads == "text":
        return from_text()
    if reads == "asr":
        return from_asr()
    text = from_text()
    return text if text.text and text.text.strip() else from_asr()


def _user_sides(conversations: Iterable, store: RunStore, asr: Any, progress: bool) -> dict:
    """Each user turn's text: the dataset transcript, else (when ASR runs) the ASR of the user's
    audio, cached in records/user_asr.jsonl by (ASR identity, audio sha256)."""
    sides: dict = {}
    todo = []
    for conv in conversations:
        for turn in conv.turns:
            if turn.text and turn.text.strip():
                sides[(conv.id, turn.index)] = Side(turn.text, "dataset")
            elif asr is None:
                sides[(conv.id, turn.index)] = Side(None, None, "no user transcript: the dataset has none and asr=none")
            else:
                todo.append((conv, turn))
    if not todo:
        return sides
    log = store.log(USER_ASR_LOG)
    existing = log.load()
    ident = asr.identity()
    for conv, turn in tqdm(todo, desc="transcribe user", unit="turn", disable=not progress, dynamic_ncols=True):
        key = (conv.id, turn.index)
        fp = fingerprint(ident, audio_io.file_sha256(turn.audio_path))
        record = existing.get(key)
        if record is None or record.get("fingerprint") != fp or record.get("status") != "ok":
            base = {"conversation_id": conv.id, "turn": turn.index, "stage": USER_ASR_LOG, "fingerprint": fp}
            try:
                samples, rate = audio_io.read(turn.audio_path)
                record = {**base, "status": "ok", "text": asr.transcribe(samples, rate).text}
            except Exception as err:  # recorded; the judge items that need it are missing
                record = {**base, "status": "failed", "error": f"{type(err).__name__}: {err}"}
            log.append(record)
        if record["status"] == "ok":
            sides[key] = Side(record["text"], "asr")
        else:
            sides[key] = Side(None, None, f"ASR of the user audio failed: {record['error']}")
    return sides


# --- planning and running -------------------------------------------------------------------


@dataclass
class Item:
    rubric: Rubric
    client: JudgeClient
    base: dict  # the record without its outcome
    messages: list[dict] | None  # None: nothing to send (see base["missing"])


def _plan(prepared: Any, store: RunStore, rubrics: list[Rubric], clients: dict[str, JudgeClient]) -> list[Item]:
    judge = prepared.cfg.judge
    conversations = prepared.dataset.conversations
    replays = store.log("replay").load()
    asr_records = store.log("asr").load() if prepared.asr is not None else {}
    users = _user_sides(conversations, store, prepared.asr, prepared.cfg.progress)
    items: list[Item] = []
    for conv in conversations:
        earlier: list[Turn] = []
        for turn in conv.turns:
            key = (conv.id, turn.index)
            replay = replays.get(key)
            if replay is None:
                continue
            user = users[key]
            reply = reply_side(replay, asr_records.get(key), judge.reads, prepared.asr is not None)
            for r in rubrics:
                client = clients[r.modality]
                base: dict[str, Any] = {
                    "conversation_id": conv.id,
                    "turn": turn.index,
                    "stage": log_name(r.metric),
                    "category": conv.category,
                    "language": conv.language,
                    "judge": {**client.identity(), "rubric": r.name, "rubric_sha256": r.sha256},
                    "user_source": user.source,
                }
                messages, why = None, None
                if replay.get("status") != "ok":
                    why = f"turn {replay.get('status')}: {replay.get('error', '')}".strip()
                elif r.modality == "text":
                    base.update({"reads": judge.reads, "reply_source": reply.source})
                    why = user.missing or reply.missing
                    if why is None:
                        messages = text_messages(r, [*earlier, Turn("user", user.text)], reply.text or "")
                else:
                    base.update({"reads": "audio", "reply_source": "audio", "audio_user": judge.audio_user})
                    text = user.text if judge.audio_user in ("transcript", "both") else None
                    sound = turn.audio_path if judge.audio_user in ("audio", "both") else None
                    if not replay.get("audio"):
                        why = "reply has no audio for the listening judge"
                    elif judge.audio_user == "transcript" and text is None:
                        why = user.missing
                    else:
                        if text is None:
                            base["user_source"] = "audio"
                        elif sound is not None:
                            base["user_source"] = f"{user.source}+audio"
                        messages = audio_messages(r, earlier, text, sound, store.root / replay["audio"])
                if messages is not None:
                    digest = input_sha256(messages)
                    base.update({"input_sha256": digest, "input": readable(messages)})
                    base["fingerprint"] = fingerprint(client.identity(), r.sha256, digest)
                else:
                    base.update({"missing_input": why})
                    base["fingerprint"] = fingerprint(client.identity(), r.sha256, "no input", why)
                items.append(Item(r, client, base, messages))
            if replay.get("status") == "ok":
                earlier.append(Turn("user", user.text if user.text is not None else NO_TRANSCRIPT))
                earlier.append(Turn("assistant", reply.text if reply.text is not None else NO_TRANSCRIPT))
    return items


def _record(item: Item, verdict: Verdict | None) -> dict:
    metric = item.rubric.metric
    record = dict(item.base)
    record["aggregation"] = "majority" if item.rubric.scale == "yes_no" else "mean"
    if verdict is None:
        why = record.pop("missing_input")
        record.update({"status": "no_input", "metrics": {metric: None}, "missing": {metric: why}})
        return record
    record.update(
        {
            "status": verdict.status,
            "metrics": {metric: verdict.value},
            "missing": {metric: verdict.missing} if verdict.value is None else {},
            "samples": verdict.samples,
            "usage": verdict.usage,
            "cost_usd": verdict.cost_usd,
        }
    )
    return record


def run(prepared: Any, store: RunStore, manifest: dict | None = None) -> list[JudgeStats]:
    """Judge every current turn with every configured rubric; returns one StageStats per metric."""
    judge = prepared.cfg.judge
    if not enabled(judge):
        return []
    rubrics = _check(judge)
    for name in ("httpx", "httpx2"):  # the SDK's HTTP client logs one INFO line per call: it would drown the output
        logging.getLogger(name).setLevel(logging.WARNING)
    limits = Limits(judge.requests_per_minute, judge.tokens_per_minute)  # one budget for the judge account
    clients = {m: _client(judge, m, limits) for m in sorted({r.modality for r in rubrics})}
    stats = {r.metric: JudgeStats(log_name(r.metric)) for r in rubrics}
    logs = {r.metric: store.log(log_name(r.metric)) for r in rubrics}
    existing = {r.metric: logs[r.metric].load() for r in rubrics}
    items = _plan(prepared, store, rubrics, clients)
    todo = []
    for item in items:
        key = (item.base["conversation_id"], item.base["turn"])
        old = existing[item.rubric.metric].get(key)
        if old is not None and old.get("fingerprint") == item.base["fingerprint"] and old.get("status") != "failed":
            stats[item.rubric.metric].reused += 1
        else:
            todo.append(item)

    def save(item: Item, verdict: Verdict | None) -> None:
        record = _record(item, verdict)
        logs[item.rubric.metric].append(record)
        s = stats[item.rubric.metric]
        status = record["status"]
        s.failed += status == "failed"
        s.computed += status != "failed"
        s.unparseable += status in ("unparseable", "tied")
        s.no_input += status == "no_input"
        if status == "failed":
            s.errors.append(f"{record['conversation_id']} turn {record['turn']}: {record['missing'][item.rubric.metric]}")
        add_usage(s.usage, record.get("usage", {}))

    async def go() -> None:
        semaphore = asyncio.Semaphore(judge.concurrency)
        bar = tqdm(total=len(todo), desc="judge", unit="item", disable=not prepared.cfg.progress, dynamic_ncols=True)

        async def one(item: Item) -> None:
            if item.messages is None:
                save(item, None)
            else:
                async with semaphore:
                    verdict = await item.client.judge(item.messages, item.rubric)
                save(item, verdict)
            bar.update(1)

        tasks = [asyncio.ensure_future(one(i)) for i in todo]
        try:
            await asyncio.gather(*tasks)
        except JudgeEndpointError as err:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise JudgeEndpointError(f"{err} (judge records written so far are kept; fix the judge config and rerun)") from None
        finally:
            bar.close()
            for client in clients.values():
                await client.aclose()

    asyncio.run(go())
    current = {r.metric: logs[r.metric].load() for r in rubrics}
    for item in items:
        record = current[item.rubric.metric].get((item.base["conversation_id"], item.base["turn"]), {})
        counts = stats[item.rubric.metric].current
        counts[record.get("status")] = counts.get(record.get("status"), 0) + 1
    if manifest is not None:
        manifest.setdefault("judge", describe(judge))["usage"] = _usage_summary(stats.values(), logs, items, prices=judge)
    return list(stats.values())


def _usage_summary(stats: Iterable[JudgeStats], logs: dict, items: list[Item], prices: DictConfig) -> dict:
    """Tokens and estimated cost: of this session's calls, and of all current judge records."""
    session: dict = {}
    for s in stats:
        add_usage(session, s.usage)
    current = {(i.rubric.metric, i.base["conversation_id"], i.base["turn"]) for i in items}
    records: dict = {}
    cost: float | None = 0.0
    for metric, log in logs.items():
        for key, record in log.load().items():
            if (metric, *key) in current:
                add_usage(records, record.get("usage", {}))
                if record.get("usage"):
                    cost = None if cost is None or record.get("cost_usd") is None else cost + record["cost_usd"]
    p = Prices(prices.price_input_per_mtok, prices.price_output_per_mtok, prices.price_audio_input_per_mtok)
    return {
        "this_session": {**session, "cost_usd": p.cost(session)},
        "current_records": {**records, "cost_usd": None if cost is None else round(cost, 6)},
        "cost_note": "estimate from judge.price_*_per_mtok" if p.input is not None else "no prices configured: cost unknown",
    }


def notes(cfg: DictConfig, stats: list[StageStats]) -> list[str]:
    """Lines under the table: what the judge read, and how many items it left unscored."""
    judge = cfg.judge
    if not enabled(judge):
        return []
    reads = {"asr": "the ASR transcript", "text": "the text channel", "text_then_asr": "the text channel (else ASR)"}
    names = ", ".join(str(m) for m in judge.metrics)
    out = [
        f"Judge {judge.model or judge.audio_model} ({judge.base_url or OPENAI_DEFAULT}), rubrics {names} "
        f"(stepeval's own, docs/judging.md); the text judge reads {reads[judge.reads]} of each reply and the dataset "
        "transcript of each user turn (else its ASR)."
    ]
    judged = [s for s in stats if isinstance(s, JudgeStats)]
    unparseable = sum(s.current.get("unparseable", 0) + s.current.get("tied", 0) for s in judged)
    no_input = sum(s.current.get("no_input", 0) for s in judged)
    if unparseable:
        out.append(f"{unparseable} judge item(s) left unscored: unparseable judge reply (raw replies in records/judge-*.jsonl).")
    if no_input:
        out.append(f"{no_input} judge item(s) had nothing to judge (failed turn or no transcript; see records/judge-*.jsonl).")
    return out
