"""The judge stage: every configured rubric grades every replayed turn; one record log per metric.

A judge record's fingerprint is fingerprint(judge identity, rubric sha256, input sha256), so a
rerun asks the judge again only where the judge, the rubric or what the judge would read changed
(editing one rubric file recomputes that metric alone). Items that cannot be judged (turn failed,
no transcript) and replies the judge graded unparseably are recorded with the metric null and a
reason: missing, never 0. Requests that failed after our retries are retried on the next run, and so
are the items a stopped judge (refused key, judge down) did not ask: they are recorded ``skipped``.
A reply that was cut off is a failed request, never an unparseable verdict; verdicts stored that way by
earlier versions (no finish reason in a sample) are not reused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stepeval import secrets
from stepeval.applicability import Applicability
from stepeval.judging import rubric as rubric_mod
from stepeval.judging.audio_judge import USER_SIDES, audio_messages
from stepeval.judging.configured import endpoint, judge_client
from stepeval.judging.llm_judge import (
    INPUT_FORMAT,
    OPENAI_DEFAULT,
    JudgeClient,
    JudgeEndpointError,
    JudgeStopped,
    Prices,
    Turn,
    Verdict,
    add_usage,
    check_credentials,
    cut_off,
    input_sha256,
    readable,
    text_messages,
)
from stepeval.judging.rubric import Rubric
from stepeval.records import FAILED, SKIPPED, AsrRecord, JudgeRecord, Key, ReplayRecord
from stepeval.stages.base import Emit, Stage, StageResult, StageStats, Unit, run_stage_async
from stepeval.store import RunStore, fingerprint
from stepeval.transport import Limits
from stepeval.types import Conversation

READS = ("asr", "text", "text_then_asr")
NO_TRANSCRIPT = "(no transcript)"


def log_name(metric: str) -> str:
    return f"judge-{metric}"


def rubrics_for(judge: DictConfig) -> list[Rubric]:
    """The configured rubrics, checked (with the judge settings) before any item is judged."""
    return _check(judge)


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
        model, base_url = endpoint(judge, modality)
        if not model:
            raise ValueError(f"judge={judge.name}: judge.{'audio_' if modality == 'audio' else ''}model is not set")
        if base_url is None and not judge.api_key:
            raise ValueError(
                f"judge={judge.name}: model {model!r} is called at {OPENAI_DEFAULT} and needs an API key: "
                "set OPENAI_API_KEY (or judge.base_url for a local OpenAI-compatible server)"
            )
        check_credentials(base_url, judge.api_key, "judge.audio" if modality == "audio" and judge.audio_base_url else "judge")
    return rubrics


def printable_url(base_url: str | None) -> str:
    """The judge URL as every file and line shows it: userinfo and credential query values hidden (the
    values are registered too, so they are scrubbed wherever else they are echoed)."""
    if not base_url:
        return OPENAI_DEFAULT
    for value in secrets.url_secrets(str(base_url)):
        secrets.register_secret(value)
    return secrets.safe_url(str(base_url))


def _endpoint_info(judge: DictConfig, modality: str) -> dict:
    model, base_url = endpoint(judge, modality)
    return {"model": model, "base_url": printable_url(base_url)}


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


# --- what the judge reads -------------------------------------------------------------------


@dataclass
class Side:
    """A text the judge reads, where it came from, or why there is none."""

    text: str | None
    source: str | None
    missing: str | None = None


def reply_side(replay: ReplayRecord, asr: AsrRecord | None, reads: str, asr_enabled: bool) -> Side:
    def from_text() -> Side:
        if replay.text is not None:
            return Side(replay.text, "text")
        if replay.transcript is not None:
            return Side(replay.transcript, "model_transcript")
        return Side(None, None, "reply has no text channel (judge.reads=text)")

    def from_asr() -> Side:
        if not replay.audio:
            if replay.speaks:  # a model that speaks and returned no audio said nothing: the judge reads that
                return Side("", "empty_reply")
            return Side(None, None, f"reply has no audio to transcribe (judge.reads={reads})")
        if not asr_enabled:
            return Side(None, None, f"no ASR transcript of the reply: asr=none (judge.reads={reads})")
        if asr is None or asr.status != "ok":
            return Side(None, None, f"ASR of the reply failed: {(asr.error if asr else None) or 'no record'}")
        return Side(asr.text or "", "asr")

    if reads == "text":
        return from_text()
    if reads == "asr":
        return from_asr()
    text = from_text()
    return text if text.text and text.text.strip() else from_asr()


def user_sides(conversations: Iterable[Conversation], user_transcripts: Mapping[Key, AsrRecord] | None) -> dict[Key, Side]:
    """Each user turn's text: the dataset transcript, else the ASR of the user's audio (``user_asr``)."""
    sides: dict[Key, Side] = {}
    for conv in conversations:
        for turn in conv.turns:
            key = (conv.id, turn.index)
            heard = user_transcripts.get(key) if user_transcripts is not None else None
            if turn.text and turn.text.strip():
                sides[key] = Side(turn.text, "dataset")
            elif user_transcripts is None:
                sides[key] = Side(None, None, "no user transcript: the dataset has none and asr=none")
            elif heard is None or heard.status != "ok":
                sides[key] = Side(None, None, f"ASR of the user audio failed: {(heard.error if heard else None) or 'no record'}")
            else:
                sides[key] = Side(heard.text or "", "asr")
    return sides


# --- the judge stages ------------------------------------------------------------------------


@dataclass
class JudgeUnit(Unit):
    """One (turn, rubric) to judge: the record without its outcome, and what to send (None: nothing)."""

    base: dict[str, Any]
    messages: list[dict] | None


class JudgeStage(Stage[JudgeUnit]):
    """One rubric over every turn whose category it applies to: ``records/judge-<metric>.jsonl``."""

    unit_name = "item"

    def __init__(self, rubric: Rubric, client: JudgeClient, units: list[JudgeUnit], concurrency: int):
        self.rubric = rubric
        self.client = client
        self.name = log_name(rubric.metric)
        self._units = units
        self.concurrency = concurrency
        self.session_usage: dict = {}  # tokens of the calls made in this session

    def units(self) -> list[JudgeUnit]:
        return self._units

    def set_units(self, units: list[JudgeUnit]) -> None:
        """The planned units (run one after another); overlapped runs feed units per conversation."""
        self._units = units

    def usable(self, record) -> bool:
        return not cut_verdict(record)

    async def compute(self, unit: JudgeUnit, stored: dict, emit: Emit) -> None:
        try:
            verdict = None if unit.messages is None else await self.client.judge(unit.messages, self.rubric)
        except JudgeStopped as err:  # not asked, or cancelled in flight: the next run asks it
            await emit(_stopped(self.rubric, unit.base, SKIPPED, f"not judged: the judge stopped: {err}"))
            return
        except JudgeEndpointError as err:  # this item's request was refused (401/403/404) or could not connect
            await emit(_stopped(self.rubric, unit.base, FAILED, str(err)))
            return
        if verdict is not None:
            add_usage(self.session_usage, verdict.usage)
        await emit(_record(self.rubric, unit.base, verdict))


def cut_verdict(record: JudgeRecord) -> bool:
    """A verdict stored by an earlier version from a reply that was cut off (a sample with a raw reply but
    no finish reason): a transport failure that was taken for an unparseable grade, so it is asked again."""
    return cut_off({"status": record.status, "samples": record.samples})


def _stopped(rubric: Rubric, base: dict, status: str, why: str) -> JudgeRecord:
    fields = {k: v for k, v in base.items() if k != "missing_input"}
    aggregation = "majority" if rubric.scale == "yes_no" else "mean"
    return JudgeRecord(
        **fields, status=status, error=why, aggregation=aggregation, metrics={rubric.metric: None}, missing={rubric.metric: why}
    )


def plan(
    judge: DictConfig,
    conversations: Sequence[Conversation],
    replays: Mapping[Key, ReplayRecord],
    transcripts: Mapping[Key, AsrRecord] | None,
    user_transcripts: Mapping[Key, AsrRecord] | None,
    rubrics: list[Rubric],
    clients: dict[str, JudgeClient],
    applicability: Applicability,
    run_root: Path,
) -> dict[str, list[JudgeUnit]]:
    """Every (turn, rubric) to judge, by metric, with the fingerprint fingerprint(judge identity, rubric
    sha256, input sha256). Turns of categories a rubric does not apply to are not judged at all."""
    users = user_sides(conversations, user_transcripts)
    units: dict[str, list[JudgeUnit]] = {r.metric: [] for r in rubrics}
    for conv in conversations:
        earlier: list[Turn] = []
        applying = [r for r in rubrics if applicability.applies(r.metric, conv.category)]
        for turn in conv.turns:
            key = (conv.id, turn.index)
            replay = replays.get(key)
            if replay is None:
                continue
            user = users[key]
            asr = transcripts.get(key) if transcripts is not None else None
            reply = reply_side(replay, asr, judge.reads, transcripts is not None)
            for r in applying:
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
                if replay.status != "ok":
                    why = f"turn {replay.status}: {replay.error or ''}".strip()
                elif r.modality == "text":
                    base.update({"reads": judge.reads, "reply_source": reply.source})
                    why = user.missing or reply.missing
                    if why is None:
                        messages = text_messages(r, [*earlier, Turn("user", user.text)], reply.text or "")
                else:
                    base.update({"reads": "audio", "reply_source": "audio", "audio_user": judge.audio_user})
                    text = user.text if judge.audio_user in ("transcript", "both") else None
                    sound = turn.audio_path if judge.audio_user in ("audio", "both") else None
                    if not replay.audio:
                        why = "reply has no audio for the listening judge"
                    elif judge.audio_user == "transcript" and text is None:
                        why = user.missing
                    else:
                        if text is None:
                            base["user_source"] = "audio"
                        elif sound is not None:
                            base["user_source"] = f"{user.source}+audio"
                        messages = audio_messages(r, earlier, text, sound, run_root / replay.audio)
                if messages is not None:
                    digest = input_sha256(messages)
                    base.update({"input_sha256": digest, "input": readable(messages)})
                    fp = fingerprint(client.identity(), r.sha256, digest)
                else:
                    base["missing_input"] = why
                    fp = fingerprint(client.identity(), r.sha256, "no input", why)
                base["fingerprint"] = fp
                units[r.metric].append(JudgeUnit({key: fp}, base, messages))
            if replay.status == "ok":
                earlier.append(Turn("user", user.text if user.text is not None else NO_TRANSCRIPT))
                earlier.append(Turn("assistant", reply.text if reply.text is not None else NO_TRANSCRIPT))
    return units


def _record(rubric: Rubric, base: dict, verdict: Verdict | None) -> JudgeRecord:
    metric = rubric.metric
    fields = {k: v for k, v in base.items() if k != "missing_input"}
    aggregation = "majority" if rubric.scale == "yes_no" else "mean"
    if verdict is None:
        why = base["missing_input"]
        return JudgeRecord(**fields, status="no_input", aggregation=aggregation, metrics={metric: None}, missing={metric: why})
    return JudgeRecord(
        **fields,
        status=verdict.status,
        error=verdict.missing if verdict.status == "failed" else None,
        aggregation=aggregation,
        metrics={metric: verdict.value},
        missing={metric: verdict.missing} if verdict.value is None else {},
        samples=verdict.samples,
        usage=verdict.usage,
        cost_usd=verdict.cost_usd,
        response_format=getattr(verdict, "response_format", None),
    )


def clients_for(judge: DictConfig, rubrics: list[Rubric]) -> dict[str, JudgeClient]:
    for name in ("httpx", "httpx2"):  # the SDK's HTTP client logs one INFO line per call: it would drown the output
        logging.getLogger(name).setLevel(logging.WARNING)
    limits = Limits(judge.requests_per_minute, judge.tokens_per_minute)  # one budget for the judge account
    return {m: judge_client(judge, m, limits) for m in sorted({r.modality for r in rubrics})}


async def run_judges(
    judge: DictConfig, stages: list[JudgeStage], clients: dict[str, JudgeClient], store: RunStore, progress: bool
) -> list[StageResult]:
    """Check each judge endpoint (a wrong URL, key or model stops the run here, before the first item),
    then judge rubric after rubric. A judge that stops mid-run (refused key, judge down) does not raise:
    its items are recorded failed/skipped (``JudgeStage.compute``) and a later rubric's items are skipped
    without a request."""
    try:
        for client in clients.values():
            await client.preflight()
        return [await run_stage_async(stage, store, progress) for stage in stages]
    finally:
        for client in clients.values():
            await client.aclose()


def usage_summary(results: list[StageResult], session: dict, judge: DictConfig) -> dict:
    """Tokens and estimated cost: of this session's calls, and of all current judge records."""
    records: dict = {}
    cost: float | None = 0.0
    for result in results:
        for record in result.current.values():
            if isinstance(record, JudgeRecord) and record.usage:
                add_usage(records, record.usage)
                cost = None if cost is None or record.cost_usd is None else cost + record.cost_usd
    p = Prices(judge.price_input_per_mtok, judge.price_output_per_mtok, judge.price_audio_input_per_mtok)
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
        f"Judge {judge.model or judge.audio_model} ({printable_url(judge.base_url)}), rubrics {names} "
        f"(stepeval's own, docs/judging.md); the text judge reads {reads[judge.reads]} of each reply and the dataset "
        "transcript of each user turn (else its ASR)."
    ]
    judged = [s for s in stats if s.stage.startswith("judge-")]
    unparseable = sum(s.statuses.get("unparseable", 0) + s.statuses.get("tied", 0) for s in judged)
    no_input = sum(s.statuses.get("no_input", 0) for s in judged)
    if unparseable:
        out.append(f"{unparseable} judge item(s) left unscored: unparseable judge reply (raw replies in records/judge-*.jsonl).")
    if no_input:
        out.append(f"{no_input} judge item(s) had nothing to judge (failed turn or no transcript; see records/judge-*.jsonl).")
    not_asked = sum(s.skipped for s in judged)
    if not_asked:
        out.append(
            f"{not_asked} judge item(s) not judged: the judge stopped (refused key or judge down; the reason is in "
            "records/judge-*.jsonl); rerun the same command to ask them."
        )
    return out
