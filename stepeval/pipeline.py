"""The run, as the list of its stages: replay -> reply ASR -> user ASR -> signals -> judges -> view.

Every stage goes through the one runner (``stages.base``), so each computes only the records that
are missing, stale or failed for the current configuration. The replies are shared by every view
of the run; the view (which conversations, ASR, judge, metrics config) gets its own summary and table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from stepeval import __version__, secrets, threads, views
from stepeval import audio as audio_io
from stepeval.applicability import Applicability
from stepeval.asr.engines import AsrEngine
from stepeval.client.build import build_responder, latency_protocol, model_identity
from stepeval.client.responder import Responder
from stepeval.conditions import InputCondition
from stepeval.config import check_config, check_target, redact, to_container
from stepeval.data import loader
from stepeval.judging import identity as judge_identity
from stepeval.judging.llm_judge import add_usage
from stepeval.provenance import code_revision, package_versions
from stepeval.reporting import validity
from stepeval.reporting.records import turn_scores
from stepeval.reporting.summary import markdown_table, summarise
from stepeval.secrets import scrub
from stepeval.signals import scoring as signals
from stepeval.stages import flow as stage_flow
from stepeval.stages import judge as judge_stage
from stepeval.stages.base import StageResult, StageStats, run_stage, run_stage_async
from stepeval.stages.replay import ReplaySettings, ReplayStage
from stepeval.stages.score import ScoreStage
from stepeval.stages.transcribe import ReplyAsrStage, UserAsrStage
from stepeval.store import RunStore, fingerprint, write_json_atomic

EXTRA_HINT = {
    "dnsmos": "pip install 'stepeval[judges]'",
    "speaker": "pip install 'stepeval[speaker]' && pip install --no-deps resemblyzer==0.1.4",
    "pitch": "pip install 'stepeval[judges]'",
    "utmos": "pip install 'stepeval[judges]' torch, and reach torch.hub",
}


ADDED_DATASET_KEYS = ("split",)
# where files go, what the set is called, what may be read: not what the replies depend on
LABEL_DATASET_KEYS = ("cache_dir", "benchmark", "allow_outside_paths")


@dataclass
class Prepared:
    """Everything checked and built before any turn runs, so bad config fails fast."""

    cfg: DictConfig
    run_name: str
    responder: Responder
    asr: AsrEngine | None
    dataset: loader.LoadedDataset
    applicability: Applicability
    dataset_conversations: int  # before ``limit``: a view of fewer is a subset
    warnings: list[str] = field(default_factory=list)
    condition: InputCondition = field(default_factory=InputCondition)  # input=: what happens to the user's audio
    text_sources: dict[str, int] = field(default_factory=dict)  # input=text: where each turn's text came from
    busy_s: dict[str, float] = field(default_factory=dict)  # overlapped stages: each one's busy time (benchmarks)
    wall_s: float | None = None  # overlapped stages: their wall time together


@dataclass
class RunOutcome:
    """Where the run and its view are, and every reason the run is not clean (empty: exit 0)."""

    root: Path
    view_dir: Path
    problems: list[str]


def run_name_for(cfg: DictConfig) -> str:
    """Derived from what determines the replies, not from the clock: the same command finds the same run."""
    if cfg.run_name:
        return str(cfg.run_name)
    plain = to_container(cfg)
    # keys added after runs existed count only when set, so earlier runs keep their names (and resume)
    dataset = {
        k: v for k, v in plain["dataset"].items() if k not in LABEL_DATASET_KEYS and not (k in ADDED_DATASET_KEYS and v is None)
    }
    if isinstance(dataset.get("columns"), dict) and dataset["columns"].get("role") is None:  # columns.role came later
        dataset["columns"] = {k: v for k, v in dataset["columns"].items() if k != "role"}
    model = model_identity(plain["model"])  # no endpoints, keys or timeouts: replicas must not change the run
    condition = InputCondition.from_config(plain.get("input"))
    if condition.clean:  # runs from before input conditions keep their names
        digest = fingerprint(dataset, model, plain["history"], plain["seed"])[:8]
        return f"{cfg.dataset.name}-{cfg.model.name}-{digest}"
    digest = fingerprint(dataset, model, plain["history"], plain["seed"], condition.identity())[:8]
    return f"{cfg.dataset.name}-{cfg.model.name}-{condition.name}-{digest}"


def check_run_keys(cfg: DictConfig) -> None:
    """Values the schema's types cannot rule out; named by their key."""
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"limit={cfg.limit}: must be a positive number of conversations, or null for all of them")
    if cfg.concurrency < 1:
        raise ValueError(f"concurrency={cfg.concurrency}: must be >= 1 (conversations in flight)")
    if cfg.model.concurrency is not None and cfg.model.concurrency < 1:
        raise ValueError(f"model.concurrency={cfg.model.concurrency}: must be >= 1, or null for the top-level concurrency")


def prepare(cfg: DictConfig) -> Prepared:
    check_run_keys(cfg)
    check_config(cfg)
    condition = InputCondition.from_config(to_container(cfg).get("input"))
    condition.check()
    applicability = Applicability.from_config(to_container(cfg).get("metrics"))
    responder = build_responder(cfg)  # the wire client when the model names endpoints, else its in-process backend
    if condition.sends_text and not getattr(responder, "takes_text", False):
        raise ValueError(
            f"input={condition.name}: model={cfg.model.name} cannot take a user turn as text (it needs audio); "
            "run it with an audio input condition, or use a model that takes text (a served model, cascade)"
        )

    asr = None
    if cfg.asr.engine is not None:
        check_target(cfg.asr.engine, "asr.engine")
        asr = instantiate(cfg.asr.engine)
        _check_asr(asr, str(cfg.asr.name))

    ds_cfg = cfg.dataset
    location = ds_cfg.local_dir if ds_cfg.source.value == "local" else ds_cfg.repo_id
    dataset = loader.load_configured(to_container(ds_cfg))
    total = len(dataset.conversations)
    if not total:
        raise ValueError(
            f"dataset={ds_cfg.name}: no conversations found in {location or 'the bundled sample'}: the dataset is empty"
        )
    if cfg.limit:
        dataset.conversations = dataset.conversations[: cfg.limit]
    _check_history_inputs(cfg.history.value, dataset)
    text_sources = _fill_user_text(condition, dataset, asr) if condition.needs_text else {}
    prepared = Prepared(cfg, run_name_for(cfg), responder, asr, dataset, applicability, total)
    prepared.condition, prepared.text_sources = condition.with_pool(dataset.conversations), text_sources
    prepared.warnings = _category_warnings(prepared) + _unavailable_warnings(cfg)
    return prepared


OFFLINE_ASR = "whisper_base_offline"  # packaged with the asr extra: needs no download


def _check_asr(asr: AsrEngine, name: str) -> None:
    """The ASR's packages and weights before the first turn (as for judges): otherwise every turn is replayed
    and then every ASR record fails. One line naming the config and what to pick instead."""
    try:
        asr.check()
    except (ImportError, ValueError, OSError, RuntimeError) as err:
        others = ", ".join(f"asr={o}" for o in (OFFLINE_ASR, "none") if o != name)
        message = f"asr={name} cannot run: {err}. Pick another ASR config, e.g. {others} (none: no transcripts)"
        kind = next(t for t in (ImportError, ValueError, OSError, RuntimeError) if isinstance(err, t))
        raise kind(message) from err


def _check_history_inputs(policy: str, dataset: loader.LoadedDataset) -> None:
    """The transcript policy sends earlier user turns as text: every non-final turn needs one."""
    if policy != "transcript":
        return
    lacking = [f"{c.id} turn {t.index}" for c in dataset.conversations for t in c.turns[:-1] if not (t.text or "").strip()]
    if lacking:
        raise ValueError(
            f"history=transcript needs the dataset's user transcripts, and {len(lacking)} turn(s) have none "
            f"(e.g. {', '.join(lacking[:3])}); map a transcript column (dataset.columns.text) or use history=audio"
        )


def _fill_user_text(condition: InputCondition, dataset: loader.LoadedDataset, asr: AsrEngine | None) -> dict[str, int]:
    """input=text (and the re-spoken voice) needs every user turn's words: the dataset's transcript, else the
    user-turn ASR of the clip (transcribed here, before any turn runs). Returns how many came from each source."""
    lacking = [(c, t) for c in dataset.conversations for t in c.turns if not (t.text or "").strip()]
    sources = {"dataset": sum(len(c.turns) for c in dataset.conversations) - len(lacking), "asr": 0}
    if not lacking:
        return sources
    if asr is None:
        raise ValueError(
            f"input={condition.name} needs each user turn's transcript and {len(lacking)} turn(s) have none "
            f"(e.g. {lacking[0][0].id} turn {lacking[0][1].index}); map dataset.columns.text or choose an asr= to transcribe them"
        )
    heard: dict[tuple[str, int], str] = {}
    for conv, turn in lacking:
        samples, rate = audio_io.read_checked(turn.audio_path)
        heard[(conv.id, turn.index)] = asr.transcribe(samples, rate, conv.language).text.strip()
    for i, conv in enumerate(dataset.conversations):
        turns = tuple(
            dataclasses.replace(t, text=heard[(conv.id, t.index)]) if (conv.id, t.index) in heard else t for t in conv.turns
        )
        dataset.conversations[i] = dataclasses.replace(conv, turns=turns)
    sources["asr"] = len(lacking)
    return sources


def _category_warnings(prepared: Prepared) -> list[str]:
    """A dataset category that no metric rule names loses every metric limited to named categories."""
    categories = sorted({c.category for c in prepared.dataset.conversations})
    out = []
    for category in prepared.applicability.unknown_categories(categories):
        dropped = prepared.applicability.dropped_for(category)
        out.append(
            f"category {category!r} matches no category in the metrics config ({prepared.cfg.metrics.name}): "
            f"{', '.join(dropped) or 'no metric'} will not be computed for it; add it to metrics.category_aliases"
        )
    return out


def _unavailable_warnings(cfg: DictConfig) -> list[str]:
    options = signals.SignalOptions.from_config((to_container(cfg).get("metrics") or {}).get("signals"))
    out = []
    for name, why in signals.unavailable_reasons(options).items():
        if why:
            label = {"speaker": "speaker consistency", "pitch": "pitch"}.get(name, name.upper())
            line = why if "unavailable" in why else f"{label} unavailable: {why}"
            out.append(line if "pip install" in line else f"{line} ({EXTRA_HINT[name]})")
    return out


def run(cfg: DictConfig) -> RunOutcome:
    """Run (or resume) every stage and write the view's summary and table."""
    prepared = prepare(cfg)
    root = Path(cfg.results_dir) / prepared.run_name
    with RunStore(root) as store:
        for stale in audio_io.clean_stale_temporaries(root, recursive=True):  # left by a kill or a full disk
            print(f"removed a stale temporary file: {stale}", file=sys.stderr)
        manifest = _start_manifest(store, prepared)
        print(f"run {prepared.run_name}: {len(prepared.dataset.conversations)} conversations -> {root}")
        for warning in prepared.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        try:
            results = _stages(prepared, store, manifest)
        except BaseException as err:
            _fail_manifest(store, manifest, err)
            raise
        stats = [r.stats for r in results.values()]
        for item in stats:
            print(item.line())
        view = _view(prepared, results, manifest)
        notes = _notes(prepared, stats, view)
        renamed = views.migrate(root, view)  # a view of an earlier version, named after the judge config group
        folder = views.save(root, view)
        if renamed:
            manifest.setdefault("views", {}).pop(renamed, None)
            print(f"view {renamed} renamed {view.name} (view names now carry the judge model)")
        summary = _summarise(prepared, store, view, results["replay"], notes)
        table = markdown_table(summary, notes)
        title = f"# {prepared.run_name}, view {view.name}" + (f" ({view.label})" if view.subset else "")
        (folder / "table.md").write_text(f"{title}\n\n{table}", encoding="utf-8")
        validity.refresh_table(folder, view.description.get("judge"))  # the line under it: its judge's validation
        problems = _problems(prepared, stats)
        _finish_manifest(store, manifest, stats, view, problems)
        print(f"\n{table}")
        print(f"view: {folder}")
    return RunOutcome(root, folder, problems)


def _stages(prepared: Prepared, store: RunStore, manifest: dict) -> dict[str, StageResult]:
    """Every stage: overlapped (``workers.overlap``, the default: ``stages.flow``) or one after
    another, each reading the records the previous ones made current. Same records either way."""
    cfg = prepared.cfg
    conversations = prepared.dataset.conversations
    workers = cfg.get("workers") or {}
    overlap = bool(workers.get("overlap", True))
    plan = threads.configure(
        threads.plan(
            asr_on_gpu=bool(getattr(prepared.asr, "on_gpu", False)),
            overlap=overlap,
            asr_workers=workers.get("asr"),
            asr_threads=workers.get("asr_threads"),
            scoring_workers=workers.get("scoring"),
            scoring_threads=workers.get("scoring_threads"),
        )
    )
    settings = ReplaySettings(
        model_fingerprint=fingerprint(prepared.responder.describe(), to_container(cfg.model).get("backend")),
        history=cfg.history.value,
        concurrency=cfg.model.concurrency or getattr(prepared.responder, "capacity", None) or cfg.concurrency,
        seed=cfg.seed,
        system_prompt=cfg.model.system_prompt,
        condition=prepared.condition,
        latency=latency_protocol(cfg.model),
    )
    replay = ReplayStage(prepared.responder, store, settings, conversations)
    options = signals.SignalOptions.from_config((to_container(cfg).get("metrics") or {}).get("signals"))

    def score(replays, transcripts) -> ScoreStage:
        return ScoreStage(store.root, replays, transcripts, options, concurrency=plan.scoring_workers)

    judge = cfg.judge
    judging = judge_stage.enabled(judge)
    rubrics = judge_stage.rubrics_for(judge) if judging else []
    clients = judge_stage.clients_for(judge, rubrics) if judging else {}
    judges = [judge_stage.JudgeStage(r, clients[r.modality], [], judge.concurrency) for r in rubrics]

    if overlap:
        results = _overlapped(prepared, store, replay, score, judges, clients)
    else:
        results = _one_after_another(prepared, store, replay, score, judges, clients)
    if judging:
        session: dict = {}
        for stage in judges:
            add_usage(session, stage.session_usage)
        judged = [results[stage.name] for stage in judges]
        manifest.setdefault("judge", judge_stage.describe(judge))["usage"] = judge_stage.usage_summary(judged, session, judge)
    return results


def _plan_judges(prepared: Prepared, store: RunStore, clients: dict, conversations, replays, transcripts, user_transcripts):
    judge = prepared.cfg.judge
    rubrics = judge_stage.rubrics_for(judge)
    return judge_stage.plan(
        judge, conversations, replays, transcripts, user_transcripts, rubrics, clients, prepared.applicability, store.root
    )


def _overlapped(prepared, store, replay, score, judges, clients) -> dict[str, StageResult]:
    asr = prepared.asr
    flow = stage_flow.Flow(
        replay=replay,
        score_factory=score,
        asr=ReplyAsrStage(asr, store.root, {}) if asr is not None else None,
        user_asr=UserAsrStage(asr, prepared.dataset.conversations) if asr is not None and judges else None,
    )
    if judges:
        planner_clients = clients

        def planner(conv, replays, transcripts, user_transcripts):
            return _plan_judges(prepared, store, planner_clients, [conv], replays, transcripts, user_transcripts)

        preflight = [p for c in clients.values() if (p := getattr(c, "preflight", None)) is not None]
        flow.judges = stage_flow.Judges(judges, planner, prepared.cfg.judge.concurrency, preflight)

    async def go() -> dict[str, StageResult]:
        try:
            return await stage_flow.run(flow, store, prepared.dataset.conversations, bool(prepared.cfg.progress))
        finally:
            await prepared.responder.aclose()  # in the loop its connections were opened in
            for client in clients.values():
                await client.aclose()

    results = asyncio.run(go())
    prepared.busy_s, prepared.wall_s = flow.busy_s, flow.wall_s
    return results


def _one_after_another(prepared, store, replay, score, judges, clients) -> dict[str, StageResult]:
    progress = bool(prepared.cfg.progress)
    conversations = prepared.dataset.conversations
    results: dict[str, StageResult] = {}

    async def run_replay() -> StageResult:
        try:
            return await run_stage_async(replay, store, progress)
        finally:
            await prepared.responder.aclose()  # in the loop its connections were opened in

    results["replay"] = asyncio.run(run_replay())
    replays = results["replay"].current

    transcripts = user_transcripts = None
    if prepared.asr is not None:
        results["asr"] = run_stage(ReplyAsrStage(prepared.asr, store.root, replays), store, progress)
        transcripts = results["asr"].current
    else:
        results["asr"] = StageResult(StageStats("asr"), {})
    results["score"] = run_stage(score(replays, transcripts), store, progress)

    if judges:
        if prepared.asr is not None:
            results["user_asr"] = run_stage(UserAsrStage(prepared.asr, conversations), store, progress)
            user_transcripts = results["user_asr"].current
        units = _plan_judges(prepared, store, clients, conversations, replays, transcripts, user_transcripts)
        for stage in judges:
            stage.set_units(units[stage.rubric.metric])
        judged = asyncio.run(judge_stage.run_judges(prepared.cfg.judge, judges, clients, store, progress))
        for stage, result in zip(judges, judged, strict=True):
            results[stage.name] = result
    return results


def _view(prepared: Prepared, results: dict[str, StageResult], manifest: dict) -> views.View:
    cfg = prepared.cfg
    plain = to_container(cfg)
    keys = [(c.id, t.index) for c in prepared.dataset.conversations for t in c.turns]
    options = signals.SignalOptions.from_config((plain.get("metrics") or {}).get("signals"))
    judge = {k: v for k, v in (manifest.get("judge") or {}).items() if k != "usage"}
    name, description = views.describe(
        keys,
        dataset_conversations=prepared.dataset_conversations,
        limit=cfg.limit,
        asr=prepared.asr.identity() if prepared.asr is not None else None,
        judge=judge,
        signals=signals.identity(options),
        metrics={k: v for k, v in (plain.get("metrics") or {}).items() if k != "signals"},
        names={
            "asr": cfg.asr.name,
            "judge": judge_identity.slug(judge_identity.of(judge)),
            "judge_key": judge_identity.key(judge_identity.of(judge)),
            "judge_config": cfg.judge.name,
            "metrics": cfg.metrics.name,
        },
    )
    # in dataset order, logs in stage order: records land in any order when stages overlap, tables must not vary
    logs = sorted((log for log in results if log == "score" or log.startswith("judge-")), key=lambda log: (log != "score", log))
    selection = {log: {k: results[log].fingerprints[k] for k in keys if k in results[log].fingerprints} for log in logs}
    return views.View(name, description, selection)


def _summarise(prepared: Prepared, store: RunStore, view: views.View, replay: StageResult, notes: list[str]) -> dict:
    frame = turn_scores(store.root, view=view)
    statuses = [r.status for r in replay.current.values()]
    summary = {
        "run_name": prepared.run_name,
        "view": view.name,
        "subset": view.label or None,
        "model": prepared.cfg.model.name,
        "dataset": prepared.cfg.dataset.name,
        "asr": prepared.cfg.asr.name,
        "judge": prepared.cfg.judge.name,
        "metrics_config": prepared.cfg.metrics.name,
        "history": prepared.cfg.history.value,
        "input": prepared.condition.name,
        "turns": {
            "total": len(view.keys),
            "ok": statuses.count("ok"),
            "failed": statuses.count("failed"),
            "skipped": statuses.count("skipped"),
        },
        **summarise(frame),
        "notes": notes,
    }
    write_json_atomic(views.view_dir(store.root, view.name) / "summary.json", summary)
    return summary


def _notes(prepared: Prepared, stats: list[StageStats], view: views.View) -> list[str]:
    notes = []
    if view.subset:
        d = view.description
        notes.append(
            f"SUBSET: this view covers {d['conversations']} of {d['dataset_conversations']} conversations "
            f"(limit={prepared.cfg.limit}); it is not the whole dataset."
        )
    notes.extend(prepared.warnings)
    condition = prepared.condition
    if not condition.clean:
        what = "sent as text, no audio" if condition.sends_text else "degraded before it was sent"
        params = ", ".join(f"{k}={v}" for k, v in condition.params.items())
        notes.append(
            f"INPUT CONDITION {condition.name} ({condition.kind}{': ' + params if params else ''}): the user's turns were {what}."
        )
    if condition.needs_text and prepared.text_sources.get("asr"):
        notes.append(f"{prepared.text_sources['asr']} user turn(s) had no dataset transcript: their text is the user-turn ASR.")
    if prepared.asr is None:
        notes.append("ASR not run (asr=none): every metric that needs a transcript is missing (the reason is in each record).")
    if not judge_stage.enabled(prepared.cfg.judge):
        notes.append(
            "LLM judge not run (judge=none): factuality, relevance, chat score and instruction following are not in this table."
        )
    notes.extend(judge_stage.notes(prepared.cfg, stats))
    if prepared.cfg.dataset.name == "sample":
        notes.append("dataset=sample is a synthetic smoke/demo set, not the benchmark.")
    failed = sum(s.failed + s.skipped for s in stats)
    if failed:
        notes.append(f"{failed} record(s) failed or were skipped; see records/*.jsonl (rerun the same command to retry them).")
    return notes


def _problems(prepared: Prepared, stats: list[StageStats]) -> list[str]:
    """Why this run should not pass a CI gate: failed or skipped records, metrics that could not run."""
    out = []
    for s in stats:
        if s.failed or s.skipped:
            first = f" (first: {s.errors[0]})" if s.errors else ""
            out.append(f"{s.stage}: {s.failed} failed and {s.skipped} skipped of {s.total} records{first}")
    out.extend(w for w in prepared.warnings if "unavailable" in w)
    return out


def _start_manifest(store: RunStore, prepared: Prepared) -> dict:
    cfg = prepared.cfg
    now = _now()
    manifest = store.read_manifest()
    ds = prepared.dataset
    manifest.update(
        {
            "run_name": prepared.run_name,
            "stepeval_version": __version__,
            "code_revision": code_revision(),
            "config": redact(to_container(cfg)),
            "seed": cfg.seed,
            "history": cfg.history.value,
            "input": {
                **prepared.condition.describe(),
                **({"text_sources": prepared.text_sources} if prepared.text_sources else {}),
            },
            "model": redact(prepared.responder.describe()),
            "asr": prepared.asr.identity() if prepared.asr is not None else None,
            "judge": judge_stage.describe(cfg.judge),
            "dataset": {
                "name": cfg.dataset.name,
                "provenance": ds.files.provenance,
                "files_sha256": ds.files.hashes(),
                "layout": ds.mapping.layout,
                "columns": ds.mapping.columns,
                "conversations": len(ds.conversations),
                "turns": sum(len(c.turns) for c in ds.conversations),
            },
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "status": "running",
            "error": None,
            "started_at": manifest.get("started_at", now),
            "finished_at": None,
        }
    )
    manifest.setdefault("sessions", []).append({"started_at": now, "argv": secrets.redact_argv(sys.argv)})
    store.write_manifest(manifest)
    return manifest


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _fail_manifest(store: RunStore, manifest: dict, err: BaseException) -> None:
    """A run that dies mid-stage says so, with the reason, instead of staying 'running'."""
    reason = "interrupted" if isinstance(err, KeyboardInterrupt) else scrub(f"{type(err).__name__}: {err}")
    manifest["sessions"][-1].update({"finished_at": _now(), "error": reason})
    manifest.update({"status": "failed", "error": reason, "finished_at": _now()})
    try:
        store.write_manifest(manifest)
    except OSError as first:  # a full disk has no room for the temporary: overwrite in place (a few bytes more)
        try:
            store.write_manifest_in_place(manifest)
        except OSError as err:  # the run's own error stays the one raised
            print(f"warning: could not mark {store.manifest_path} failed ({first}; in place: {err})", file=sys.stderr)


def _finish_manifest(store: RunStore, manifest: dict, stats: list[StageStats], view: views.View, problems: list[str]) -> None:
    now = _now()
    manifest["sessions"][-1].update({"finished_at": now, "stages": {s.stage: s.line() for s in stats}, "view": view.name})
    entry = manifest.setdefault("views", {}).get(view.name, {"created_at": now})
    entry.update(
        {
            "updated_at": now,
            "subset": view.subset,
            "conversations": view.description["conversations"],
            "dataset_conversations": view.description["dataset_conversations"],
            "turns": view.description["turns"],
            **view.description["names"],
            "folder": f"{views.VIEWS_DIR}/{view.name}",
        }
    )
    manifest["views"][view.name] = entry
    manifest.update(
        {"status": "complete" if not problems else "complete_with_failures", "problems": problems, "finished_at": now}
    )
    store.write_manifest(manifest)
