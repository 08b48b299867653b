"""Latency against throughput: one model server, turns replayed at several concurrency levels (docs/latency.md).

Each level replays the same single-turn conversations (the bundled sample's recordings, real speech) through the
harness's replay stage and wire client (aiohttp, streamed) into a run store of its own, after an untimed warm-up;
the per-turn timings come from the replay records, the throughput is turns / wall seconds of the level. Written to
``--out``: ``sweep.json`` (every point with its protocol), ``sweep.md``, ``sweep.png`` (p50/p95 time to first
audio vs turns/s; time to first text for a model that only writes), ``cdf.png`` and ``sweep.html``.

    python scripts/latency_sweep.py --serve parrot --delay 0.2 --levels 1 2 4 8 --out results/latency_parrot
    python scripts/latency_sweep.py --tiny-qwen2-audio --levels 1 4 16 --out results/latency_tiny_qwen2_audio
    python scripts/latency_sweep.py --base-url http://gpu1:8000/v1 --hardware "1x H100" --levels 1 8 32 --out ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_cli(option: str, overrides: list[str], max_concurrent: int):
    """``stepeval serve`` in its own process (the real command), until it answers /health."""
    port = free_port()
    command = [sys.executable, "-m", "stepeval", "serve", option, *overrides, "--port", str(port)]
    command += ["--max-concurrent", str(max_concurrent)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"stepeval serve exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    health = json.load(answer)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("stepeval serve did not come up in 120 s") from None
                time.sleep(0.2)
        label = " ".join(["stepeval serve", option, *overrides, f"--max-concurrent {max_concurrent}"])
        yield f"http://127.0.0.1:{port}/v1", health, label
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@contextlib.contextmanager
def serve_tiny_qwen2_audio(max_batch_size: int, new_tokens: int):
    """The batched server (``build_app``) with the tests' tiny random-weight Qwen2-Audio on CPU, on a thread here."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_serve  # the same builders as the serving benchmark

    from stepeval.backends._hf import left_padded
    from stepeval.backends.qwen2_audio import Qwen2Audio
    from stepeval.backends.server import build_app, serving

    processor = bench_serve.build_processor(tiny=True)
    model, _ = bench_serve.build_model(processor, True, "cpu", "float32")
    model.generation_config.min_new_tokens = new_tokens
    backend = Qwen2Audio(model_path="<random weights>", device="cpu", dtype="float32", max_new_tokens=new_tokens)
    backend._loaded = (model, left_padded(processor))
    app = build_app(backend, "tiny-qwen2-audio", max_concurrent=1, max_batch_size=max_batch_size, max_wait_ms=20)
    with serving(app) as url:
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5) as answer:
            health = json.load(answer)
        yield url, health, f"build_app(tiny Qwen2-Audio, max_batch_size={max_batch_size}) under uvicorn"


def conversations(folder: Path, count: int, tag: str):
    """``count`` single-turn conversations over the bundled sample's user clips (cycled), ids unique per level."""
    from stepeval.data import loader, sources
    from stepeval.types import Conversation, UserTurn

    clips = [t.audio_path for c in loader.load(sources.bundled_sample()).conversations for t in c.turns]
    return [Conversation(f"{tag}-{i}", "sweep", "en", (UserTurn(0, clips[i % len(clips)], None),)) for i in range(count)]


def run_level(
    url: str, level: int, count: int, stream: bool, modalities: list[str], warmup: int, store_dir: Path, hardware: str | None
):
    from stepeval.client.endpoints import Endpoint
    from stepeval.client.fast_http import FastWireClient
    from stepeval.client.wire import WireSettings
    from stepeval.reporting import latency
    from stepeval.stages.base import run_stage_async
    from stepeval.stages.replay import ReplaySettings, ReplayStage
    from stepeval.store import RunStore

    settings = WireSettings(wire_model="sweep", modalities=modalities, stream=stream, timeout_s=600, warmup_turns=warmup)
    client = FastWireClient([Endpoint(0, url, None, level, 600.0)], settings)
    run_dir = store_dir / f"c{level}"
    with RunStore(run_dir) as store:
        replay = ReplaySettings("sweep", concurrency=level, latency={"hardware": hardware, "mode": "load"})
        stage = ReplayStage(client, store, replay, conversations(store_dir, count, f"c{level}"))

        async def go():
            try:
                return await run_stage_async(stage, store, progress=False)
            finally:
                await client.aclose()

        started = time.perf_counter()
        outcome = asyncio.run(go())
        wall = time.perf_counter() - started  # includes each level's untimed warm-up: throughput is not flattered
    frame = latency.latency_frame(run_dir)
    point = latency.sweep_point(frame, level, outcome.stats.computed - outcome.stats.failed, wall)
    point["failed"] = outcome.stats.failed
    return point, frame.assign(level=level)


def write(out: Path, points: list, frames, meta: dict) -> None:
    import pandas as pd

    from stepeval.reporting import latency

    metric = "first_audio_s" if any(p["first_audio_s"]["p50"] is not None for p in points) else "first_text_s"
    (out / "sweep.json").write_text(json.dumps({**meta, "metric": metric, "points": points}, indent=2) + "\n")
    lines = [f"# Latency vs throughput: {meta['server']}", "", f"protocol: {meta['protocol']}", ""]
    lines += [
        f"| concurrency/endpoint | turns | turns/s | p50 {metric} | p95 {metric} | p50 first_speech_s | p95 total_s | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ms(v):
        return "-" if v is None else f"{v * 1000:.0f} ms"

    def with_ci(cell, key):
        low, high = cell[f"{key}_interval"]
        return ms(cell[key]) + ("" if low is None else f" [{ms(low)}, {ms(high)}]")

    for p in points:
        lines.append(
            f"| {p['concurrency']} | {p['turns']} | {p['turns_per_s']:.2f} | {with_ci(p[metric], 'p50')} | "
            f"{with_ci(p[metric], 'p95')} | {ms(p['first_speech_s']['p50'])} | {ms(p['total_s']['p95'])} | {p['failed']} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    title = textwrap.fill(f"{meta['server']}; {meta['protocol']}", 90)
    curve = latency.curve(points, out / "sweep.png", title, metric)
    frame = pd.concat(frames, ignore_index=True)
    frame["protocol"] = "c=" + frame["level"].astype(str)
    cdf = latency.cdf(frame, out / "cdf.png", f"{meta['server']}: CDF by concurrency per endpoint", (metric,))
    images = "".join(f'<img src="{p.name}" alt="{p.stem}">' for p in (curve, cdf) if p is not None)
    table = "".join(f"<pre>{html.escape(line)}</pre>" for line in ["\n".join(lines)])
    page = f"<!doctype html><meta charset=utf-8><title>latency sweep</title><h1>Latency vs throughput</h1>{table}{images}"
    (out / "sweep.html").write_text(page)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--serve", help="a model option to start with `stepeval serve` (e.g. parrot)")
    where.add_argument("--tiny-qwen2-audio", action="store_true", help="the batched server with the tiny Qwen2-Audio (CPU)")
    where.add_argument("--base-url", help="a server already running")
    parser.add_argument("--delay", type=float, default=0.2, help="--serve: model.backend.delay_s (per request)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="--serve: model.backend.chunk_delay_s")
    parser.add_argument("--max-concurrent", type=int, default=4, help="--serve: the server's worker threads")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--turns", type=int, default=32, help="turns per level")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests before each level")
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--hardware", default=None, help="what serves the model (else the server's own report)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    modalities = ["text"] if args.tiny_qwen2_audio else ["text", "audio"]
    if args.serve:
        overrides = [f"model.backend.delay_s={args.delay}"]
        if args.chunk_delay:  # parrot's (a backend that streams as it generates)
            overrides.append(f"+model.backend.chunk_delay_s={args.chunk_delay}")
        server = serve_cli(args.serve, overrides, args.max_concurrent)
    elif args.tiny_qwen2_audio:
        server = serve_tiny_qwen2_audio(max(args.levels), new_tokens=8)
    else:
        server = contextlib.nullcontext((args.base_url, {}, args.base_url))
    points, frames = [], []
    with server as (url, health, described), tempfile.TemporaryDirectory() as tmp:
        for level in args.levels:
            point, frame = run_level(
                url, level, args.turns, not args.no_stream, modalities, args.warmup, Path(tmp), args.hardware
            )
            points.append(point)
            frames.append(frame)
            print(json.dumps({k: point[k] for k in ("concurrency", "turns_per_s", "first_audio_s", "first_text_s")}), flush=True)
    protocols = sorted({p for point in points for p in point["protocol"]})
    # what every level shares: the protocol without its concurrency (which is the x of the sweep)
    common = sorted({re.sub(r"concurrency \d+/endpoint, ", "", p) for p in protocols})
    meta = {"server": described, "health": health, "cpus": os.cpu_count(), "protocols": protocols, "warmup": args.warmup}
    meta["protocol"] = "; ".join(common) + f"; {args.warmup} warm-up turns per level; concurrency per endpoint varies"
    write(args.out, points, frames, meta)
    print(f"written: {args.out}/sweep.json, sweep.md, sweep.png, cdf.png, sweep.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
