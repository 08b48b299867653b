"""ASR cost and transcripts of the demo's speech, per CTranslate2 compute type (docs/performance.md).

Transcribes what the demo's ASR hears with speech in it (the bundled sample's 22 user turns, which the
``parrot`` speaks back, and the ``canned`` reply) with the packaged Whisper base, as the offline configs
decode (beam 1, VAD, greedy), once per ``--compute-type``, and prints per type the wall time and a digest
of the transcripts. ``--json`` also writes every transcript, so runs under different CPUs or
CTranslate2 settings (``CT2_USE_MKL``, ``CT2_FORCE_CPU_ISA``, thread counts) can be compared text by text.

    .venv/bin/python scripts/bench_asr_compute.py --compute-type int8 float32 --threads 2 --repeat 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stepeval import audio as audio_io  # noqa: E402
from stepeval.asr.engines import WhisperASR, _load_once  # noqa: E402
from stepeval.data import loader, sources  # noqa: E402

CANNED = REPO / "stepeval" / "backends" / "assets" / "canned_reply.wav"


def clips() -> list[tuple[str, Path, str | None]]:
    dataset = loader.load(sources.bundled_sample())
    out = [(f"{c.id}/{t.index}", Path(t.audio_path), c.language) for c in dataset.conversations for t in c.turns]
    return [*out, ("canned", CANNED, "en")]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cpu_flags() -> dict[str, bool]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return {}
    return {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "amx": any(f.startswith("amx") for f in flags),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compute-type", nargs="+", default=["int8", "float32"])
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 cpu_threads")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes per compute type (the first also loads)")
    parser.add_argument("--json", type=Path, help="write every transcript here")
    parser.add_argument("--only", help="only the clips whose name contains this (e.g. zh: the Mandarin turns)")
    args = parser.parse_args(argv)
    items = [(name, audio_io.read(path), language) for name, path, language in clips() if not args.only or args.only in name]
    env = {k: v for k, v in os.environ.items() if k.startswith(("CT2_", "ONEDNN_", "MKL_", "DNNL_"))}
    print(f"cpu: {cpu_model()} {cpu_flags()}  env: {env or '-'}  clips: {len(items)}  threads: {args.threads}")
    report: dict = {"cpu": cpu_model(), "flags": cpu_flags(), "env": env, "threads": args.threads, "runs": {}}
    for compute_type in args.compute_type:
        engine = WhisperASR(
            "packaged:whisper-base", device="cpu", compute_type=compute_type, cpu_threads=args.threads, beam_size=1, num_workers=1
        )
        start = time.perf_counter()
        engine._model()
        load_s = time.perf_counter() - start
        walls, cpus, texts = [], [], {}
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), time.process_time()
            for name, (samples, rate), language in items:
                heard = engine.transcribe(samples, rate, language)
                texts[name] = [heard.text, heard.language]
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)  # every thread's CPU time: what a loaded machine moves least
        digest = hashlib.sha256(json.dumps(texts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
        print(
            f"{compute_type}: load {load_s:.2f} s, transcribe wall {' / '.join(f'{w:.1f}' for w in walls)} s, "
            f"CPU {' / '.join(f'{c:.1f}' for c in cpus)} s, transcripts {digest}"
        )
        report["runs"][compute_type] = {"load_s": load_s, "walls_s": walls, "cpu_s": cpus, "digest": digest, "transcripts": texts}
        _load_once.cache_clear()
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
