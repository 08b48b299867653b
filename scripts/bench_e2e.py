"""End to end: replay, real Whisper ASR and the scorers, overlapped, against a fixed-latency server.

The demo's shape scaled up: the bundled sample's conversations repeated (``--copies``, 4 x 10 = 40
conversations by default), replayed through the wire client to the bare asyncio server of
``bench_replay.py`` (``--latency`` seconds per turn, every reply the same real speech clip), then
transcribed by the packaged Whisper base and scored (DNSMOS, pitch, speaker), by the real stages in a
fresh run store. Runs the overlapped flow, and with ``--sequential`` the stages one after another too.
Prints ``name: value`` lines; ``overlap_ratio`` = (sum of the stages' busy times) / (end-to-end wall).

    make bench-e2e        # or: .venv/bin/python scripts/bench_e2e.py --copies 4 --latency 2 --sequential
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRA: list[str] = []  # further config overrides (--set)
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_replay import _free_port, _serve, _wait_up  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from stepeval import pipeline  # noqa: E402
from stepeval.config import conf_dir, register_schemas  # noqa: E402
from stepeval.store import RunStore  # noqa: E402


def _prepared(url: str, results: Path, copies: int, concurrency: int, overlap: bool) -> pipeline.Prepared:
    overrides = [
        "dataset=sample",
        "model=served",
        f"model.base_url={url}",
        "model.name=bench",
        "model.wire_model=bench",
        "model.max_retries=0",
        "asr=whisper_base_offline",
        "judge=none",
        f"results_dir={results}",
        f"concurrency={concurrency}",
        "progress=false",
        f"workers.overlap={str(overlap).lower()}",
        *EXTRA,
    ]
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    prepared = pipeline.prepare(cfg)
    base = prepared.dataset.conversations
    prepared.dataset.conversations = [dataclasses.replace(c, id=f"{c.id}-copy{k}") for k in range(copies) for c in base]
    return prepared


def _warm(prepared: pipeline.Prepared, reply_wav: Path) -> None:
    """Load Whisper and the scorers once, outside the timings (a run of many conversations pays it once)."""
    from stepeval import audio as audio_io
    from stepeval.signals import scoring

    samples, rate = audio_io.read(reply_wav)
    prepared.asr.transcribe(samples, rate)
    replay = {"conversation_id": "warm", "turn": 0, "status": "ok", "audio": reply_wav.name, "language": "en"}
    scoring.score_conversation([replay, {**replay, "turn": 1}], {}, reply_wav.parent, scoring.SignalOptions())


def run_once(url: str, root: Path, copies: int, concurrency: int, overlap: bool, reply_wav: Path) -> dict:
    prepared = _prepared(url, root, copies, concurrency, overlap)
    _warm(prepared, reply_wav)
    cpu, wall = time.process_time(), time.perf_counter()
    with RunStore(root / "run") as store:
        results = pipeline._stages(prepared, store, {})
    wall = time.perf_counter() - wall
    failed = sum(r.stats.failed + r.stats.skipped for r in results.values())
    out = {"wall_s": round(wall, 2), "cpu_s": round(time.process_time() - cpu, 2), "failed": failed}
    out["turns"] = results["replay"].stats.total
    if overlap:
        out["busy_s"] = prepared.busy_s
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of the 10 sample conversations")
    parser.add_argument("--concurrency", type=int, default=8, help="conversations in flight (the run's default)")
    parser.add_argument("--latency", type=float, default=2.0, help="server seconds per turn")
    parser.add_argument("--sequential", action="store_true", help="also run the stages one after another")
    parser.add_argument("--store-dir", default=None)
    parser.add_argument("--set", action="append", default=[], help="a config override, e.g. workers.asr=2 (repeatable)")
    args = parser.parse_args(argv)
    EXTRA.extend(args.set)

    from stepeval.data import loader

    sample = loader.load_configured({"name": "sample", "source": "sample"})
    reply_wav = next(t.audio_path for c in sample.conversations if c.language == "en" for t in c.turns)
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, args.latency, str(reply_wav)), daemon=True)
    server.start()
    figures: dict = {}
    try:
        _wait_up(port)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory(prefix="stepeval-e2e-", dir=args.store_dir) as tmp:
            tmp = Path(tmp)
            over = run_once(url, tmp / "overlap", args.copies, args.concurrency, True, reply_wav)
            if args.sequential:
                seq = run_once(url, tmp / "sequential", args.copies, args.concurrency, False, reply_wav)
    finally:
        server.terminate()
        server.join(10)

    busy = over["busy_s"]
    figures.update(
        {
            "conversations": 10 * args.copies,
            "turns": over["turns"],
            "in_flight": args.concurrency,
            "latency_s": args.latency,
            "cores": len(os.sched_getaffinity(0)),
            "failed_records": over["failed"],
            "e2e_wall_s": over["wall_s"],
            "e2e_cpu_s": over["cpu_s"],
            **{f"busy_{name}_s": round(value, 2) for name, value in busy.items()},
            "overlap_ratio": round(sum(busy.values()) / over["wall_s"], 2),
        }
    )
    if args.sequential:
        figures.update({"sequential_wall_s": seq["wall_s"], "speedup_vs_sequential": round(seq["wall_s"] / over["wall_s"], 2)})
    figures["overrides"] = " ".join(args.set) or "none"
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 1 if over["failed"] or (args.sequential and seq["failed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
