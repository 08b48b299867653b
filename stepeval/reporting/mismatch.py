"""What differs between two views besides the replies, and which metrics each difference affects:
the judge (model, endpoint, settings, each rubric's sha256), the ASR, the objective signals, the
metrics config. ``compare`` refuses such a pair unless told otherwise; ``leaderboard`` says so."""

from __future__ import annotations

import json
from dataclasses import dataclass

from stepeval.reporting.tables import Run

# metrics that read the reply's ASR transcript: a different ASR changes them
ASR_METRICS = frozenset({"speech_detected", "language_match", "text_speech_error", "speech_rate_cps", "speech_rate_wps"})


@dataclass
class Mismatch:
    """One way the two runs' numbers were produced differently, and the metrics it affects."""

    aspect: str
    detail: str
    metrics: frozenset[str] | None  # None: every metric


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _difference(a: object, b: object, prefix: str = "") -> list[str]:
    """The differing leaves of two values, as 'path: a vs b' (whole values when they are not both mappings)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                out += _difference(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [f"{prefix.rstrip('.') or 'value'}: {_short(a)} vs {_short(b)}"]


def _detail(a: object, b: object) -> str:
    return "; ".join(_difference(a, b)[:6])


def mismatches(baseline: Run, candidate: Run) -> list[Mismatch]:
    """What differs between the two views besides the replies: judge model/endpoint/settings, each
    rubric's sha256, the ASR, the objective signals' identity, the metrics config."""
    base, cand = baseline.provenance(), candidate.provenance()
    out: list[Mismatch] = []
    bj, cj = base.get("judge") or {}, cand.get("judge") or {}
    b_rubrics, c_rubrics = bj.get("rubrics") or {}, cj.get("rubrics") or {}
    judged = frozenset(b_rubrics) | frozenset(c_rubrics)
    for metric in sorted(judged & frozenset(b_rubrics) & frozenset(c_rubrics)):
        b_sha, c_sha = b_rubrics[metric].get("sha256"), c_rubrics[metric].get("sha256")
        if b_sha != c_sha:
            out.append(Mismatch(f"rubric {metric}", f"sha256 {str(b_sha)[:12]} vs {str(c_sha)[:12]}", frozenset({metric})))
    for key in ("endpoints", "settings", "reads", "audio_user", "input_format"):
        if b_rubrics and c_rubrics and bj.get(key) != cj.get(key):
            out.append(Mismatch(f"judge {key}", _detail(bj.get(key), cj.get(key)), judged))
    if base.get("asr") != cand.get("asr"):
        out.append(Mismatch("ASR", _detail(base.get("asr"), cand.get("asr")), ASR_METRICS | judged))
    if base.get("signals") is not None and cand.get("signals") is not None and base["signals"] != cand["signals"]:
        out.append(Mismatch("objective signals", _detail(base["signals"], cand["signals"]), None))
    if base.get("metrics") != cand.get("metrics"):
        out.append(Mismatch("metrics config", _detail(base.get("metrics"), cand.get("metrics")), None))
    return out


def affected(metric: str, found: list[Mismatch]) -> list[str]:
    return [m.aspect for m in found if m.metrics is None or metric in m.metrics]
