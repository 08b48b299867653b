"""The stages overlapped: each reply is transcribed, scored and judged while replay goes on.

Run one after another, the stages leave the CPU idle while the model servers answer and the servers
idle while ASR and scoring catch up. Here every stage is a ``StageRun`` (``stages.base``) fed unit by
unit as the records it needs become current:

* a reply's transcription starts as soon as its replay record is written (or found reusable);
* a conversation is scored once all its turns are final and their transcripts are, since speaker
  consistency compares the conversation's replies with each other;
* a conversation is judged once its replies, their transcripts and its user-turn transcripts are.

The units, fingerprints and reuse rule are the stages' own, so the records, the logs they go to and
the stats lines are those of the one-after-another path (``overlap=false``); only the order of
lines in a log differs. ASR and scoring run in worker threads bounded by their stage's concurrency
(``stepeval.threads``). A stage that fails outright (the responder, a judge that refuses every
request) stops the run as before; a judge endpoint error lets replay, ASR and scoring finish first.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from stepeval import threads
from stepeval.judging.llm_judge import JudgeEndpointError
from stepeval.records import Key, Record, ReplayRecord
from stepeval.stages.base import StageResult, StageRun, StageStats
from stepeval.stages.judge import JudgeStage
from stepeval.stages.replay import ReplayStage
from stepeval.stages.score import ScoreStage
from stepeval.stages.transcribe import ReplyAsrStage, UserAsrStage
from stepeval.store import RunStore
from stepeval.types import Conversation

# (conversation, replays, transcripts, user transcripts) -> units to judge, by metric
JudgePlanner = Callable[[Conversation, dict, dict | None, dict | None], dict[str, list]]


@dataclass
class Judges:
    """The judge stages (one per rubric, units added as conversations finish), how to plan a
    conversation's units, the endpoint checks to run first, and the budget the rubrics share."""

    stages: list[JudgeStage]
    planner: JudgePlanner
    concurrency: int
    preflight: list[Callable] = field(default_factory=list)


@dataclass
class Flow:
    """The stages of one run; ``asr``/``user_asr``/``judges`` are None where they do not run."""

    replay: ReplayStage
    score_factory: Callable[[dict[Key, ReplayRecord], dict | None], ScoreStage]
    asr: ReplyAsrStage | None = None
    user_asr: UserAsrStage | None = None
    judges: Judges | None = None
    busy_s: dict[str, float] = field(default_factory=dict)  # per stage, filled by run()
    wall_s: float = 0.0


async def run(flow: Flow, store: RunStore, conversations: Sequence[Conversation], progress: bool) -> dict[str, StageResult]:
    """Every stage, overlapped; results keyed like the sequential path (replay, asr, score, user_asr, judge-*)."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    workers = (flow.asr.concurrency if flow.asr else 0) + flow.replay.concurrency
    executor = ThreadPoolExecutor(max_workers=workers + 16, thread_name_prefix="stepeval-stage")
    loop.set_default_executor(executor)  # ASR, scoring, audio saves and log writes never wait for each other's threads

    judges = flow.judges
    if judges is not None:
        for check in judges.preflight:  # a judge that refuses every request: say so before any model time is spent
            await check()

    transcribe_tasks: dict[Key, asyncio.Task] = {}
    position = iter(range(64))

    asr_run = user_run = asr_semaphore = None
    if flow.asr is not None:
        asr_semaphore = asyncio.Semaphore(max(1, flow.asr.concurrency))
        asr_run = StageRun(flow.asr, store, progress, semaphore=asr_semaphore, position=next(position))

        def transcribe(record: Record) -> None:
            unit = flow.asr.unit(record)
            if unit is not None and record.key not in transcribe_tasks:
                transcribe_tasks[record.key] = asyncio.ensure_future(asr_run.submit(unit))

        replay_run = StageRun(flow.replay, store, progress, on_record=transcribe, position=next(position))
        flow.asr.replays = replay_run.current
    else:
        replay_run = StageRun(flow.replay, store, progress, position=next(position))
    score_stage = flow.score_factory(replay_run.current, asr_run.current if asr_run else None)
    scorers = _scoring_processes(score_stage.concurrency)
    score_stage.executor = scorers
    score_run = StageRun(score_stage, store, progress, position=next(position))
    if judges is not None and flow.user_asr is not None:
        user_run = StageRun(flow.user_asr, store, progress, semaphore=asr_semaphore, position=next(position))
    judge_semaphore = asyncio.Semaphore(max(1, judges.concurrency)) if judges else None
    judge_runs = [
        StageRun(s, store, progress, semaphore=judge_semaphore, position=next(position))
        for s in (judges.stages if judges else [])
    ]
    judge_failure: list[BaseException] = []

    units = {unit.conversation.id: unit for unit in flow.replay.units()}

    async def judge(conv: Conversation, user_tasks: list[asyncio.Task]) -> None:
        await asyncio.gather(*user_tasks)
        if judge_failure:
            return
        planned = judges.planner(
            conv, replay_run.current, asr_run.current if asr_run else None, user_run.current if user_run else None
        )
        done = await asyncio.gather(
            *(jr.submit(u) for jr in judge_runs for u in planned.get(_metric(jr), [])), return_exceptions=True
        )
        for outcome in done:
            if isinstance(outcome, JudgeEndpointError):
                judge_failure.append(outcome)  # later conversations are not judged; the other stages finish
            elif isinstance(outcome, BaseException):
                raise outcome

    async def conversation(conv: Conversation) -> None:
        user_tasks = []
        if user_run is not None:
            user_tasks = [asyncio.ensure_future(user_run.submit(u)) for u in flow.user_asr.units_of(conv)]
        await replay_run.submit(units[conv.id])
        turns = [(conv.id, t.index) for t in conv.turns]
        await asyncio.gather(*(transcribe_tasks[k] for k in turns if k in transcribe_tasks))
        replays = [replay_run.current[k] for k in turns if k in replay_run.current]
        steps = [score_run.submit(score_stage.unit(replays))]
        if judges is not None:
            steps.append(judge(conv, user_tasks))
        await asyncio.gather(*steps)

    tasks = [asyncio.ensure_future(conversation(conv)) for conv in conversations]
    runs = [replay_run, asr_run, score_run, user_run, *judge_runs]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in [*tasks, *transcribe_tasks.values()]:
            task.cancel()
        await asyncio.gather(*tasks, *transcribe_tasks.values(), return_exceptions=True)
        for r in runs:
            if r is not None:
                r.close()
        raise
    finally:
        executor.shutdown(wait=False)
        scorers.shutdown(wait=True, cancel_futures=True)
    if judge_failure:
        for r in runs:
            if r is not None:
                r.close()
        err = judge_failure[0]
        raise JudgeEndpointError(f"{err} (judge records written so far are kept; fix the judge config and rerun)") from None

    flow.wall_s = time.perf_counter() - started
    results = {"replay": replay_run.result()}
    results["asr"] = asr_run.result() if asr_run else StageResult(StageStats("asr"), {})
    results["score"] = score_run.result()
    if user_run is not None:
        results["user_asr"] = user_run.result()
    for jr in judge_runs:
        results[jr.stage.name] = jr.result()
    flow.busy_s = {r.stage.name: round(r.busy_s, 4) for r in runs if r is not None}
    return results


def _scoring_processes(workers: int) -> ProcessPoolExecutor:
    """Processes for the scorers (spawned: the parent has threads): in threads beside ASR, the scorers'
    Python (librosa, Resemblyzer's preprocessing) and Whisper's shared one GIL, and two cores did the
    work of one. Each process takes the thread plan and loads its models on first use."""
    return ProcessPoolExecutor(
        max_workers=max(1, workers),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_scoring_process_start,
        initargs=(threads.current(), os.getpid()),
    )


def _scoring_process_start(plan: threads.Plan, parent: int) -> None:
    """Take the thread plan, and die with the run: a killed run (SIGKILL) must not leave a scorer behind."""
    threads.configure(plan)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # elsewhere, and in case the parent died before prctl: poll
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="stepeval-parent-watch").start()


def _metric(run: StageRun) -> str:
    return run.stage.rubric.metric
