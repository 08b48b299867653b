"""``stepeval compare --baseline <run> --candidate <run>``: a regression gate for CI.

For each gated metric the candidate is compared with the baseline on the turns both runs
scored (paired cluster bootstrap for the interval, sign-flip test over conversations for p).
The gate fails (exit 1) when a metric moves in its bad direction by more than its threshold
AND that move is significant (p < alpha), or when the candidate lost a metric the baseline had.
Otherwise it passes (exit 0). Exit 2: the command could not run (bad folders, unknown metric) or
compared nothing (no gated metric scored in both runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stepeval.reporting import latency
from stepeval.reporting.mismatch import Mismatch, affected, mismatches
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, PairedResult, paired_compare
from stepeval.reporting.tables import Run, direction, direction_word, escape_markdown, fmt, load_run

DEFAULT_ALPHA = 0.05
# Largest tolerated move in the bad direction, in the metric's own units (absolute difference of means).
# Gated by default when the metric is in either run; `--metric name:threshold` overrides or adds.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "speech_detected": 0.05,
    "silence_share": 0.05,
    "language_match": 0.05,
    "text_speech_error": 0.05,
    "flag_empty": 0.05,
    "flag_silent": 0.05,
    "flag_clipped": 0.05,
    "flag_truncated": 0.05,
    "speaker_consistency": 0.05,
    "dnsmos_ovrl": 0.1,
    "utmos": 0.1,
    "factuality": 0.05,
    "relevance": 0.05,
    "chat_score": 0.2,
    "instruction_following": 0.2,
    "audio_quality": 0.2,
}
DIRECTION_WORDS = {"higher": True, "lower": False, "either": None}
# latency (docs/latency.md), read from the replay records: seconds (rtf: a ratio), lower is better; gated only
# between runs measured under the same protocol (streaming, concurrency per endpoint, mode, hardware, clock)
LATENCY_THRESHOLDS: dict[str, float] = {
    "latency.first_audio_s": 0.1,
    "latency.first_speech_s": 0.1,
    "latency.total_s": 0.25,
    "latency.rtf": 0.05,
}


@dataclass
class Gate:
    metric: str
    threshold: float
    higher_is_better: bool | None


@dataclass
class Outcome:
    gate: Gate
    result: PairedResult
    status: str  # "pass" | "fail" | "lost" | "skipped"
    reason: str
    baseline_scored: int
    candidate_scored: int

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "lost")


def parse_gate(text: str, run: Run) -> Gate:
    """'name:threshold' or 'name:threshold:higher|lower|either'."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ValueError(f"--metric {text!r}: expected name:threshold or name:threshold:higher|lower|either")
    try:
        threshold = float(parts[1])
    except ValueError:
        raise ValueError(f"--metric {text!r}: threshold {parts[1]!r} is not a number") from None
    if threshold < 0:
        raise ValueError(f"--metric {text!r}: threshold must be >= 0")
    if len(parts) == 3:
        if parts[2] not in DIRECTION_WORDS:
            raise ValueError(f"--metric {text!r}: direction must be one of {', '.join(DIRECTION_WORDS)}")
        return Gate(parts[0], threshold, DIRECTION_WORDS[parts[2]])
    if parts[0].startswith(latency.PREFIX):
        return Gate(parts[0], threshold, False)
    return Gate(parts[0], threshold, direction(parts[0], run))


def gates_for(baseline: Run, candidate: Run, overrides: list[str], only: bool = False) -> list[Gate]:
    """Default gates for the metrics present in either run, then the --metric ones (which win)."""
    present = set(baseline.metrics()) | set(candidate.metrics())
    gates: dict[str, Gate] = {}
    if not only:
        for metric, threshold in DEFAULT_THRESHOLDS.items():
            if metric in present:
                gates[metric] = Gate(metric, threshold, direction(metric, baseline))
        for metric, threshold in LATENCY_THRESHOLDS.items():
            if metric in present:
                gates[metric] = Gate(metric, threshold, False)
    for text in overrides:
        gate = parse_gate(text, baseline)
        if gate.metric not in present:
            raise ValueError(f"--metric {gate.metric!r}: neither run has this metric (they have: {', '.join(sorted(present))})")
        gates[gate.metric] = gate
    return list(gates.values())


def _scored(run: Run, metric: str) -> int:
    return int(run.scores.loc[run.scores["metric"] == metric, "value"].notna().sum())


def add_latency(run: Run) -> set[str]:
    """Append the run's per-turn timings to its scores as ``latency.<timing>`` (turns that have any); returns the
    protocols they were measured under."""
    frame = latency.latency_frame(run.root)
    if frame.empty or frame["value"].notna().sum() == 0:
        return set()
    run.scores = pd.concat([run.scores, latency.as_scores(frame)], ignore_index=True)
    return set(frame["protocol"])


def _protocol_note(baseline: set[str], candidate: set[str]) -> str | None:
    if baseline and candidate and baseline != candidate:
        return f"latency measured under different protocols: baseline {sorted(baseline)} vs candidate {sorted(candidate)}"
    return None


def judge(
    gate: Gate, baseline: Run, candidate: Run, alpha: float, seed: int, resamples: int, protocols: str | None = None
) -> Outcome:
    result = paired_compare(baseline.scores, candidate.scores, gate.metric, resamples=resamples, seed=seed)
    base_n, cand_n = _scored(baseline, gate.metric), _scored(candidate, gate.metric)
    args = (gate, result)
    if protocols and gate.metric.startswith(latency.PREFIX):  # not comparable, so neither a pass nor a fail
        return Outcome(*args, "skipped", protocols, base_n, cand_n)
    if result.difference is None:
        if base_n and not cand_n:
            return Outcome(*args, "lost", f"candidate has no scored turn (baseline: {base_n})", base_n, cand_n)
        return Outcome(*args, "skipped", "no turn scored in both runs", base_n, cand_n)
    diff = result.difference
    bad = {True: -diff, False: diff, None: abs(diff)}[gate.higher_is_better]
    significant = result.p_value is not None and result.p_value < alpha
    if bad > gate.threshold and significant:
        return Outcome(
            *args, "fail", f"worse by {bad:.3g} > {gate.threshold:g} and p = {result.p_value:.3g} < {alpha:g}", base_n, cand_n
        )
    if bad > gate.threshold:
        reason = f"worse by {bad:.3g} > {gate.threshold:g} but not significant (p = {result.p_value:.3g})"
    elif bad > 0:
        reason = f"worse by {bad:.3g}, within threshold {gate.threshold:g}"
    else:
        reason = "not worse"
    return Outcome(*args, "pass", reason, base_n, cand_n)


def _interval(result: PairedResult) -> str:
    if result.difference is None:
        return "n/a"
    if result.low is None:
        return f"{result.difference:+.3f} [n/a]"
    return f"{result.difference:+.3f} [{result.low:+.3f}, {result.high:+.3f}]"


def _p(result: PairedResult) -> str:
    return "n/a" if result.p_value is None else f"{result.p_value:.3g}"


def summary_markdown(
    baseline: Run,
    candidate: Run,
    outcomes: list[Outcome],
    alpha: float,
    seed: int,
    resamples: int,
    found: list[Mismatch] | None = None,
) -> str:
    found = found or []
    failed = [o for o in outcomes if o.failed]
    verdict = "FAIL" if failed else "PASS"
    lines = [
        f"## stepeval compare: {verdict}",
        "",
        f"baseline `{escape_markdown(baseline.label)}` ({escape_markdown(baseline.model)}) vs "
        f"candidate `{escape_markdown(candidate.label)}` ({escape_markdown(candidate.model)}); "
        f"difference = candidate - baseline on turns scored in both; 95% paired cluster bootstrap over conversations "
        f"({resamples} resamples, seed {seed}); p from a sign-flip test over conversations; alpha {alpha:g}.",
        "",
        "| metric | direction | threshold | baseline | candidate | difference [95% CI] | p | conversations (turns) "
        "| excluded turns | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        r = o.result
        mark = {"fail": "**FAIL**", "lost": "**FAIL (lost)**", "pass": "pass", "skipped": "skipped"}[o.status]
        differs = affected(o.gate.metric, found)
        if differs:
            mark += f" (MISMATCH: {', '.join(differs)} differ)"
        lines.append(
            f"| {escape_markdown(o.gate.metric)} | {direction_word(o.gate.higher_is_better)} | {o.gate.threshold:g} "
            f"| {fmt(r.baseline_mean)} | {fmt(r.candidate_mean)} | {_interval(r)} | {_p(r)} | {r.conversations} ({r.turns}) "
            f"| {r.excluded_turns} | {mark}: {o.reason} |"
        )
    if not outcomes:
        lines.append("| (no gated metric in these runs) | | | | | | | | | |")
    if failed:
        lines += ["", "**Failing metrics:**", ""]
        for o in failed:
            r = o.result
            if o.status == "lost":
                lines.append(f"- `{o.gate.metric}`: {o.reason}")
            else:
                lines.append(
                    f"- `{o.gate.metric}`: difference {r.difference:+.4f}, 95% CI {_interval(r).split(' ', 1)[1]}, "
                    f"p = {_p(r)} ({direction_word(o.gate.higher_is_better)}, threshold {o.gate.threshold:g})"
                )
    if found:
        lines += ["", "**Scored differently (--allow-mismatch):**", ""]
        lines += [f"- {m.aspect}: {escape_markdown(m.detail)}" for m in found]
    for run, role in ((baseline, "baseline"), (candidate, "candidate")):
        if run.subset:
            lines += ["", f"Note: the {role} is a SUBSET view ({run.subset})."]
    base_files = baseline.manifest.get("dataset", {}).get("files_sha256")
    if base_files != candidate.manifest.get("dataset", {}).get("files_sha256"):
        lines += ["", "Note: the runs are on different dataset files (files_sha256 differ)."]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepeval compare", description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True, help="the stored baseline run folder")
    p.add_argument("--candidate", type=Path, required=True, help="the new run folder")
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME:THRESHOLD[:higher|lower|either]",
        help="gate this metric with this threshold (repeatable; overrides the defaults: "
        + ", ".join(f"{k}:{v:g}" for k, v in {**DEFAULT_THRESHOLDS, **LATENCY_THRESHOLDS}.items())
        + ")",
    )
    p.add_argument("--only", action="store_true", help="gate only the --metric ones, not the defaults")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default 0.05)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    p.add_argument("--summary-out", type=Path, help="also write the Markdown summary to this file")
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="compare although the runs' judge, rubrics, ASR, signals or metrics config differ (affected rows are marked)",
    )
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        baseline, candidate = load_run(args.baseline), load_run(args.candidate)
        protocols = _protocol_note(add_latency(baseline), add_latency(candidate))
        gates = gates_for(baseline, candidate, args.metric, only=args.only)
        if not 0 < args.alpha < 1:
            raise ValueError(f"--alpha {args.alpha}: must be between 0 and 1")
    except (FileNotFoundError, ValueError) as err:
        print(f"stepeval compare: error: {err}", file=sys.stderr)
        return 2
    found = mismatches(baseline, candidate)
    if found and not args.allow_mismatch:
        print("stepeval compare: error: the runs were scored differently, so their numbers are not comparable:", file=sys.stderr)
        for m in found:
            print(f"  - {m.aspect}: {m.detail}", file=sys.stderr)
        print("  (pass --allow-mismatch to compare anyway; the affected rows are then marked)", file=sys.stderr)
        return 2
    outcomes = [judge(g, baseline, candidate, args.alpha, args.seed, args.resamples, protocols) for g in gates]
    text = summary_markdown(baseline, candidate, outcomes, args.alpha, args.seed, args.resamples, found)
    print(text)
    if args.summary_out:
        args.summary_out.parent.mkdir(parents=True, exist_ok=True)
        args.summary_out.write_text(text, encoding="utf-8")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if any(o.failed for o in outcomes):
        return 1
    if not any(o.status == "pass" for o in outcomes):  # nothing was compared: a gate that checks nothing must not pass
        print("stepeval compare: error: no gated metric is scored in both runs; nothing was compared", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
