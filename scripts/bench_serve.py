"""Turns per second through `stepeval serve` + the wire client: batched at 1, 8, 32 concurrent vs one at a time.

The model is Qwen2-Audio with **random weights** built from the real transformers classes and config (no weights are
downloaded): full size by default (Qwen2-Audio-7B: Whisper-large-v3-sized encoder, 32-layer 4096-wide Qwen LM), or
the tests' tiny one with ``--tiny`` (runs on CPU in seconds). The tokenizer is a byte-level one built offline; every
turn generates exactly ``--new-tokens`` tokens (eos is suppressed until then), so the work per turn is fixed.

The server is the app ``stepeval serve`` runs (``build_app``), under uvicorn on a thread of this process; the client
is the harness's ``WireClient``. User turns are the bundled sample's recordings (real speech, 3-8 s).

    python scripts/bench_serve.py                      # GPU, bf16, 128 new tokens per turn
    python scripts/bench_serve.py --tiny --device cpu  # the same path on CPU with the tiny config
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]


def build_processor(tiny: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast, Qwen2AudioProcessor, WhisperFeatureExtractor

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    # the real model listens to 30 s windows; the tiny one to 8 s (as in tests/tiny_models.py)
    extractor = WhisperFeatureExtractor(feature_size=128, chunk_length=8 if tiny else 30)
    return Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def build_model(processor, tiny: bool, device: str, dtype: str):
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    tokenizer = processor.tokenizer
    audio_token = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    if tiny:
        config = Qwen2AudioConfig(
            audio_config=dict(
                d_model=16,
                encoder_layers=1,
                encoder_attention_heads=2,
                encoder_ffn_dim=32,
                num_mel_bins=128,
                max_source_positions=400,
            ),
            text_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=4096,
            ),
            audio_token_id=audio_token,
        )
    else:  # Qwen/Qwen2-Audio-7B's config.json: the encoder is the class default (Whisper-large-v3 sized), the LM is not
        config = Qwen2AudioConfig(
            text_config=dict(
                model_type="qwen2",
                vocab_size=156032,
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=32,
                max_position_embeddings=8192,
                rope_theta=10000.0,
                rms_norm_eps=1e-5,
            ),
            audio_token_id=audio_token,
        )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = Qwen2AudioForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if config.text_config.vocab_size > len(tokenizer):
        # the full-size head still scores all 156,032 ids (the real cost), but ids beyond the offline byte-level
        # tokenizer would decode to nothing, and an empty reply is (rightly) a malformed one for the wire client
        model.generation_config.suppress_tokens = list(range(len(tokenizer), config.text_config.vocab_size))
    return model.eval(), sum(p.numel() for p in model.parameters())


def user_turns():
    from stepeval import audio as audio_io
    from stepeval.data import loader, sources
    from stepeval.types import Message

    return [
        [Message("user", audio=a, sample_rate=r)]
        for a, r in (audio_io.read(t.audio_path) for c in loader.load(sources.bundled_sample()).conversations for t in c.turns)
    ]


async def drive(url: str, turns: list, concurrency: int, total: int) -> tuple[float, list]:
    """``total`` turns with at most ``concurrency`` in flight, through the wire client; (seconds, replies)."""
    from stepeval.client.endpoints import Endpoint
    from stepeval.client.wire import WireClient, WireSettings
    from stepeval.types import TurnContext

    client = WireClient([Endpoint(0, url, None, concurrency, 3600.0)], WireSettings(wire_model="bench", modalities=["text"]))
    try:
        await client.respond(turns[0], TurnContext("warmup", 0))  # first call pays for lazy setup
        started = time.perf_counter()
        replies = await asyncio.gather(*(client.respond(turns[i % len(turns)], TurnContext(f"c{i}", 0)) for i in range(total)))
        return time.perf_counter() - started, replies
    finally:
        await client.aclose()


def level(backend, turns: list, concurrency: int, batch: int, total: int, wait_ms: float) -> dict:
    from stepeval.backends.server import build_app, serving

    app = build_app(backend, "bench", max_concurrent=1, max_batch_size=batch, max_wait_ms=wait_ms)
    with serving(app) as url:
        seconds, replies = asyncio.run(drive(url, turns, concurrency, total))
    tokens = [r.usage.get("completion_tokens") for r in replies]
    sizes = [r.usage.get("batch_size") for r in replies]
    return {
        "concurrent": concurrency,
        "max_batch_size": batch,
        "turns": total,
        "seconds": round(seconds, 3),
        "turns_per_s": round(total / seconds, 4),
        "s_per_turn": round(seconds / total, 4),
        "new_tokens_per_turn": sorted(set(tokens)),
        "mean_batch": round(sum(sizes) / len(sizes), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny config (CPU-friendly) instead of the 7B one")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--new-tokens", type=int, default=None, help="per turn (default 128; 16 with --tiny)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent requests to measure")
    parser.add_argument("--rounds", type=int, default=None, help="turns per level = rounds x concurrency (default 3; 2 tiny)")
    parser.add_argument("--baseline-turns", type=int, default=None, help="one-at-a-time turns (default 8; 16 tiny)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    import torch

    from stepeval.backends._hf import left_padded
    from stepeval.backends.qwen2_audio import Qwen2Audio

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    new_tokens = args.new_tokens or (16 if args.tiny else 128)
    rounds = args.rounds or (2 if args.tiny else 3)
    baseline_turns = args.baseline_turns or (16 if args.tiny else 8)
    card = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()})"

    processor = build_processor(args.tiny)
    built = time.perf_counter()
    model, params = build_model(processor, args.tiny, device, dtype)
    model.generation_config.min_new_tokens = new_tokens  # exactly new_tokens per turn: fixed work
    print(
        f"model: Qwen2-Audio {'tiny' if args.tiny else '7B-sized'}, random weights, {params / 1e9:.2f} B parameters, "
        f"{dtype} on {card} (built in {time.perf_counter() - built:.1f} s); {new_tokens} new tokens per turn",
        flush=True,
    )
    backend = Qwen2Audio(model_path="<random weights>", device=device, dtype=dtype, max_new_tokens=new_tokens)
    backend._loaded = (model, left_padded(processor))
    turns = user_turns()

    rows = [level(backend, turns, 1, 1, baseline_turns, args.max_wait_ms)]  # one at a time: today's path
    rows[0]["mode"] = "one at a time"
    print(f"one at a time: {rows[0]['s_per_turn']} s/turn", flush=True)
    for concurrent in args.levels:
        # one server setting for every level (as deployed); only the load changes
        row = level(backend, turns, concurrent, max(args.levels), max(concurrent * rounds, baseline_turns), args.max_wait_ms)
        row["mode"] = "batched"
        rows.append(row)
        print(f"{concurrent} concurrent, batched: {row['s_per_turn']} s/turn (mean batch {row['mean_batch']})", flush=True)
    base = rows[0]["turns_per_s"]
    for row in rows:
        row["speedup"] = round(row["turns_per_s"] / base, 2)

    lines = [
        f"card: {card}; model: Qwen2-Audio {'tiny' if args.tiny else '7B-sized'} (random weights, {params / 1e9:.2f} B params, "
        f"{dtype}); {new_tokens} new tokens per turn",
        f"command: python scripts/bench_serve.py {' '.join(sys.argv[1:])}".rstrip(),
        "",
        "| mode | concurrent | max batch | turns | s/turn | turns/s | speedup | mean batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['concurrent']} | {r['max_batch_size']} | {r['turns']} | {r['s_per_turn']} | "
            f"{r['turns_per_s']} | {r['speedup']}x | {r['mean_batch']} |"
        )
    print("\n" + "\n".join(lines))
    if args.out:
        args.out.write_text(
            json.dumps({"card": card, "dtype": dtype, "new_tokens": new_tokens, "params": params, "rows": rows}, indent=2)
        )
    top = max(args.levels)
    at_top = next(r for r in rows if r["mode"] == "batched" and r["concurrent"] == top)
    print(f"\n{top} concurrent: {at_top['speedup']}x one-at-a-time (target on a GPU with the 7B config: >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
