"""Regenerate the short speech clips under tests/data/ that the ASR and signal tests run on.

espeak-ng speech (English ``-v en-us -s 120``; Mandarin with the ``cmn-latn-pinyin`` voice reading
tone-numbered pinyin from pypinyin), 16 kHz mono FLAC with 0.3 s of silence either side, plus
``clips.json`` with each clip's text, voice and language. Deterministic for a given espeak-ng.

Needs Debian's ``espeak-ng`` and ``pypinyin`` (dev only; the tests read the committed files).

    python scripts/make_test_audio.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from pypinyin import Style, lazy_pinyin

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data"
RATE = 16000
PAD_S = 0.3

# name -> (language, espeak voice, text); the speaker_* clips share texts across voices
CLIPS: dict[str, tuple[str, str, str]] = {
    "en_price": ("en", "en-us", "It costs five dollars and twenty cents."),
    "en_library": ("en", "en-us", "The city library opens at nine in the morning."),
    "zh_apples": ("zh", "cmn-latn-pinyin", "请给我三个苹果。"),
    "speaker_same_1": ("en", "en-us", "Please close the window before you leave."),
    "speaker_same_2": ("en", "en-us", "We will meet again next week."),
    "speaker_other_1": ("en", "en-us+f4", "Please close the window before you leave."),
    "speaker_other_2": ("en", "en-us+f2", "We will meet again next week."),
}


def to_pinyin(text: str) -> str:
    syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
    return " ".join(s if s.strip("，。？！、") else "," for s in syllables)


def speak(text: str, language: str, voice: str) -> np.ndarray:
    spoken = to_pinyin(text) if language == "zh" else text
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "t.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "120", "-w", str(wav), spoken], check=True)
        audio, rate = sf.read(wav, dtype="float32")
    audio = soxr.resample(audio, rate, RATE).astype(np.float32)
    pad = np.zeros(int(PAD_S * RATE), dtype=np.float32)
    return np.concatenate([pad, audio, pad])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {}
    for name, (language, voice, text) in CLIPS.items():
        audio = speak(text, language, voice)
        sf.write(OUT / f"{name}.flac", audio, RATE, format="FLAC", subtype="PCM_16")
        meta[name] = {"file": f"{name}.flac", "language": language, "voice": voice, "speed": 120, "text": text}
    (OUT / "clips.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in OUT.glob("*.flac"))
    print(f"clips: {len(meta)}\ntotal_bytes: {total}")


if __name__ == "__main__":
    main()
