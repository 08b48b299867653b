"""A real cascade end to end: `stepeval run model=cascade` with the packaged Whisper base as its ASR, espeak-ng as
its TTS and an OpenAI-compatible LLM stand-in on 127.0.0.1 that answers some turns with nothing (0 completion
tokens), as a small real LLM does. An empty answer is spoken as nothing: the empty-reply flag counts it, it has no
speech, and the table's counts include it; error-rate units come from the reply's own (Chinese) text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepeval.store import RecordLog
from tests.http_fake import FakeServer, Request, Scripted
from tests.openai_audio import completion
from tests.run_helpers import latest_view, only_run, stepeval_run

pytestmark = pytest.mark.slow  # a subprocess run with Whisper and espeak-ng

CHINESE_ANSWER = "你好，今天天气很好。"


def llm_stand_in(request: Request) -> Scripted:
    """The first turn of each conversation gets a Chinese sentence; every later turn an empty answer (what
    gemma-3-270m gave on a Mandarin turn): the choice depends on the conversation, not on request order."""
    if request.path.endswith("/models"):
        return Scripted(json={"object": "list", "data": [{"id": "llm", "object": "model"}]})
    answered = sum(m["role"] == "assistant" for m in request.json["messages"])
    body = completion(content=CHINESE_ANSWER if answered == 0 else "", model="llm")
    if answered:
        body["usage"]["completion_tokens"] = 0
    return Scripted(json=body)


def test_cascade_with_an_empty_answer_is_counted_as_an_empty_reply(tmp_path: Path):
    with FakeServer() as server:
        server.fallback = llm_stand_in
        proc = stepeval_run(
            tmp_path,
            "model=cascade",
            f"model.backend.llm_base_url={server.url}/v1",
            "model.backend.llm_model=llm",
            "model.backend.asr.model=packaged:whisper-base",
            "asr=whisper_base_offline",
            "dataset=sample",
            "limit=4",
            "judge=none",
            timeout=1800,  # a hang guard, far above the run's time
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(tmp_path)
    replays = RecordLog(run / "records" / "replay.jsonl").load()
    scores = RecordLog(run / "records" / "score.jsonl").load()
    empty = {key for key, r in replays.items() if r["text"] == ""}
    spoken = {key for key, r in replays.items() if r["text"] == CHINESE_ANSWER}
    assert empty and spoken and empty | spoken == set(replays)  # at least one multi-turn conversation in limit=4
    for key in empty:
        assert replays[key]["status"] == "ok" and replays[key]["audio"] is None and replays[key]["speaks"] is True
        metrics = scores[key]["metrics"]
        assert (metrics["flag_empty"], metrics["speech_detected"], metrics["duration_s"]) == (1.0, 0.0, 0.0)
        assert not scores[key]["not_applicable"]
    for key in spoken:
        metrics = scores[key]["metrics"]
        assert metrics["flag_empty"] == 0.0 and metrics["duration_s"] > 0.5
        # the reference is Chinese: characters, whatever language Whisper heard espeak-ng's Mandarin in
        assert scores[key]["counts"]["text_speech_error"]["unit"] == "char"
        assert scores[key]["counts"]["text_speech_error"]["units"] == 8
        assert metrics["speech_rate_cps"] is not None and metrics["speech_rate_wps"] is None

    summary = json.loads((latest_view(run) / "summary.json").read_text())
    flag = summary["metrics"]["flag_empty"]["overall"]
    assert flag["scored"] == len(replays) and flag["missing"] == 0
    assert flag["mean"] == pytest.approx(len(empty) / len(replays), abs=1e-3)
    detected = summary["metrics"]["speech_detected"]["overall"]
    assert detected["scored"] == len(replays)
