"""Replay throughput: the real replay stage + wire client over real HTTP against a fixed-latency server.

A local OpenAI-compatible server (bare asyncio, in its own process so its CPU is not the
harness's) sleeps ``--latency`` seconds per turn, holding any number of requests at once, and
answers with one second of 24 kHz speech-like audio. The harness replays ``--conversations``
synthetic conversations of ``--turns`` turns with ``--concurrency`` in flight. Prints one
``name: value`` per line.

    make bench            # or: .venv/bin/python scripts/bench_replay.py --conversations 256 --concurrency 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import socket
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=None, help="in flight (default: --conversations)")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument(
        "--latency",
        type=float,
        default=2.0,
        help="server seconds per turn (default 2.0: a speech-to-speech turn takes seconds; at 0.2 s the harness's "
        "~3.5 ms of CPU per turn, times 64 in flight, is what the ratio measures)",
    )
    parser.add_argument("--sequential-conversations", type=int, default=2, help="measured one at a time, then scaled")
    parser.add_argument("--store-dir", default=None, help="where the temp run store goes (default: the system temp dir)")
    parser.add_argument(
        "--transport",
        choices=("sdk", "fast"),
        default="sdk",
        help="sdk: the wire client as `stepeval run` uses it (openai SDK); fast: client.fast_http (aiohttp, clips encoded once)",
    )
    parser.add_argument(
        "--real-clips", action="store_true", help="user turns are the bundled sample's speech clips (not one-second tones)"
    )
    args = parser.parse_args(argv)
    n, concurrency = args.conversations, args.concurrency or args.conversations

    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, args.latency), daemon=True)
    server.start()
    try:
        _wait_up(port)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory(prefix="stepeval-bench-", dir=args.store_dir) as tmp:
            root = Path(tmp)
            conversations = _conversations(root, n, args.turns, sample_clips() if args.real_clips else None)
            replay(url, conversations[:2], 2, root / "warmup", args.transport)  # imports, first connections
            wall, cpu, failed = replay(url, conversations, concurrency, root / "parallel", args.transport)
            seq_n = min(args.sequential_conversations, n)
            seq_wall, _, seq_failed = replay(url, conversations[:seq_n], 1, root / "sequential", args.transport)
    finally:
        server.terminate()
        server.join(10)

    turns = n * args.turns
    ideal = math.ceil(n / concurrency) * args.turns * args.latency
    sequential = seq_wall * n / seq_n
    figures = {
        "conversations": n,
        "turns_per_conversation": args.turns,
        "user_clips": "bundled sample speech" if args.real_clips else "1 s tones",
        "transport": args.transport,
        "in_flight": concurrency,
        "latency_s": args.latency,
        "failed_turns": failed + seq_failed,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio_to_ideal": round(ideal / wall, 3),
        "sequential_wall_s": round(sequential, 3),
        "sequential_measured": f"{seq_n} conversations one turn at a time in {seq_wall:.3f} s, scaled x{n / seq_n:g}",
        "speedup_vs_sequential": round(sequential / wall, 1),
        "harness_cpu_ms_per_turn": round(1000 * cpu / turns, 2),
        "store_dir": str(args.store_dir or tempfile.gettempdir()),
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 1 if failed or seq_failed else 0


if __name__ == "__main__":
    sys.exit(main())
