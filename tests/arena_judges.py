"""Pairwise judges of our own for the arena tests, answering the OpenAI chat-completions format byte for byte:
- ``content_aware``: prefers the reply that covers more of the user's latest turn (character bigrams, any script); an empty
  reply loses to any other; nearly equal replies are a tie;
- ``always_a``: answers "A" whatever it reads (the worst position bias);
- ``listening``: prefers the longer reply audio (of speech-like level), ties within 10 %.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import soundfile as sf

from tests.http_fake import Request, Scripted
from tests.judge_fake import completion, models_list

SERVED = ("pair-judge",)


def _user(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "\n".join(p.get("text", "") for p in content)


def _block(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL)
    assert match, f"no <{tag}> block in the arena request"
    return match.group(1)


def _bigrams(text: str) -> set[str]:
    text = re.sub(r"\W+", "", text.lower())
    return {text[k : k + 2] for k in range(len(text) - 1)} or ({text} if text else set())


def closeness(reply: str, request: str) -> float:
    """0 for an empty reply; else 1 + the share of the request's character bigrams the reply covers (recall: a
    reply cut short covers less, and length alone earns nothing)."""
    if not reply.strip():
        return 0.0
    a, b = _bigrams(reply), _bigrams(request)
    return 1.0 + (len(a & b) / len(b) if b else 0.0)


def content_winner(body: dict) -> str:
    text = _user(body)
    lines = [json.loads(line) for line in _block(text, "conversation").splitlines() if line.strip()]
    request = lines[-1]["text"]
    a = closeness(json.loads(_block(text, "reply_a")), request)
    b = closeness(json.loads(_block(text, "reply_b")), request)
    return "tie" if abs(a - b) < 0.05 else ("A" if a > b else "B")


def _seconds(part: dict) -> float:
    samples, rate = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])), dtype="float32")
    loud = np.abs(samples) > 0.01
    return float(loud.sum()) / rate


def listening_winner(body: dict) -> str:
    parts = [p for p in body["messages"][-1]["content"] if p["type"] == "input_audio"]
    a, b = _seconds(parts[-2]), _seconds(parts[-1])
    return "tie" if abs(a - b) <= 0.1 * max(a, b, 1e-9) else ("A" if a > b else "B")


def answering(winner) -> callable:
    def answer(request: Request) -> Scripted:
        if request.method == "GET" and request.path.endswith("/models"):
            return models_list(*SERVED)
        content = json.dumps({"rationale": "compared both replies", "winner": winner(request.json)})
        return Scripted(json=completion(content, model="pair-judge"))

    return answer


content_aware = answering(content_winner)
always_a = answering(lambda body: "A")
listening = answering(listening_winner)
