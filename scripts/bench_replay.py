"""Replay throughput: the real replay stage + wire client over real HTTP against a fixed-latency server.

A local OpenAI-compatible server (bare asyncio, in its own process so its CPU is not the
harness's) sleeps ``--latency`` seconds per turn, holding any number of requests at once, and
answers with one second of 24 kHz speech-like audio. The harness replays ``--conversations``
synthetic conversations of ``--turns`` turns with ``--concurrency`` in flight. Prints one
``name: value`` per line.

    make bench            # the suite: 64 and 256 in flight, and 8 turns of real audio history (medians of 3)
    .venv/bin/python scripts/bench_replay.py --conversations 256 --transport sdk   # one configuration
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stepeval import audio as audio_io  # noqa: E402
from stepeval.client.endpoints import Endpoint  # noqa: E402
from stepeval.client.wire import WireClient, WireSettings  # noqa: E402
from stepeval.stages.base import run_stage_async  # noqa: E402
from stepeval.stages.replay import ReplaySettings, ReplayStage  # noqa: E402
from stepeval.store import RunStore  # noqa: E402
from stepeval.types import Conversation, UserTurn  # noqa: E402


def _serve(port: int, latency: float, reply_wav: str | None = None) -> None:
    """A bare asyncio HTTP/1.1 server (keep-alive, Content-Length bodies): as cheap as a server can be, so the
    figures measure the harness, not a Python web framework parsing 100 kB of base64 per request. It answers
    every turn with one second of a 220 Hz tone, or with the WAV file ``reply_wav`` (real speech, for ASR)."""
    t = np.arange(24000) / 24000
    now = int(time.time())
    if reply_wav:
        samples, rate = audio_io.read(reply_wav)
        data = audio_io.to_base64_wav(samples, rate)
    else:
        data = audio_io.to_base64_wav((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    audio = {
        "id": "audio_bench",
        "data": data,
        "expires_at": now + 3600,
        "transcript": "A fixed reply.",
    }
    reply = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": now,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None, "audio": audio},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }
    payload = json.dumps(reply).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
    models = b'{"object": "list", "data": [{"id": "bench", "object": "model"}]}'
    models_head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(models)}\r\n\r\n".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if header.startswith(b"POST"):
                    await asyncio.sleep(latency)
                    writer.write(head + payload)
                else:
                    writer.write(models_head + models)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, limit=1 << 24)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"bench server on port {port} did not come up")


def _conversations(folder: Path, n: int, turns: int, clips: list[Path] | None = None) -> list[Conversation]:
    """``n`` conversations of ``turns`` user turns: one second of a tone per turn, or the given real clips in turn."""
    t = np.arange(16000) / 16000
    paths = []
    for k in range(turns):  # shared across conversations (content is irrelevant here; each conversation reads its own copy)
        if clips:
            paths.append(clips[k % len(clips)])
            continue
        path = folder / f"user_turn_{k}.wav"
        audio_io.write_wav_atomic(path, (0.2 * np.sin(2 * np.pi * (180 + 40 * k) * t)).astype(np.float32), 16000)
        paths.append(path)
    return [
        Conversation(f"bench-{i:05d}", "chitchat", "en", tuple(UserTurn(k, paths[k], f"turn {k}") for k in range(turns)))
        for i in range(n)
    ]


def sample_clips() -> list[Path]:
    """The bundled sample's user clips (espeak-ng speech, 16 kHz), extracted to the cache."""
    from stepeval.data import loader

    dataset = loader.load_configured({"name": "sample", "source": "sample"})
    return [turn.audio_path for conv in dataset.conversations for turn in conv.turns]


def replay(
    url: str, conversations: list[Conversation], concurrency: int, folder: Path, transport: str = "sdk"
) -> tuple[float, float, int]:
    """(wall seconds, harness CPU seconds, failed turns) for one replay into a fresh run store."""
    client = WireClient
    if transport == "fast":
        from stepeval.client.fast_http import FastWireClient as client
    wire = client([Endpoint(0, url, None, concurrency, 60.0)], WireSettings(wire_model="bench", max_retries=0))
    with RunStore(folder) as store:
        stage = ReplayStage(wire, store, ReplaySettings("bench", concurrency=concurrency), conversations)

        async def go():
            try:
                return await run_stage_async(stage, store, progress=False)
            finally:
                await wire.aclose()

        cpu, wall = time.process_time(), time.perf_counter()
        result = asyncio.run(go())
        return time.perf_counter() - wall, time.process_time() - cpu, result.stats.failed + result.stats.skipped


SUITE = {  # the figures (docs/performance.md): name -> arguments
    "in_flight_64": ["--conversations", "64"],
    "in_flight_256": ["--conversations", "256"],
    "history_8_real_clips": ["--conversations", "64", "--turns", "9", "--real-clips", "--sequential-conversations", "1"],
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=None, help="in flight (default: --conversations)")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument(
        "--latency",
        type=float,
        default=2.0,
        help="server seconds per turn (default 2.0: a speech-to-speech turn takes seconds; at 0.2 s the harness's "
        "CPU per turn, times the turns in flight, is what the ratio measures)",
    )
    parser.add_argument("--sequential-conversations", type=int, default=2, help="measured one at a time, then scaled")
    parser.add_argument("--store-dir", default=None, help="where the temp run store goes (default: the system temp dir)")
    parser.add_argument(
        "--transport",
        choices=("sdk", "fast"),
        default="fast",
        help="fast (default: what `stepeval run` uses, model.http=auto): aiohttp; sdk: the openai SDK (model.http=sdk)",
    )
    parser.add_argument(
        "--real-clips", action="store_true", help="user turns are the bundled sample's speech clips (not one-second tones)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="parallel replays measured; figures are their medians")
    parser.add_argument("--suite", action="store_true", help=f"every configuration of the issue's figures: {', '.join(SUITE)}")
    return parser


def measure(args: argparse.Namespace) -> tuple[dict, int]:
    """The figures of one configuration (medians over ``--repeat`` parallel replays) and its failed turns."""
    n, concurrency = args.conversations, args.concurrency or args.conversations
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, args.latency), daemon=True)
    server.start()
    runs: list[tuple[float, float]] = []
    failed = 0
    try:
        _wait_up(port)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory(prefix="stepeval-bench-", dir=args.store_dir) as tmp:
            root = Path(tmp)
            conversations = _conversations(root, n, args.turns, sample_clips() if args.real_clips else None)
            replay(url, conversations[:2], 2, root / "warmup", args.transport)  # imports, first connections
            for k in range(max(1, args.repeat)):
                wall, cpu, lost = replay(url, conversations, concurrency, root / f"parallel-{k}", args.transport)
                runs.append((wall, cpu))
                failed += lost
            seq_n = min(args.sequential_conversations, n)
            seq_wall, _, seq_failed = replay(url, conversations[:seq_n], 1, root / "sequential", args.transport)
    finally:
        server.terminate()
        server.join(10)

    turns = n * args.turns
    ideal = math.ceil(n / concurrency) * args.turns * args.latency
    sequential = seq_wall * n / seq_n
    walls = [wall for wall, _ in runs]
    cpu_ms = [1000 * cpu / turns for _, cpu in runs]
    wall = statistics.median(walls)
    figures = {
        "conversations": n,
        "turns_per_conversation": args.turns,
        "user_clips": "bundled sample speech" if args.real_clips else "1 s tones",
        "transport": args.transport,
        "in_flight": concurrency,
        "latency_s": args.latency,
        "runs": len(runs),
        "failed_turns": failed + seq_failed,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio_to_ideal": round(ideal / wall, 3),
        "ratio_to_ideal_runs": " ".join(f"{ideal / w:.3f}" for w in walls),
        "sequential_wall_s": round(sequential, 3),
        "sequential_measured": f"{seq_n} conversations one turn at a time in {seq_wall:.3f} s, scaled x{n / seq_n:g}",
        "speedup_vs_sequential": round(sequential / wall, 1),
        "harness_cpu_ms_per_turn": round(statistics.median(cpu_ms), 2),
        "harness_cpu_ms_per_turn_runs": " ".join(f"{c:.2f}" for c in cpu_ms),
        "store_dir": str(args.store_dir or tempfile.gettempdir()),
    }
    return figures, failed + seq_failed


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.suite:
        figures, failed = measure(args)
        for name, value in figures.items():
            print(f"{name}: {value}")
        return 1 if failed else 0
    failed = 0
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--suite"]
    for label, extra in SUITE.items():
        figures, lost = measure(parser().parse_args([*passed, *extra]))
        failed += lost
        for name, value in figures.items():
            print(f"{label}.{name}: {value}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
