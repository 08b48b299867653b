"""``stepeval arena <view> <view> [...] [judge overrides]``: pairwise preference between systems, asked in both
orders, ranked by Bradley-Terry with intervals over conversations (docs/judging.md, "Arena").

    stepeval arena results/run-a/views/<v> results/run-b/views/<v> judge=openai_compatible \\
        judge.base_url=http://127.0.0.1:8000/v1 judge.model=qwen --controls truncated,copy --max-pairs 400

Writes ``<out>/arena.json``, ``<out>/arena.md`` (and prints the table) and ``<out>/arena.html`` (report extra);
verdicts are cached in ``<out>/records/arena-<rubric metric>.jsonl``; ``<out>/pairs.json`` holds the judged pairs for
people to rate (``stepeval rate --pairs <out>``), and their ratings add a judge-human agreement section. Exit status:
0, or 1 when a comparison could not be judged (missing) or a control failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stepeval import secrets
from stepeval.arena import html, human
from stepeval.arena import plan as plan_mod
from stepeval.arena.pairwise import Decision, PairwiseJudge, Question, audio_messages, decide, text_messages
from stepeval.arena.ranking import Outcome, Ranking, rank_systems
from stepeval.arena.systems import CONTROLS, System, UserTurn, derive, load_system, unique_names
from stepeval.judging import rubric as rubric_mod
from stepeval.judging.configured import judge_client
from stepeval.judging.llm_judge import Turn
from stepeval.store import write_json_atomic

DEFAULT_RUBRIC = "pairwise_chat.v1"
NO_TEXT = "(no transcript)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepeval arena", description=__doc__.split("\n\n")[0])
    p.add_argument("views", nargs="+", help="view folders (or run folders with one view), two or more")
    p.add_argument("--rubric", default=DEFAULT_RUBRIC, help="pairwise rubric (listening: pairwise_speech.v1)")
    p.add_argument("--rubrics-dir", default=None, help="folder of your own rubrics (default: the packaged ones)")
    p.add_argument("--controls", default="", help=f"derived controls of the first view, comma-separated: {', '.join(CONTROLS)}")
    p.add_argument("--max-pairs", type=int, default=None, help="budget: comparisons in all (each asked in both orders)")
    p.add_argument("--out", default="results/arena", help="folder for arena.json, arena.md and the verdict cache")
    p.add_argument("--seed", type=int, default=0, help="pair selection and bootstrap seed")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples over conversations")
    return p


def judge_config(overrides: list[str]) -> DictConfig:
    """The judge section of the composed config, with the user's ``judge=...`` / ``judge.key=value`` overrides."""
    from hydra import compose, initialize_config_dir

    from stepeval.config import conf_dir, register_schemas

    bad = [o for o in overrides if not (o.startswith("judge=") or o.startswith("judge."))]
    if bad:
        shown = secrets.scrub(bad[0])
        raise ValueError(f"stepeval arena takes judge overrides only (judge=NAME, judge.KEY=VALUE), not {shown!r}")
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    if cfg.judge.name == "none":
        raise ValueError("stepeval arena needs a judge: judge=openai_compatible judge.base_url=... judge.model=...")
    return cfg.judge


def context_for(users: dict, key: tuple[str, int]) -> list[Turn]:
    """The user's turns up to this one (the systems' earlier replies differ, so the judge sees the user's side)."""
    conversation, turn = key
    return [Turn("user", (users.get((conversation, t)) or UserTurn(None, None)).text or NO_TEXT) for t in range(turn + 1)]


def questions_for(
    comparison: plan_mod.Comparison, systems: dict[str, System], users: dict, rubric: rubric_mod.Rubric
) -> tuple[Question, Question] | str:
    """Both orders of one comparison, or why it cannot be asked (a reply with nothing to read or hear)."""
    x, y = systems[comparison.x].replies[comparison.key], systems[comparison.y].replies[comparison.key]
    context = context_for(users, comparison.key)
    if rubric.modality == "text":
        if x.text is None or y.text is None:
            return (x.missing if x.text is None else y.missing) or "reply has nothing to read"
        forward = text_messages(rubric, context, x.text, y.text)
        backward = text_messages(rubric, context, y.text, x.text)
    else:
        if x.audio is None or y.audio is None:
            return "reply has no audio for the listening judge"
        request = (users.get(comparison.key) or UserTurn(None, None)).audio
        forward = audio_messages(rubric, context, request, x.audio, y.audio)
        backward = audio_messages(rubric, context, request, y.audio, x.audio)
    key = comparison.key
    return Question(key, comparison.x, comparison.y, forward), Question(key, comparison.y, comparison.x, backward)


def control_verdict(ranking: Ranking, origin: str, control: str, kind: str) -> dict[str, Any]:
    """A control's expectation, checked on the win rate of the origin over its control with its interval."""
    i, j = ranking.systems.index(origin), ranking.systems.index(control)
    rate, low, high, games = ranking.win_rate[i, j], ranking.win_low[i, j], ranking.win_high[i, j], int(ranking.games[i, j])
    if games < 5 or not np.isfinite(low):
        result = "inconclusive"
    elif kind == "copy":  # an exact copy must come out even
        result = "pass" if low <= 0.5 <= high else "fail"
    else:  # a damaged copy must lose significantly
        result = "pass" if low > 0.5 else "fail"
    expect = "comes out even (0.5 inside the interval)" if kind == "copy" else "loses significantly (origin's win rate > 0.5)"
    return {
        "origin": origin,
        "control": control,
        "kind": kind,
        "expect": expect,
        "origin_win_rate": None if not np.isfinite(rate) else round(float(rate), 4),
        "low": None if not np.isfinite(low) else round(float(low), 4),
        "high": None if not np.isfinite(high) else round(float(high), 4),
        "comparisons": games,
        "result": result,
    }


def markdown(result: dict) -> str:
    ranking = result["overall"]
    lines = [
        f"# Arena: {result['rubric']} judged by {result['judge']['model']}",
        "",
        f"{ranking['comparisons']} comparisons over {ranking['conversations']} conversations, each asked in both orders; "
        f"ties (order-dependent verdicts included) count half. Position bias: {result['position_bias_rate']:.3f} "
        f"(order-dependent: {result['order_dependent_rate']:.3f}); missing: {result['missing']}.",
        "",
        "| rank | system | Bradley-Terry strength [95% CI] | P(rank) |",
        "|---|---|---|---|",
    ]
    for row in sorted(ranking["systems"], key=lambda r: r["rank"]):
        ci = "n/a" if row["low"] is None else f"[{row['low']:.3f}, {row['high']:.3f}]"
        prob = "n/a" if row["rank_probability"] is None else f"{row['rank_probability']:.2f}"
        lines.append(f"| {row['rank']} | {row['system']} | {row['strength']:.3f} {ci} | {prob} |")
    names = [r["system"] for r in ranking["systems"]]
    lines += ["", "Win rate of the row against the column [95% CI] (comparisons):", ""]
    lines += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in names:
        cells = []
        for b in names:
            cell = ranking["win_rate"].get(a, {}).get(b)
            if a == b or not cell or cell["rate"] is None:
                cells.append("")
            else:
                ci = "" if cell["low"] is None else f" [{cell['low']:.2f}, {cell['high']:.2f}]"
                cells.append(f"{cell['rate']:.2f}{ci} ({cell['comparisons']})")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    if result["controls"]:
        lines += ["", "| control | expected | origin's win rate [95% CI] | result |", "|---|---|---|---|"]
        for c in result["controls"]:
            rate = "n/a" if c["origin_win_rate"] is None else f"{c['origin_win_rate']:.2f}"
            ci = "" if c["low"] is None else f" [{c['low']:.2f}, {c['high']:.2f}]"
            lines.append(f"| {c['control']} | {c['expect']} | {rate}{ci} | {c['result']} |")
    return "\n".join(lines) + "\n"


def pair_record(
    comparison: plan_mod.Comparison, decision: Decision, systems: dict[str, System], users: dict, rubric: rubric_mod.Rubric
) -> dict:
    """A judged comparison as ``pairs.json`` keeps it for the A/B rating page (``arena.human``)."""
    key, x = comparison.key, systems[comparison.x]
    turns = [t.text if t.text != NO_TEXT else None for t in context_for(users, key)]
    replies = (x.replies[key], systems[comparison.y].replies[key])
    user_audio = (users.get(key) or UserTurn(None, None)).audio
    category = x.categories.get(key, "unknown")
    return human.pair_record(
        key, comparison.x, comparison.y, category, turns, replies, decision.score, decision.missing, user_audio, rubric
    )


async def _judge(judge: PairwiseJudge, asked: list[tuple[plan_mod.Comparison, Question, Question]]) -> list[Decision]:
    questions = [q for _, forward, backward in asked for q in (forward, backward)]
    await judge.client.preflight()
    try:
        answers = await judge.ask(questions)
    finally:
        await judge.client.aclose()
    return [decide(answers[2 * n], answers[2 * n + 1]) for n in range(len(asked))]


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    judge_cfg = judge_config(overrides)
    rubric = rubric_mod.load(rubric_mod.rubrics_dir(args.rubrics_dir), args.rubric)
    if rubric.scale != "pairwise":
        raise ValueError(f"--rubric {args.rubric}: scale {rubric.scale!r}; the arena needs a pairwise rubric")
    if len(args.views) < 2 and not args.controls:
        raise ValueError("stepeval arena compares two or more views (or one view with --controls)")
    loaded = [load_system(Path(v), str(judge_cfg.reads)) for v in args.views]
    systems = [s for s, _, _ in loaded]
    unique_names(systems)
    users: dict = {}
    for _, turns, _ in loaded:
        users.update(turns)
    out = Path(args.out)
    controls: dict[str, str] = {}
    for kind in [c.strip() for c in args.controls.split(",") if c.strip()]:
        derived = derive(systems[0], kind, out / "controls")
        systems.append(derived)
        controls[derived.name] = systems[0].name
    by_name = {s.name: s for s in systems}
    comparisons = plan_mod.plan({s.name: set(s.replies) for s in systems}, controls, args.max_pairs, args.seed)
    asked, missing_reasons = [], []
    for comparison in comparisons:
        built = questions_for(comparison, by_name, users, rubric)
        if isinstance(built, str):
            missing_reasons.append(built)
        else:
            asked.append((comparison, *built))
    client = judge_client(judge_cfg, rubric.modality)
    judge = PairwiseJudge(client, rubric, out, int(judge_cfg.concurrency))
    decisions = asyncio.run(_judge(judge, asked))
    outcomes: list[Outcome] = []
    categories: dict[str, list[Outcome]] = {}
    index = {s.name: k for k, s in enumerate(systems)}
    for (comparison, _, _), decision in zip(asked, decisions, strict=True):
        if decision.score is None:
            missing_reasons.append(decision.missing or "no verdict")
            continue
        outcome = Outcome(comparison.key[0], index[comparison.x], index[comparison.y], decision.score)
        outcomes.append(outcome)
        category = by_name[comparison.x].categories.get(comparison.key, "unknown")
        categories.setdefault(category, []).append(outcome)
    names = [s.name for s in systems]
    overall = rank_systems(names, outcomes, args.resamples, args.seed)
    decided = [d for d in decisions if d.score is not None]
    result = {
        "rubric": rubric.name,
        "rubric_sha256": rubric.sha256,
        "judge": judge.identity,
        "systems": [{"system": s.name, "source": s.source, "control_of": s.control_of} for s in systems],
        "comparisons_planned": len(comparisons),
        "requests": {"asked": judge.tally.asked, "reused": judge.tally.reused, "failed": judge.tally.failed},
        "missing": len(missing_reasons),
        "missing_reasons": sorted(set(missing_reasons)),
        "position_bias_rate": (sum(d.position_biased for d in decided) / len(decided)) if decided else 0.0,
        "order_dependent_rate": (sum(d.order_dependent for d in decided) / len(decided)) if decided else 0.0,
        "overall": overall.to_json(),
        "by_category": {c: rank_systems(names, o, args.resamples, args.seed).to_json() for c, o in sorted(categories.items())},
        "controls": [control_verdict(overall, o, c, by_name[c].control or "") for c, o in controls.items()],
    }
    pairs = [pair_record(c, d, by_name, users, rubric) for (c, _, _), d in zip(asked, decisions, strict=True)]
    pairs_file = {"rubric": rubric.name, "rubric_sha256": rubric.sha256, "judge": judge.identity, "pairs": pairs}
    write_json_atomic(out / human.PAIRS, secrets.redact(pairs_file))  # what a person needs to rate the same pairs
    try:
        people = human.agreement_section(out, args.seed, args.resamples)
    except ValueError as err:  # bad ratings must not cost the arena's results
        people = None
        print(f"stepeval arena: no judge-human agreement: {err}", file=sys.stderr)
    if people is not None:
        result["human_agreement"] = people
    result = secrets.redact(result)  # the judge identity names its endpoint: no credentials in files
    write_json_atomic(out / "arena.json", result)
    table = markdown(result) + (human.markdown(people) if people is not None else "")
    (out / "arena.md").write_text(table, encoding="utf-8")
    html.write(out, result)
    print(table)
    problems = []
    if result["missing"]:
        problems.append(f"{result['missing']} comparison(s) could not be judged: {'; '.join(result['missing_reasons'][:3])}")
    problems += [f"control {c['control']} failed: expected it {c['expect']}" for c in result["controls"] if c["result"] == "fail"]
    for line in problems:
        print(f"stepeval arena: {line}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    secrets.install(argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    rest = [a for a in argv if a not in overrides]
    args = parser().parse_args(rest)
    try:
        return run(args, overrides)
    except ValueError as err:
        print(f"stepeval arena: {secrets.scrub(str(err))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
