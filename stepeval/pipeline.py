"""The stages in order: dataset -> replay -> transcribe -> score -> summary/table.

Each stage reads the previous stage's records from the run store and computes only the
records missing for its current fingerprint.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from stepeval import __version__
from stepeval import audio as audio_io
from stepeval.asr.engines import transcript_fingerprint
from stepeval.client.build import build_responder, model_identity
from stepeval.client.responder import InProcess
from stepeval.config import check_target, redact, to_container
from stepeval.data import loader, sources
from stepeval.data.columns import ColumnSpec
from stepeval.provenance import code_revision, package_versions
from stepeval.reporting.records import turn_scores
from stepeval.reporting.summary import markdown_table, summarise
from stepeval.signals import scoring as signals
from stepeval.stages import judge as judge_stage
from stepeval.stages.replay import ReplayEngine, ReplaySettings, StageStats
from stepeval.store import RunStore, fingerprint, write_json_atomic


@dataclass
class Prepared:
    """Everything checked and built before any turn runs, so bad config fails fast."""

    cfg: DictConfig
    run_name: str
    responder: InProcess
    asr: object | None
    dataset: loader.LoadedDataset


def run_name_for(cfg: DictConfig) -> str:
    """Derived from what determines the replies, not from the clock: the same command finds the same run."""
    if cfg.run_name:
        return str(cfg.run_name)
    plain = to_container(cfg)
    dataset = {k: v for k, v in plain["dataset"].items() if k != "cache_dir"}
    model = model_identity(plain["model"])  # no endpoints, keys or timeouts: replicas must not change the run
    digest = fingerprint(dataset, model, plain["history"], plain["seed"])[:8]
    return f"{cfg.dataset.name}-{cfg.model.name}-{digest}"


def prepare(cfg: DictConfig) -> Prepared:
    responder = build_responder(cfg)  # the wire client when the model names endpoints, else its in-process backend

    asr = None
    if cfg.asr.engine is not None:
        check_target(cfg.asr.engine, "asr.engine")
        asr = instantiate(cfg.asr.engine)
        asr.check()

    ds_cfg = cfg.dataset
    location = ds_cfg.local_dir if ds_cfg.source.value == "local" else ds_cfg.repo_id
    files = sources.resolve(ds_cfg.source.value, location, ds_cfg.revision)
    spec = ColumnSpec.from_mapping({k: (v.value if hasattr(v, "value") else v) for k, v in ds_cfg.columns.items()})
    cache = Path(ds_cfg.cache_dir).expanduser() if ds_cfg.cache_dir else None
    dataset = loader.load(files, spec, cache_dir=cache, limit=cfg.limit)
    _check_history_inputs(cfg.history.value, dataset)
    return Prepared(cfg, run_name_for(cfg), responder, asr, dataset)


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


def run(cfg: DictConfig) -> Path:
    """Run (or resume) every stage; returns the run folder."""
    prepared = prepare(cfg)
    root = Path(cfg.results_dir) / prepared.run_name
    with RunStore(root) as store:
        manifest = _start_manifest(store, prepared)
        print(f"run {prepared.run_name}: {len(prepared.dataset.conversations)} conversations -> {root}")
        stats = [_replay(prepared, store)]
        stats.append(_transcribe(prepared, store))
        stats.append(_score(prepared, store))
        stats.extend(judge_stage.run(prepared, store, manifest))
        for item in stats:
            print(item.line())
        notes = _notes(prepared, stats)
        summary = _summarise(prepared, store, notes)
        table = markdown_table(summary, notes)
        (root / "table.md").write_text(f"# {prepared.run_name}\n\n{table}", encoding="utf-8")
        _finish_manifest(store, manifest, stats)
        print(f"\n{table}")
    return root


def _replay(prepared: Prepared, store: RunStore) -> StageStats:
    cfg = prepared.cfg
    model_fp = fingerprint(prepared.responder.describe(), to_container(cfg.model).get("backend"))
    settings = ReplaySettings(
        model_fingerprint=model_fp,
        history=cfg.history.value,
        concurrency=cfg.model.concurrency or getattr(prepared.responder, "capacity", None) or cfg.concurrency,
        seed=cfg.seed,
        system_prompt=cfg.model.system_prompt,
    )
    engine = ReplayEngine(prepared.responder, store, settings, progress=cfg.progress)

    async def go() -> StageStats:
        try:
            return await engine.run(prepared.dataset.conversations)
        finally:
            await prepared.responder.aclose()

    return asyncio.run(go())


def _current_replays(prepared: Prepared, store: RunStore) -> list[dict]:
    records = store.log("replay").load()
    keys = [(c.id, t.index) for c in prepared.dataset.conversations for t in c.turns]
    return [records[k] for k in keys if k in records]


def _transcribe(prepared: Prepared, store: RunStore) -> StageStats:
    stats = StageStats("transcribe")
    if prepared.asr is None:
        return stats
    log = store.log("asr")
    existing = log.load()
    todo = [r for r in _current_replays(prepared, store) if r.get("status") == "ok" and r.get("audio")]
    for record in tqdm(todo, desc="transcribe", unit="reply", disable=not prepared.cfg.progress, dynamic_ncols=True):
        fp = transcript_fingerprint(prepared.asr, record)
        key = (record["conversation_id"], record["turn"])
        if existing.get(key, {}).get("fingerprint") == fp and existing[key].get("status") == "ok":
            stats.reused += 1
            continue
        base = {"conversation_id": key[0], "turn": key[1], "stage": "asr", "fingerprint": fp}
        try:
            samples, rate = audio_io.read(store.root / record["audio"])
            heard = prepared.asr.transcribe(samples, rate, language=record.get("language"))
        except Exception as err:  # recorded as failed; the scores that need it are missing
            log.append({**base, "status": "failed", "error": f"{type(err).__name__}: {err}"})
            stats.failed += 1
            continue
        log.append(
            {
                **base,
                "status": "ok",
                "text": heard.text,
                "language": heard.language,
                "language_probability": heard.language_probability,
                "engine": getattr(heard, "engine", None),
            }
        )
        stats.computed += 1
    return stats


def _score(prepared: Prepared, store: RunStore) -> StageStats:
    stats = StageStats("score")
    log = store.log("score")
    existing = log.load()
    asr_records = store.log("asr").load() if prepared.asr is not None else {}
    options = signals.SignalOptions.from_config((to_container(prepared.cfg).get("metrics") or {}).get("signals"))
    ident = signals.identity(options)
    conversations: dict[str, list[dict]] = {}
    for record in _current_replays(prepared, store):
        conversations.setdefault(record["conversation_id"], []).append(record)
    for replays in tqdm(conversations.values(), desc="score", unit="conv", disable=not prepared.cfg.progress, dynamic_ncols=True):
        asrs, fps = {}, {}
        voices = [r.get("audio_sha256") for r in replays]  # speaker consistency compares the conversation's replies
        for record in replays:
            key = (record["conversation_id"], record["turn"])
            asr = asr_records.get(key)
            if asr is not None and asr.get("fingerprint") != transcript_fingerprint(prepared.asr, record):
                asr = None
            asrs[key] = asr
            fps[key] = fingerprint(ident, record["fingerprint"], record.get("status"), asr and asr["fingerprint"], voices)
        if all(existing.get(key, {}).get("fingerprint") == fp for key, fp in fps.items()):
            stats.reused += len(fps)
            continue
        scored = signals.score_conversation(replays, asrs, store.root, options)
        for record in replays:
            key = (record["conversation_id"], record["turn"])
            if existing.get(key, {}).get("fingerprint") == fps[key]:
                stats.reused += 1
                continue
            log.append(
                {
                    "conversation_id": key[0],
                    "turn": key[1],
                    "stage": "score",
                    "fingerprint": fps[key],
                    "category": record["category"],
                    "language": record["language"],
                    "metrics": scored[key].values,
                    "missing": scored[key].missing,
                }
            )
            stats.computed += 1
    return stats


def _summarise(prepared: Prepared, store: RunStore, notes: list[str]) -> dict:
    keys = [(c.id, t.index) for c in prepared.dataset.conversations for t in c.turns]
    frame = turn_scores(store.root, set(keys))
    replays = _current_replays(prepared, store)
    summary = {
        "run_name": prepared.run_name,
        "model": prepared.cfg.model.name,
        "dataset": prepared.cfg.dataset.name,
        "asr": prepared.cfg.asr.name,
        "judge": prepared.cfg.judge.name,
        "history": prepared.cfg.history.value,
        "turns": {
            "total": len(keys),
            "ok": sum(r.get("status") == "ok" for r in replays),
            "failed": sum(r.get("status") == "failed" for r in replays),
            "skipped": sum(r.get("status") == "skipped" for r in replays),
        },
        **summarise(frame),
        "notes": notes,
    }
    write_json_atomic(store.root / "summary.json", summary)
    return summary


def _notes(prepared: Prepared, stats: list[StageStats]) -> list[str]:
    notes = []
    if prepared.asr is None:
        notes.append("ASR not run (asr=none): every metric that needs a transcript is missing (the reason is in each record).")
    if not judge_stage.enabled(prepared.cfg.judge):
        notes.append(
            "LLM judge not run (judge=none): factuality, relevance, chat score and instruction following are not in this table."
        )
    notes.extend(judge_stage.notes(prepared.cfg, stats))
    if prepared.cfg.dataset.name == "sample":
        notes.append("dataset=sample is a synthetic smoke/demo set, not the benchmark.")
    failed = sum(s.failed for s in stats)
    if failed:
        notes.append(f"{failed} record(s) failed; see records/*.jsonl (rerun the same command to retry them).")
    return notes


def _start_manifest(store: RunStore, prepared: Prepared) -> dict:
    cfg = prepared.cfg
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
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
            "started_at": manifest.get("started_at", now),
            "finished_at": None,
        }
    )
    manifest.setdefault("sessions", []).append({"started_at": now, "argv": redact_argv(sys.argv)})
    store.write_manifest(manifest)
    return manifest


def _finish_manifest(store: RunStore, manifest: dict, stats: list[StageStats]) -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    manifest["sessions"][-1].update({"finished_at": now, "stages": {s.stage: s.line() for s in stats}})
    manifest.update({"status": "complete", "finished_at": now})
    store.write_manifest(manifest)


def redact_argv(argv: list[str]) -> list[str]:
    from stepeval.config import REDACTED, SECRET_KEY

    return [f"{a.split('=', 1)[0]}={REDACTED}" if "=" in a and SECRET_KEY.search(a.split("=", 1)[0]) else a for a in argv]
