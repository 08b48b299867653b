"""Regenerate ``stepeval/data/spoken_qa_mini/``: a tiny single-turn spoken-QA set in the layout ``datasets`` writes.

It exists to prove the loader is not tied to StepEval-Audio-360: one row per question, the audio
embedded in the parquet as a Hugging Face ``Audio`` column (``{"bytes", "path"}``, the feature
recorded in the parquet's ``huggingface`` schema metadata), no archive, a README with the hub's
YAML ``configs`` block, and a reference answer per question. The speech is four question clips of
the bundled sample (espeak-ng), re-encoded as FLAC and as 24 kHz WAV so more than one codec and
rate goes through the loader. Deterministic; needs only the package's own dependencies.

    python scripts/make_spoken_qa.py
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import soxr
from datasets import Audio, Features, Value

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "stepeval" / "data" / "sample"
OUT = ROOT / "stepeval" / "data" / "spoken_qa_mini"

# (question id, sample clip, subject, language, reference answer, encoding)
QUESTIONS = [
    ("qa-001", "audios/sample-language-en/turn_0.wav", "translation", "en", "谢谢 (xièxie)", "flac"),
    ("qa-002", "audios/sample-logic-zh/turn_0.wav", "arithmetic", "zh", "五个 (5)", "flac"),
    ("qa-003", "audios/sample-language-zh/turn_0.wav", "translation", "zh", "Hello, world.", "wav24k"),
    ("qa-004", "audios/sample-gaming-en/turn_0.wav", "word games", "en", "A word starting with e, e.g. elephant.", "wav24k"),
]
FEATURES = Features(
    {
        "question_id": Value("string"),
        "audio": Audio(sampling_rate=None),
        "question": Value("string"),
        "answer": Value("string"),
        "subject": Value("string"),
        "language": Value("string"),
    }
)
README = """---
license: apache-2.0
task_categories:
- question-answering
language:
- en
- zh
configs:
- config_name: default
  data_files:
  - split: test
    path: data/test-*.parquet
---
# spoken_qa_mini (packaged with stepeval)

{n} single-turn spoken questions with reference answers, in the layout `datasets` writes for audio
columns (audio bytes embedded in the parquet, FLAC and 24 kHz WAV). The speech is synthetic
(espeak-ng clips of the bundled sample). It exists to show the loader is general
(`stepeval run dataset=spoken_qa_mini`); it measures nothing. Regenerate with
`python scripts/make_spoken_qa.py`.
"""


def sample_clips() -> dict[str, bytes]:
    with tarfile.open(SAMPLE / "audios.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def sample_texts() -> dict[str, str]:
    table = pd.read_parquet(SAMPLE / "data" / "sample.parquet")
    return {turn["audio"]: turn["text"] for turns in table["turns"] for turn in turns}


def encode(wav: bytes, how: str) -> tuple[bytes, str]:
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    buf = io.BytesIO()
    if how == "flac":
        sf.write(buf, audio, rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue(), "flac"
    sf.write(buf, soxr.resample(audio, rate, 24000), 24000, format="WAV", subtype="PCM_16")
    return buf.getvalue(), "wav"


def main() -> None:
    clips, texts = sample_clips(), sample_texts()
    rows = []
    for qid, clip, subject, language, answer, how in QUESTIONS:
        data, suffix = encode(clips[clip], how)
        rows.append(
            {
                "question_id": qid,
                "audio": {"bytes": data, "path": f"{qid}.{suffix}"},
                "question": texts[clip],
                "answer": answer,
                "subject": subject,
                "language": language,
            }
        )
    (OUT / "data").mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)
    pq.write_table(table, OUT / "data" / "test-00000-of-00001.parquet")
    (OUT / "README.md").write_text(README.replace("{n}", str(len(rows))), encoding="utf-8")


if __name__ == "__main__":
    main()
