"""A fake OpenAI-compatible judge for tests: decides its grade from what it received.

The verdict depends on the request, so tests can check the right input reached the judge:
- which rubric: read from the system prompt's front-matter-free text (the metric's key word);
- yes/no rubrics: "yes" when the quoted reply (the JSON string inside <reply> tags) mentions "library";
- 1-5 text rubrics: 1 + the number of earlier exchanges in <conversation> (capped at 5);
- audio rubrics: 1 + the reply audio's whole seconds (capped at 5), from the last input_audio part.
Replies are byte-for-byte the chat.completion shape the OpenAI API sends.
"""

from __future__ import annotations

import base64
import io
import json
import re

import soundfile as sf

from tests.http_fake import Request, Scripted

CHAT = "/v1/chat/completions"
KEYWORDS = {
    "FACTUALLY CORRECT": "factuality",
    "RELEVANT": "relevance",
    "CHAT SCORE": "chat_score",
    "FOLLOWS THE USER'S INSTRUCTIONS": "instruction_following",
    "VOICE": "voice_control",
    "AUDIO QUALITY": "audio_quality",
}


def completion(content: str | None, refusal: str | None = None, finish_reason: str = "stop", model: str = "fake-judge") -> dict:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_f9f4fb6dbf",
    }


def metric_of(body: dict) -> str:
    system = body["messages"][0]["content"]
    found = [metric for word, metric in KEYWORDS.items() if word in system]
    assert len(found) == 1, f"fake judge: cannot tell the rubric of {system[:80]!r}"
    return found[0]


def user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "\n".join(p.get("text", "") for p in content)


def quoted_reply(body: dict) -> str:
    match = re.search(r"<reply>\n(.*)\n</reply>", user_text(body), re.DOTALL)
    assert match, "no <reply> block in the judge request"
    return json.loads(match.group(1))


def conversation(body: dict) -> list[dict]:
    match = re.search(r"<conversation>\n(.*?)\n?</conversation>", user_text(body), re.DOTALL)
    assert match, "no <conversation> block in the judge request"
    return [json.loads(line) for line in match.group(1).splitlines() if line.strip()]


def audio_parts(body: dict) -> list[tuple[int, float]]:
    """(sample rate, seconds) of each input_audio attachment, decoded from base64 wav."""
    content = body["messages"][-1]["content"]
    out = []
    for part in content if isinstance(content, list) else []:
        if part["type"] == "input_audio":
            assert part["input_audio"]["format"] == "wav"
            info = sf.info(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
            out.append((info.samplerate, info.frames / info.samplerate))
    return out


def audio_samples(body: dict) -> list:
    """Each input_audio attachment decoded to mono float samples (numpy), in order."""
    content = body["messages"][-1]["content"]
    out = []
    for part in content if isinstance(content, list) else []:
        if part["type"] == "input_audio":
            samples, _ = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])), dtype="float32")
            out.append(samples if samples.ndim == 1 else samples.mean(axis=1))
    return out


def request_text(body: dict) -> str:
    """The user's latest request as the listening judge got it in writing (<request>), else ''."""
    match = re.search(r"<request>\n(.*?)\n</request>", user_text(body), re.DOTALL)
    return json.loads(match.group(1)) if match else ""


def grade(body: dict) -> tuple[str, object]:
    """(field, grade) the fake judge gives this request."""
    metric = metric_of(body)
    if metric in ("factuality", "relevance"):
        return "verdict", "yes" if "library" in quoted_reply(body).lower() else "no"
    if metric in ("chat_score", "instruction_following"):
        earlier = sum(1 for line in conversation(body) if line["role"] == "assistant")
        return "score", min(5, 1 + earlier)
    seconds = audio_parts(body)[-1][1]
    return "score", min(5, 1 + int(seconds))


SERVED = ("fake-judge", "fake-omni")  # the model names the fake judges answer to in /models


def models_list(*ids: str) -> Scripted:
    """``GET /v1/models`` as an OpenAI-compatible server answers it."""
    return Scripted(json={"object": "list", "data": [{"id": i, "object": "model", "owned_by": "tests"} for i in ids]})


def serving(fallback, *ids: str):
    """``fallback`` for chat completions, and the judge pre-flight's ``GET /models`` listing ``ids``."""

    def answer(request: Request) -> Scripted:
        if request.method == "GET" and request.path.endswith("/models"):
            return models_list(*ids)
        return fallback(request)

    return answer


def judge(request: Request) -> Scripted:
    """The fallback that answers every judge request by its content (and the pre-flight GET /models)."""
    if request.method == "GET" and request.path.endswith("/models"):
        return models_list(*SERVED)
    field, value = grade(request.json)
    content = json.dumps({"rationale": f"fake judge read the request ({field})", field: value})
    return Scripted(json=completion(content))


def reply_with(content: str | None, **kwargs: object) -> Scripted:
    return Scripted(json=completion(content, **kwargs))
