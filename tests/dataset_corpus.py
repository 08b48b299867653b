"""A corpus of plausible published layouts of one small benchmark, written as real files.

Every layout holds the same four conversations (2, 3, 11 and 2 user turns; two share a category), each user turn a distinct
real WAV clip (soundfile), so a test can check that a mapping found the right clip, text and
category for every turn, not only that something loaded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

RATE = 16000
CONVERSATIONS = (("conv-a", "singing", 2), ("conv-b", "gaming", 3), ("conv-c", "logical reasoning", 11), ("conv-d", "gaming", 2))
CATEGORY_ZH = {"singing": "唱歌", "gaming": "游戏", "logical reasoning": "逻辑推理"}


@dataclass
class Turn:
    conv: str
    number: int  # 0-based
    category: str
    text: str
    answer: str
    samples: np.ndarray  # int16

    @property
    def name(self) -> str:
        return f"{self.conv}_turn{self.number}.wav"

    def wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, self.samples, RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue()


def turns() -> list[Turn]:
    out, k = [], 0
    for conv, category, count in CONVERSATIONS:
        for number in range(count):
            k += 1
            t = np.arange(int(RATE * 0.1)) / RATE
            samples = (0.3 * np.sin(2 * np.pi * (200 + 37 * k) * t) * 32767).astype(np.int16)
            out.append(Turn(conv, number, category, f"question {number + 1} of {conv}", f"answer {number + 1}", samples))
    return out


def by_conv() -> dict[str, list[Turn]]:
    out: dict[str, list[Turn]] = {}
    for turn in turns():
        out.setdefault(turn.conv, []).append(turn)
    return out


def fingerprint(path: Path) -> str:
    samples, _ = sf.read(path, dtype="int16")
    return hashlib.sha256(np.ascontiguousarray(samples).tobytes()).hexdigest()


def expected() -> dict[str, list[tuple[str, str, str]]]:
    """conversation id -> [(clip fingerprint, transcript, category)] in turn order."""
    return {
        conv: [(hashlib.sha256(t.samples.tobytes()).hexdigest(), t.text, t.category) for t in items]
        for conv, items in by_conv().items()
    }


def write_clips(root: Path, folder: str = "audio", answers: bool = False) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for turn in turns():
        sf.write(root / folder / turn.name, turn.samples, RATE, subtype="PCM_16")
        if answers:  # answer audio: a different clip, which must never be replayed
            sf.write(root / folder / f"answer_{turn.name}", turn.samples[::-1], RATE, subtype="PCM_16")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


# -- the layouts ------------------------------------------------------------------------------------------------


def nested_rounds(root: Path) -> None:
    write_clips(root)
    rows = [
        {
            "dialog_id": conv,
            "task": items[0].category,
            "rounds": [{"speech": f"audio/{t.name}", "utterance": t.text} for t in items],
        }
        for conv, items in by_conv().items()
    ]
    write_parquet(root / "data" / "test-00000-of-00001.parquet", rows)


def rows_per_turn_string_index_shuffled(root: Path) -> None:
    """One row per turn, turn indices as strings "1".."11" (lexical order would put "10" before "2"), shuffled."""
    write_clips(root)
    rows = [
        {"session_id": t.conv, "turn": str(t.number + 1), "audio_path": f"audio/{t.name}", "transcript": t.text,
         "category": t.category}
        for t in turns()
    ]  # fmt: skip
    random.Random(7).shuffle(rows)
    write_jsonl(root / "data" / "test.jsonl", rows)


def odd_column_names(root: Path) -> None:
    """One row per turn under names nothing is named like: detection must fail and print a line that works."""
    write_clips(root, "clips")
    rows = [
        {"Sess": t.conv, "k#": t.number, "Clip File": f"clips/{t.name}", "Kind Of": t.category, "utterance text": t.text}
        for t in turns()
    ]
    write_parquet(root / "data" / "test.parquet", pd.DataFrame(rows).iloc[::-1].to_dict("records"))


def chinese_columns(root: Path) -> None:
    write_clips(root, "音频")
    rows = [
        {"对话id": t.conv, "轮次": t.number, "音频": f"音频/{t.name}", "类别": CATEGORY_ZH[t.category], "文本": t.text}
        for t in turns()
    ]
    write_parquet(root / "data" / "test.parquet", rows)


def datasets_audio_rows(root: Path) -> None:
    """`datasets` wrote it: an Audio column with the WAV bytes embedded, one row per turn."""
    import datasets

    items = turns()
    ds = datasets.Dataset.from_dict(
        {
            "conversation_id": [t.conv for t in items],
            "turn_index": [t.number for t in items],
            "audio": [{"bytes": t.wav_bytes(), "path": t.name} for t in items],
            "text": [t.text for t in items],
            "category": [t.category for t in items],
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    (root / "data").mkdir(parents=True)
    ds.to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))


def datasets_audio_lists(root: Path) -> None:
    """`datasets` wrote it: one row per conversation, a list of embedded Audio structs plus their transcripts."""
    import datasets

    groups = by_conv()
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "category": datasets.Value("string"),
            "user_audio": datasets.Sequence(datasets.Audio(decode=False)),
            "transcripts": datasets.Sequence(datasets.Value("string")),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "id": list(groups),
            "category": [items[0].category for items in groups.values()],
            "user_audio": [[{"bytes": t.wav_bytes(), "path": t.name} for t in items] for items in groups.values()],
            "transcripts": [[t.text for t in items] for items in groups.values()],
        }
    ).cast(features)  # Arrow casts the {bytes, path} structs: nothing is re-encoded
    (root / "data").mkdir(parents=True)
    ds.to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))


def openai_input_audio(root: Path) -> None:
    """OpenAI chat messages: user content is a list of parts with base64 input_audio; assistant content a string."""
    rows = []
    for conv, items in by_conv().items():
        messages = [{"role": "system", "content": "You are a helpful voice assistant."}]
        for t in items:
            data = base64.b64encode(t.wav_bytes()).decode()
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Answer the spoken question."},
                        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
                    ],
                }
            )
            messages.append({"role": "assistant", "content": t.answer})
        rows.append({"id": conv, "category": items[0].category, "messages": messages})
    write_jsonl(root / "data" / "test.jsonl", rows)


def openai_audio_files_parquet(root: Path) -> None:
    """OpenAI-style messages in parquet: every content a list of parts; user parts reference audio files."""
    write_clips(root)
    rows = []
    for conv, items in by_conv().items():
        messages = []
        for t in items:
            messages.append({"role": "user", "content": [{"type": "audio", "audio": f"audio/{t.name}", "text": None}]})
            messages.append({"role": "assistant", "content": [{"type": "text", "audio": None, "text": t.answer}]})
        rows.append({"conversation_id": conv, "category": items[0].category, "messages": messages})
    write_parquet(root / "data" / "test.parquet", rows)


def sharegpt(root: Path) -> None:
    """ShareGPT: conversations of from/value; the human values are audio paths, the gpt values text answers."""
    write_clips(root, "wavs")
    rows = []
    for conv, items in by_conv().items():
        conversation = []
        for t in items:
            conversation.append({"from": "human", "value": f"wavs/{t.name}"})
            conversation.append({"from": "gpt", "value": t.answer})
        rows.append({"id": conv, "category": items[0].category, "conversations": conversation})
    write_jsonl(root / "sharegpt.jsonl", rows)


def parallel_lists(root: Path) -> None:
    """Parallel lists per conversation: question audio, answer audio (never replayed), question texts, answers."""
    write_clips(root, answers=True)
    rows = [
        {
            "id": conv,
            "category": items[0].category,
            "question_audios": [f"audio/{t.name}" for t in items],
            "answer_audios": [f"audio/answer_{t.name}" for t in items],
            "questions": [t.text for t in items],
            "answers": [t.answer for t in items],
        }
        for conv, items in by_conv().items()
    ]
    write_parquet(root / "data" / "test.parquet", rows)


def flat_chat_rows(root: Path) -> None:
    """One row per message: user rows hold an audio path in content, assistant rows the answer text."""
    write_clips(root)
    rows = []
    for t in turns():
        rows.append({"conversation_id": t.conv, "turn_id": 2 * t.number, "role": "user", "content": f"audio/{t.name}",
                     "category": t.category})  # fmt: skip
        rows.append({"conversation_id": t.conv, "turn_id": 2 * t.number + 1, "role": "assistant", "content": t.answer,
                     "category": t.category})  # fmt: skip
    random.Random(3).shuffle(rows)
    write_jsonl(root / "data" / "test.jsonl", rows)


def chinese_chat(root: Path) -> None:
    """A chat with Chinese field names and roles (用户/助手), audio on both sides in a field beside the text."""
    write_clips(root, answers=True)
    rows = []
    for conv, items in by_conv().items():
        dialog = []
        for t in items:
            dialog.append({"角色": "用户", "语音": f"audio/{t.name}", "文本": t.text})
            dialog.append({"角色": "助手", "语音": f"audio/answer_{t.name}", "文本": t.answer})
        rows.append({"编号": conv, "类别": CATEGORY_ZH[items[0].category], "对话": dialog})
    write_parquet(root / "data" / "test.parquet", rows)


def parallel_lists_two_user_sides(root: Path) -> None:
    """Two user-side audio lists (16 kHz copies beside the originals): which one is replayed is the user's call."""
    write_clips(root)
    write_clips(root, "audio_16k")
    rows = [
        {
            "id": conv,
            "category": items[0].category,
            "question_audios": [f"audio/{t.name}" for t in items],
            "prompt_audios_16k": [f"audio_16k/{t.name}" for t in items],
            "questions": [t.text for t in items],
        }
        for conv, items in by_conv().items()
    ]
    write_parquet(root / "data" / "test.parquet", rows)


def chat_caller_agent(root: Path) -> None:
    """A call-centre chat: speaker caller/agent (no user role by name), both sides with audio."""
    write_clips(root, answers=True)
    rows = []
    for conv, items in by_conv().items():
        dialogue = []
        for t in items:
            dialogue.append({"speaker": "caller", "audio": f"audio/{t.name}", "text": t.text})
            dialogue.append({"speaker": "agent", "audio": f"audio/answer_{t.name}", "text": t.answer})
        rows.append({"call_id": conv, "category": items[0].category, "dialogue": dialogue})
    write_jsonl(root / "calls.jsonl", rows)


def chat_bare_clip_names(root: Path) -> None:
    """OpenAI-style messages whose user content is a bare clip name (no suffix), matched to files by name."""
    write_clips(root)
    rows = []
    for conv, items in by_conv().items():
        messages = []
        for t in items:
            messages.append({"role": "user", "content": Path(t.name).stem})
            messages.append({"role": "assistant", "content": t.answer})
        rows.append({"id": conv, "category": items[0].category, "messages": messages})
    write_jsonl(root / "data" / "test.jsonl", rows)


def chat_unnamed_roles(root: Path) -> None:
    """Entries {who, clip}: nothing named like a role, but only the A side's clips are audio (B answers in text)."""
    write_clips(root)
    rows = []
    for conv, items in by_conv().items():
        dialogue = []
        for t in items:
            dialogue += [{"who": "A", "clip": f"audio/{t.name}"}, {"who": "B", "clip": t.answer}]
        rows.append({"id": conv, "category": items[0].category, "dialogue": dialogue})
    write_parquet(root / "data" / "test.parquet", rows)


def rows_caller_agent(root: Path) -> None:
    """One row per utterance of a call: speaker caller/agent (no user role by name), both with audio."""
    write_clips(root, answers=True)
    rows = []
    for t in turns():
        rows.append({"call_id": t.conv, "seq": 2 * t.number, "speaker": "caller", "wav": f"audio/{t.name}",
                     "text": t.text, "category": t.category})  # fmt: skip
        rows.append({"call_id": t.conv, "seq": 2 * t.number + 1, "speaker": "agent", "wav": f"audio/answer_{t.name}",
                     "text": t.answer, "category": t.category})  # fmt: skip
    write_parquet(root / "data" / "test.parquet", rows)


LAYOUTS = {
    "nested_rounds": nested_rounds,
    "rows_per_turn_string_index_shuffled": rows_per_turn_string_index_shuffled,
    "odd_column_names": odd_column_names,
    "chinese_columns": chinese_columns,
    "datasets_audio_rows": datasets_audio_rows,
    "datasets_audio_lists": datasets_audio_lists,
    "openai_input_audio": openai_input_audio,
    "openai_audio_files_parquet": openai_audio_files_parquet,
    "sharegpt": sharegpt,
    "parallel_lists": parallel_lists,
    "flat_chat_rows": flat_chat_rows,
    "chinese_chat": chinese_chat,
    "parallel_lists_two_user_sides": parallel_lists_two_user_sides,
    "chat_caller_agent": chat_caller_agent,
    "chat_bare_clip_names": chat_bare_clip_names,
    "chat_unnamed_roles": chat_unnamed_roles,
    "rows_caller_agent": rows_caller_agent,
}
NEEDS_OVERRIDE = {
    "odd_column_names",
    "parallel_lists_two_user_sides",
    "chat_caller_agent",
    "chat_bare_clip_names",
    "rows_caller_agent",
}
CHINESE = {"chinese_columns", "chinese_chat"}
NO_TEXT = {
    "openai_input_audio",
    "openai_audio_files_parquet",
    "sharegpt",
    "flat_chat_rows",
    "chat_bare_clip_names",
    "chat_unnamed_roles",
}  # transcripts not published
