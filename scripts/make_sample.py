"""Regenerate the bundled smoke/demo dataset (stepeval/data/sample/) with espeak-ng.

The sample is synthetic speech in the same on-disk shape as StepEval-Audio-360 (parquet rows
that reference audio inside ``audios.tar.gz``). It exists so the pipeline can run offline in
minutes; it is never a substitute for the benchmark.

Needs Debian's ``espeak-ng`` and ``pypinyin`` (dev only). Output is deterministic: fixed
voices, fixed tar/gzip metadata, sorted members.

    python scripts/make_sample.py
"""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from pypinyin import Style, lazy_pinyin

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "stepeval" / "data" / "sample"
ASSETS = ROOT / "stepeval" / "backends" / "assets"
RATE = 16000

# (conversation id, category, language, user turns)
CONVERSATIONS: list[tuple[str, str, str, list[str]]] = [
    (
        "sample-singing-en",
        "singing",
        "en",
        [
            "Can you sing me a short lullaby about the moon?",
            "Now sing it again, but faster and happier.",
        ],
    ),
    (
        "sample-creativity-zh",
        "creativity",
        "zh",
        [
            "请给我讲一个关于小猫的故事。",
            "故事再短一点，加一个快乐的结局。",
        ],
    ),
    (
        "sample-roleplay-en",
        "role-playing",
        "en",
        [
            "Pretend you are a pirate captain and greet your crew.",
            "Captain, a storm is coming. What do we do?",
            "Thank you captain, say goodbye to us in your pirate voice.",
        ],
    ),
    (
        "sample-logic-zh",
        "logical reasoning",
        "zh",
        [
            "小明有三个苹果，又买了两个，现在有几个？",
            "如果他吃掉一个，还剩几个？",
        ],
    ),
    (
        "sample-voice-understanding-en",
        "voice understanding",
        "en",
        [
            "Listen to my voice. Do I sound happy or tired?",
            "Why do you think so?",
        ],
    ),
    (
        "sample-voice-instruction-zh",
        "voice instruction following",
        "zh",
        [
            "请用很慢的语速说一句早上好。",
            "现在请用很快的语速再说一遍。",
        ],
    ),
    (
        "sample-gaming-en",
        "gaming",
        "en",
        [
            "Let us play a word chain game. I start with apple.",
            "Elephant. Your turn again.",
            "Tiger. Can you keep going?",
        ],
    ),
    (
        "sample-emotion-en",
        "speech emotion control",
        "en",
        [
            "Tell me the weather is nice today, in a very excited voice.",
            "Now say the same sentence in a sad voice.",
        ],
    ),
    (
        "sample-language-zh",
        "language ability",
        "zh",
        [
            "请把你好世界翻译成英文。",
            "再翻译成日语。",
        ],
    ),
    (
        "sample-language-en",
        "language ability",
        "en",
        [
            "How do you say thank you in Chinese?",
            "And how do you say good night?",
        ],
    ),
]

CANNED_TEXT = "The city library is open from nine in the morning until six in the evening."


def to_pinyin(text: str) -> str:
    """espeak-ng's Mandarin voice reads tone-numbered pinyin correctly, not characters."""
    syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
    return " ".join(s if s.strip("，。？！、") else "," for s in syllables)


def speak(text: str, language: str) -> np.ndarray:
    voice, spoken = ("cmn-latn-pinyin", to_pinyin(text)) if language == "zh" else ("en-us", text)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "t.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "140", "-w", str(wav), spoken], check=True)
        audio, rate = sf.read(wav, dtype="float32")
    audio = soxr.resample(audio, rate, RATE)
    pad = np.zeros(int(0.3 * RATE), dtype=np.float32)
    return np.concatenate([pad, audio, pad])


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows, members = [], {}
    for conv_id, category, language, texts in CONVERSATIONS:
        turns = []
        for index, text in enumerate(texts):
            ref = f"audios/{conv_id}/turn_{index}.wav"
            members[ref] = wav_bytes(speak(text, language))
            turns.append({"audio": ref, "text": text})
        rows.append({"conversation_id": conv_id, "category": category, "language": language, "turns": turns})

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            add_member(tar, name, members[name])
    with open(OUT / "audios.tar.gz", "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())

    (OUT / "data").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(OUT / "data" / "sample.parquet", index=False)
    ASSETS.mkdir(parents=True, exist_ok=True)
    sf.write(ASSETS / "canned_reply.wav", speak(CANNED_TEXT, "en"), RATE, subtype="PCM_16")
    (ASSETS / "canned_reply.txt").write_text(CANNED_TEXT + "\n", encoding="utf-8")
    (OUT / "README.md").write_text(
        "# Bundled sample (smoke and demo set)\n\n"
        f"{len(rows)} synthetic conversations ({sum(len(r['turns']) for r in rows)} user turns), espeak-ng speech,\n"
        "one or more per StepEval-Audio-360 category, English and Mandarin. Same on-disk shape as the\n"
        "real dataset (parquet + audios.tar.gz). Regenerate with `python scripts/make_sample.py`.\n"
        "It checks that the pipeline runs; it says nothing about a model's quality on the benchmark.\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
