"""A real run to validate judges on, and fake judges that do or do not read (or hear) the content.

The run: the bundled sample replayed through ``model=recorded`` with a reply written here for every
user turn (a text channel that answers the request, and a wav rendered for it: a voiced, intoned signal
at the pitch its request asks for, with pauses), judged over real HTTP by the content-aware fake judge
below. The fake judges speak the OpenAI chat-completions format and pick their behaviour by the
request's ``model``:

- ``aware`` reads: relevance/factuality "yes" when the reply shares a content word (English) or a
  character pair (Chinese) with the user's latest turn and reads fluently (its word pairs are pairs of
  the language it knows: the replies below); 1-5 scores grow with the reply's length, lose a point per
  sixth of broken word pairs, 1 when it shares nothing. It listens: audio quality 5 less noise (no quiet
  frames), clipping (many samples at the peak) and a reply too short to be whole; voice control 5 when
  the voice's pitch is the one the request asks for (``wanted_pitch``) and intoned, less where not;
- ``blind-index``: a verdict from a hash of the turn index alone (the number of earlier user turns);
- ``random``: a verdict from a hash of the whole request: as good as a coin flip, and repeatable;
- ``constant``: always the best grade;
- ``contrarian``: rewards word errors (grades rise as the reply reads less fluently).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from stepeval import audio as audio_io
from stepeval import pipeline
from stepeval.config import conf_dir, register_schemas
from tests import judge_fake
from tests.http_fake import FakeServer, Request, Scripted

REPO = Path(__file__).resolve().parents[1]

REPLIES = {
    "sample-singing-en": [
        "Here is a short lullaby about the moon: hush now little one, the silver moon is watching over you tonight, "
        "sleep softly and dream until the morning light comes.",
        "Faster and happier this time: hush now little one, the bright moon is smiling, sing along with me, dance along "
        "with me, and wake up with a happy heart!",
    ],
    "sample-creativity-zh": [
        "好的，这是一个关于小猫的故事：从前有一只小猫，它每天在花园里追蝴蝶，有一天它迷路了，最后在月光下找到了回家的路。",
        "短一点的故事：小猫在花园里追蝴蝶迷了路，后来找到了回家的路，和妈妈一起吃了鱼，这是一个快乐的结局。",
    ],
    "sample-roleplay-en": [
        "Ahoy there, my loyal crew! Your pirate captain greets you on this fine morning. Hoist the sails and ready the "
        "cannons, for adventure awaits us on the open sea!",
        "A storm is coming, you say? Lower the sails, tie down the barrels, and steer the ship toward the cove. Your "
        "captain has weathered worse storms than this one!",
        "Arr, thank you, my hearties! Your captain says goodbye for now. Keep your cutlasses sharp and your spirits high "
        "until we meet again on the waves!",
    ],
    "sample-logic-zh": [
        "小明原来有三个苹果，又买了两个苹果，三加二等于五，所以现在小明一共有五个苹果，这就是答案。",
        "如果他吃掉一个苹果，五减一等于四，所以小明还剩四个苹果，这就是最后的答案。",
    ],
    "sample-voice-understanding-en": [
        "From your voice, you sound a little tired rather than happy: your voice is slow and soft, and the pitch drops "
        "at the end of each sentence you speak.",
        "I think so because your speaking pace was slow, there were long pauses between words, and your pitch stayed "
        "low, which are common signs that someone is tired.",
    ],
    "sample-voice-instruction-zh": [
        "好的，我会用很慢的语速说：早……上……好……，希望你今天有一个美好的早上，一切都顺顺利利。",
        "好的，现在用很快的语速再说一遍：早上好！希望你今天过得开心，一切都顺顺利利，天天快乐！",
    ],
    "sample-gaming-en": [
        "Great, let us play the word chain game! You start with apple, which ends with the letter e, so my word is "
        "elephant. Now it is your turn to continue.",
        "Elephant ends with the letter t, so my turn again gives tiger. Tiger ends with r, so now it is your turn to "
        "find a word that starts with r.",
        "Yes, I can keep going! Tiger ends with r, so my next word is rabbit. Rabbit ends with t, so your next word "
        "should start with the letter t.",
    ],
    "sample-emotion-en": [
        "Wow, the weather is so nice today! The sun is shining, the sky is blue, and I am so excited to go outside and "
        "enjoy every minute of this wonderful day!",
        "Oh... the weather is nice today, I suppose... the same sentence, said in a sad voice, sounds like a sunny day "
        "that I cannot enjoy at all, sadly.",
    ],
    "sample-language-zh": [
        "你好世界翻译成英文是 Hello World，这是学习编程时最常见的第一句话，意思是向整个世界问好。",
        "翻译成日语是こんにちは世界，读作 konnichiwa sekai，意思同样是你好世界，是很常用的问候。",
    ],
    "sample-language-en": [
        "In Chinese, you say thank you as xie xie, written with two characters. It is pronounced like shyeh shyeh, and "
        "people use it every day in Chinese conversation.",
        "To say good night in Chinese, you say wan an, which literally means a peaceful evening. People often say it "
        "to family members before they go to sleep at night.",
    ],
}
STOP = {"with", "your", "this", "that", "what", "they", "them", "have", "from", "then", "there", "about", "again", "just"}
CJK = re.compile(r"[\u4e00-\u9fff]")


def content_tokens(text: str) -> set[str]:
    """English words of 4+ letters (not stop words) and Chinese character pairs."""
    words = {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in STOP}
    han = "".join(CJK.findall(text))
    return words | {han[i : i + 2] for i in range(len(han) - 1)}


def length(text: str) -> int:
    return len(re.findall(r"[A-Za-z]+", text)) + len(CJK.findall(text)) // 2


def _tokens(text: str) -> list[str]:
    if CJK.search(text):
        return [c for c in text if not c.isspace()]
    return re.findall(r"[a-z']+", text.lower())


def _pairs(text: str) -> list[tuple[str, str]]:
    toks = _tokens(text)
    return list(zip(toks, toks[1:], strict=False))


@functools.cache
def known_pairs() -> frozenset:
    """The language the aware judge knows: the word (character) pairs of the replies above and of the sample's user turns."""
    texts = [reply for replies in REPLIES.values() for reply in replies] + list(user_texts().values())
    return frozenset(p for text in texts for p in _pairs(text))


def fluency(text: str) -> float:
    """The share of the text's word (character) pairs that are pairs of the language the judge knows."""
    pairs = _pairs(text)
    known = known_pairs()
    return sum(p in known for p in pairs) / len(pairs) if pairs else 0.0


def aware_grade(body: dict) -> tuple[str, object]:
    metric = judge_fake.metric_of(body)
    if metric in ("voice_control", "audio_quality"):
        return aware_listening(body, metric)
    reply = judge_fake.quoted_reply(body)
    latest = [t for t in judge_fake.conversation(body) if t["role"] == "user"][-1]["text"]
    answers = bool(content_tokens(reply) & content_tokens(latest))
    fluent = fluency(reply)
    if metric in ("factuality", "relevance"):
        return "verdict", "yes" if answers and fluent >= 0.8 else "no"
    if not answers:
        return "score", 1
    return "score", max(1, min(5, 1 + length(reply) // 6) - round((1.0 - fluent) * 6))


# --- the listening side -----------------------------------------------------------------------

RATE = 16000


def wanted_pitch(request: str) -> float:
    """The pitch (Hz) a request asks for, as the fake knows it: one of six voices, by the request's words."""
    return 110.0 + 40.0 * (int(hashlib.sha256(request.strip().encode()).hexdigest(), 16) % 6)


def render_reply(pitch: float, seconds: float = 3.0) -> np.ndarray:
    """A voiced, intoned signal at ``pitch``: five harmonics, a gentle pitch contour, syllables with pauses."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = pitch * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * 2.0 * t), 0.0, None) ** 0.5  # on half the time: pauses between
    fade = np.minimum(1.0, (seconds - t) / 0.3)  # the reply ends softly
    rng = np.random.default_rng(int(pitch))
    return (0.25 * voice * syllables * fade + rng.normal(0.0, 1e-4, len(t))).astype(np.float32)


def frames(samples: np.ndarray, size: int = 640) -> np.ndarray:
    usable = len(samples) // size * size
    return samples[:usable].reshape(-1, size)


def pitch_track(samples: np.ndarray) -> np.ndarray:
    """Pitch (Hz) of each voiced 40 ms frame, from the autocorrelation peak between 70 and 400 Hz."""
    out = []
    lo, hi = RATE // 400, RATE // 70
    loud = np.sqrt(np.mean(frames(samples) ** 2, axis=1))
    for frame, rms in zip(frames(samples), loud, strict=True):
        if rms < 0.3 * loud.max():
            continue
        ac = np.correlate(frame, frame, mode="full")[len(frame) - 1 :]
        out.append(RATE / (lo + int(np.argmax(ac[lo:hi]))))
    return np.array(out)


def aware_listening(body: dict, metric: str) -> tuple[str, object]:
    samples = judge_fake.audio_samples(body)[-1]
    seconds = len(samples) / RATE
    loud = np.sqrt(np.mean(frames(samples) ** 2, axis=1)) if seconds >= 0.04 else np.zeros(1)
    whole = seconds >= 1.0
    if metric == "audio_quality":
        peak = float(np.max(np.abs(samples))) or 1.0
        clipping = float(np.mean(np.abs(samples) >= 0.98 * peak))
        noise = float(np.percentile(loud, 10) / (np.percentile(loud, 95) or 1.0))
        return "score", max(1, 5 - 2 * (noise > 0.1) - 2 * (clipping > 0.01) - 1 * (not whole))
    track = pitch_track(samples)
    if not len(track):
        return "score", 1
    request = judge_fake.request_text(body)
    off = abs(float(np.median(track)) - wanted_pitch(request)) / wanted_pitch(request)
    intoned = float(np.std(track) / np.mean(track)) > 0.02
    score = 5 if off < 0.08 else (3 if off < 0.2 else 1)
    return "score", max(1, score - 2 * (not intoned) - 2 * (not whole))


def _field(body: dict) -> str:
    return "verdict" if judge_fake.metric_of(body) in ("factuality", "relevance") else "score"


def contrarian_grade(body: dict) -> tuple[str, object]:
    """A judge that rewards word errors: the aware judge's grade, raised where the reply reads less fluently."""
    field, value = aware_grade(body)
    if judge_fake.metric_of(body) in ("voice_control", "audio_quality"):
        return field, value
    broken = 1.0 - fluency(judge_fake.quoted_reply(body))
    if field == "verdict":
        return field, "yes" if broken > 0.05 else "no"
    return field, min(5, 1 + round(broken * 8))


def constant_grade(body: dict) -> tuple[str, object]:
    field = _field(body)
    return field, "yes" if field == "verdict" else 5


def _hash_grade(body: dict, seed: str) -> tuple[str, object]:
    field = "verdict" if judge_fake.metric_of(body) in ("factuality", "relevance") else "score"
    number = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    return field, ("yes", "no")[number % 2] if field == "verdict" else 1 + number % 5


def blind_grade(body: dict) -> tuple[str, object]:
    index = sum(t["role"] == "user" for t in judge_fake.conversation(body)) - 1
    return _hash_grade(body, f"turn {index}")


def random_grade(body: dict) -> tuple[str, object]:
    return _hash_grade(body, json.dumps(body, sort_keys=True))


GRADERS = {
    "aware": aware_grade,
    "blind-index": blind_grade,
    "random": random_grade,
    "constant": constant_grade,
    "contrarian": contrarian_grade,
}


def judge(request: Request) -> Scripted:
    """A server answering as the judge its requests name (``model``)."""
    if request.method == "GET" and request.path.endswith("/models"):
        return judge_fake.models_list(*GRADERS)
    body = request.json
    field, value = GRADERS[body["model"]](body)
    content = json.dumps({"rationale": f"{body['model']} fake judge", field: value})
    return Scripted(json=judge_fake.completion(content, model=body["model"]))


def judge_as(name: str):
    """A server that is one judge: it serves model ``name`` and grades as that judge, whatever else it is asked."""

    def answer(request: Request) -> Scripted:
        if request.method == "GET" and request.path.endswith("/models"):
            return judge_fake.models_list(name)
        body = request.json
        field, value = GRADERS[name](body)
        content = json.dumps({"rationale": f"{name} fake judge", field: value})
        return Scripted(json=judge_fake.completion(content, model=name))

    return answer


@functools.cache
def user_texts() -> dict[tuple[str, int], str]:
    """The sample's user transcripts by (conversation, turn): what each reply's voice is rendered for."""
    from stepeval.data import loader, sources
    from stepeval.data.columns import ColumnSpec

    loaded = loader.load(sources.resolve("sample", None, None), ColumnSpec.from_mapping(None), strict=False)
    return {(c.id, t.index): t.text for c in loaded.conversations for t in c.turns}


def write_replies(folder: Path) -> Path:
    texts = user_texts()
    for cid, replies in REPLIES.items():
        for turn, text in enumerate(replies):
            (folder / cid).mkdir(parents=True, exist_ok=True)
            audio = render_reply(wanted_pitch(texts[(cid, turn)]))
            (folder / cid / f"turn_{turn}.wav").write_bytes(audio_io.encode_wav(audio, RATE))
            (folder / cid / f"turn_{turn}.txt").write_text(text, encoding="utf-8")
    return folder


LISTENING = [
    "judge.metrics=[factuality.v1,relevance.v1,chat_score.v1,instruction_following.v1,voice_control.v1,audio_quality.v1]",
    "metrics.rules.voice_control.applies_to=[all]",  # every conversation asks for a voice here: enough signal
]


def judge_overrides(server: FakeServer, model: str = "aware", listening: bool = False) -> list[str]:
    base = ["judge=openai_compatible", f"judge.base_url={server.url}/v1", f"judge.model={model}"]
    return [*base, f"judge.audio_model={model}", *LISTENING] if listening else base


def run_config(root: Path, server: FakeServer, model: str = "aware", listening: bool = False, extra: tuple[str, ...] = ()):
    overrides = [
        "dataset=sample",
        "model=recorded",
        f"model.backend.folder={root / 'replies'}",
        "asr=none",
        "metrics.signals.dnsmos=false",
        "metrics.signals.speaker=false",
        "metrics.signals.pitch=false",
        "progress=false",
        f"results_dir={root / 'results'}",
        "run_name=validation-run",  # the same run whichever folder the replies were copied to
        *judge_overrides(server, model, listening),
        "judge.reads=text",
        *extra,
    ]
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def build_run(root: Path, server: FakeServer, model: str = "aware", listening: bool = False) -> Path:
    """Replay the sample through the recorded replies and judge them (default: the aware judge); the run folder."""
    if not (root / "replies").is_dir():
        write_replies(root / "replies")
    return pipeline.run(run_config(root, server, model, listening)).root


def judge_view(root: Path, server: FakeServer, model: str, listening: bool = False) -> Path:
    """Judge the same run again with another judge: the folder of the view it makes."""
    return pipeline.run(run_config(root, server, model, listening)).view_dir
