"""People in the arena's loop: the pairs a person can rate (``<out>/pairs.json``), their A/B verdicts
(``<out>/ratings-ab.jsonl``, written by the A/B rating page) and judge-human agreement on the pairs both judged.

Agreement follows MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-judge", Table 2): the judge against each person,
set beside person against person where two raters overlap, on the same pairs; once with ties (x, y or tie as three
labels) and once without (the pairs where both picked a winner). Each figure is an agreement rate and Cohen's kappa
with a bootstrap interval over conversations (``validation.agreement``). Only ratings made under the pairs' rubric
(same sha256) and pairs the judge decided (not missing) count; the rest are counted as left out.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from stepeval.judging.rubric import Rubric
from stepeval.records import Key
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from stepeval.validation import agreement
from stepeval.validation.runner import read_lines

PAIRS = "pairs.json"
RATINGS = "ratings-ab.jsonl"
WINNERS = {"x": 1.0, "y": 0.0, "tie": 0.5}  # what system x earned, as the judge's debiased score
LABELS = [0.0, 0.5, 1.0]
PAIR_FIELDS = ("id", "conversation_id", "turn", "category", "x", "y", "user_turns", "x_text", "y_text", "judge_score_x")
RATING_FIELDS = ("rater", "pair", "winner", "rubric_sha256")


def pair_id(key: Key, x: str, y: str) -> str:
    """Stable over reruns: the turn and the two systems (in the plan's order)."""
    return hashlib.sha256(json.dumps([key[0], int(key[1]), x, y]).encode("utf-8")).hexdigest()[:16]


def pair_record(
    key: Key, x: str, y: str, category: str, user_turns: list[str | None], replies: tuple[Any, Any], score: float | None,
    missing: str | None, user_audio: Path | None, rubric: Rubric,
) -> dict:  # fmt: skip
    """One judged comparison as a person needs it: what the judge read and heard of both replies, and its verdict."""
    rx, ry = replies
    return {
        "id": pair_id(key, x, y),
        "conversation_id": key[0],
        "turn": int(key[1]),
        "category": category,
        "x": x,
        "y": y,
        "user_turns": user_turns,
        "user_audio": str(user_audio) if user_audio else None,
        "x_text": rx.text,
        "y_text": ry.text,
        "x_audio": str(rx.audio) if rx.audio else None,
        "y_audio": str(ry.audio) if ry.audio else None,
        "judge_score_x": score,
        "judge_missing": missing,
        "rubric": rubric.name,
        "rubric_sha256": rubric.sha256,
    }


def load_pairs(folder: Path) -> dict:
    """``<folder>/pairs.json`` as written by ``stepeval arena``; a clear error where there is none."""
    path = Path(folder) / PAIRS
    if not path.is_file():
        raise ValueError(f"{path}: no pairs to rate (run `stepeval arena ... --out {folder}` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise ValueError(f"{path}: no 'pairs' list")
    for number, pair in enumerate(data["pairs"]):
        lacking = [k for k in PAIR_FIELDS if not isinstance(pair, dict) or k not in pair]
        if lacking:
            raise ValueError(f"{path}: pairs[{number}] lacks {', '.join(lacking)}")
    return data


def latest(folder: Path) -> list[dict]:
    """Each rater's last rating of each pair, in file order."""
    path = Path(folder) / RATINGS
    last: dict = {}
    for number, record in enumerate(read_lines(path), start=1):
        lacking = [k for k in RATING_FIELDS if k not in record]
        if lacking or record["winner"] not in WINNERS:
            why = f"lacks {', '.join(lacking)}" if lacking else f"winner {record['winner']!r} is not x, y or tie"
            raise ValueError(f"{path}: rating {number} {why}")
        last[(record["rater"], record["pair"])] = record
    return list(last.values())


def _coefficients(units: list, a: list[float], b: list[float], seed: int, resamples: int) -> dict:
    head: dict[str, Any] = {"pairs": len(units), "conversations": len({c for c, _ in units})}
    if len(units) < 2:
        return {**head, "coefficients": [], "note": "fewer than two pairs judged by both"}
    code = {v: n for n, v in enumerate(LABELS)}  # class codes: scikit-learn takes 0.5 for a continuous value
    found = agreement.nominal(units, [code[v] for v in a], [code[v] for v in b], range(len(LABELS)), seed, resamples)
    return {**head, "coefficients": [c.to_dict() for c in found]}


def compare(kind: str, raters: list[str], votes: list[tuple[str, int, float, float]], seed: int, resamples: int) -> dict:
    """Agreement of two label columns; ``votes``: (conversation, unit number, a, b), ties as 0.5."""
    units = [(c, n) for c, n, _, _ in votes]
    entry = {"kind": kind, "raters": raters}
    entry["with_ties"] = _coefficients(units, [a for *_, a, _ in votes], [b for *_, b in votes], seed, resamples)
    decided = [v for v in votes if v[2] != 0.5 and v[3] != 0.5]
    entry["without_ties"] = _coefficients(
        [(c, n) for c, n, _, _ in decided], [a for *_, a, _ in decided], [b for *_, b in decided], seed, resamples
    )
    return entry


def agreement_section(folder: Path, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> dict | None:
    """Judge-human (each rater, and all raters pooled) and human-human (each two raters, and pooled) agreement on
    the pairs of ``<folder>/pairs.json``; None where nobody has rated yet."""
    ratings = latest(folder)
    if not ratings:
        return None
    data = load_pairs(folder)
    sha = data.get("rubric_sha256")
    pairs = {p["id"]: (n, p) for n, p in enumerate(data["pairs"])}
    mine = [r for r in ratings if r.get("rubric_sha256") == sha and r["pair"] in pairs]
    raters = sorted({r["rater"] for r in mine})
    human = {name: {r["pair"]: WINNERS[r["winner"]] for r in mine if r["rater"] == name} for name in raters}
    judge = {pid: p["judge_score_x"] for pid, (_, p) in pairs.items() if p.get("judge_score_x") is not None}

    def votes(a: dict, b: dict) -> list[tuple[str, int, float, float]]:
        return [(pairs[pid][1]["conversation_id"], pairs[pid][0], a[pid], b[pid]) for pid in sorted(a) if pid in b]

    entries, pooled_judge, pooled_human = [], [], []
    for name in raters:
        found = votes(judge, human[name])
        pooled_judge += found
        entries.append(compare("judge-human", ["judge", name], found, seed, resamples))
    for a, b in itertools.combinations(raters, 2):
        found = votes(human[a], human[b])
        pooled_human += found
        entries.append(compare("human-human", [a, b], found, seed, resamples))
    summary = {"judge-human": compare("judge-human", ["judge", "all raters"], pooled_judge, seed, resamples)}
    if len(raters) >= 2:
        summary["human-human"] = compare("human-human", ["all pairs of raters"], pooled_human, seed, resamples)
    return {
        "rubric": data.get("rubric"),
        "rubric_sha256": sha,
        "ratings": len(mine),
        "raters": raters,
        "left_out": {
            "other_rubric_or_pair": len(ratings) - len(mine),
            "judge_missing": sum(1 for r in mine if r["pair"] not in judge),
        },
        "summary": summary,
        "entries": entries,
    }


def _cell(block: dict, name: str) -> str:
    found = next((c for c in block.get("coefficients", []) if c["name"] == name), None)
    if found is None or found["value"] is None:
        return "n/a"
    ci = "" if found["low"] is None else f" [{found['low']:.2f}, {found['high']:.2f}]"
    return f"{found['value']:.2f}{ci}"


def markdown(section: dict) -> str:
    """The agreement table for arena.md (MT-Bench's layout: judge-human beside human-human, with and without ties)."""
    lines = [
        "",
        f"## Judge-human agreement ({section['ratings']} ratings by {len(section['raters'])} rater(s), "
        f"rubric {section['rubric']})",
        "",
        "| comparison | pairs | agreement [95% CI] | Cohen's kappa [95% CI] | pairs w/o ties | agreement w/o ties "
        "| kappa w/o ties |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in [*section["summary"].values(), *section["entries"]]:
        w, wo = entry["with_ties"], entry["without_ties"]
        lines.append(
            f"| {entry['kind']}: {' vs '.join(entry['raters'])} | {w['pairs']} | {_cell(w, 'percent_agreement')} | "
            f"{_cell(w, 'cohen_kappa')} | {wo['pairs']} | {_cell(wo, 'percent_agreement')} | {_cell(wo, 'cohen_kappa')} |"
        )
    return "\n".join(lines) + "\n"
