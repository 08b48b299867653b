"""A judge's identity: what makes two judges give different verdicts on the same items.

One identity names a judge everywhere a judged number appears (view names, the manifest's views,
leaderboard rows, validations): the model(s) and the endpoint (without credentials), the settings that
change verdicts (temperature, seed, samples, aggregation, structured output, max tokens), each rubric's
sha256, what the text judge reads and what the listening judge hears, and the judge-input format.
Not part of it: credentials (URL userinfo, query keys, API keys) and how fast it is asked (concurrency,
rate limits, timeouts), which change no verdict.

It is computed from the manifest's (or a view's) ``judge`` section, so runs written before it existed
get one too.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stepeval.store import fingerprint

# settings that change verdicts (stages/judge.describe writes them); anything else there is not identity
VERDICT_SETTINGS = ("temperature", "seed", "samples", "aggregation", "structured_output", "max_tokens")
NO_JUDGE = "none"


def bare_url(url: str | None) -> str | None:
    """``url`` without userinfo, query or fragment: where the judge is, never how to get in."""
    if not url:
        return url
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def of(judge: dict[str, Any] | None) -> dict[str, Any] | None:
    """The identity of the judge a manifest/view ``judge`` section describes; None when no judge ran."""
    judge = judge or {}
    rubrics = judge.get("rubrics") or {}
    if not rubrics:
        return None
    endpoints = judge.get("endpoints") or {}
    settings = judge.get("settings") or {}
    modalities = sorted(endpoints)
    return {
        "models": {m: (endpoints[m] or {}).get("model") for m in modalities},
        "endpoints": {m: bare_url((endpoints[m] or {}).get("base_url")) for m in modalities},
        "settings": {k: settings.get(k) for k in VERDICT_SETTINGS if k in settings},
        "rubrics": {metric: (r or {}).get("sha256") for metric, r in sorted(rubrics.items())},
        "reads": judge.get("reads") if "text" in endpoints else None,
        "audio_user": judge.get("audio_user") if "audio" in endpoints else None,
        "input_format": judge.get("input_format"),
    }


def slug_of_models(models: list[str]) -> str:
    """A readable, file-system-safe name of the judge model(s): 'Qwen/Qwen2.5-7B-Instruct' -> 'qwen2.5-7b-instruct'."""
    parts = []
    for model in dict.fromkeys(m for m in models if m):
        tail = str(model).rstrip("/").rsplit("/", 1)[-1]
        cleaned = re.sub(r"[^a-z0-9.]+", "-", tail.lower()).strip("-.")
        parts.append(cleaned[:40] or "model")
    return "_".join(parts) or NO_JUDGE  # text judge, then listening judge; "_" keeps view names file-system-safe


def slug(identity: dict[str, Any] | None) -> str:
    """The judge's readable name in view names and tables ('none' when no judge ran)."""
    if not identity:
        return NO_JUDGE
    found = identity.get("models") or {}
    models = [found[m] for m in sorted(found, key=lambda m: m != "text") if found[m]]  # the text judge first
    return slug_of_models(models) if models else "unknown"


def key(identity: dict[str, Any] | None) -> str:
    """slug + a hash of the whole identity: names one judge exactly (a validation's folder, a table's judge)."""
    if not identity:
        return NO_JUDGE
    return f"{slug(identity)}-{fingerprint(identity)[:8]}"


def differences(validated: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, readably ('rubric chat_score sha256 1a2b3c4d5e6f -> ...')."""
    out: list[str] = []
    for field in sorted(set(validated) | set(current)):
        a, b = validated.get(field), current.get(field)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    label = f"rubric {sub} sha256" if field == "rubrics" else f"{field}.{sub}"
                    out.append(f"{label} {_short(a.get(sub))} -> {_short(b.get(sub))}")
        else:
            out.append(f"{field} {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value[:12]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
