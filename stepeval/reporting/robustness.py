"""``stepeval robustness <clean view> <other views...>``: what each input condition costs a model.

Views are grouped by model (and dataset, history, seed); each group needs its ``input=clean`` view, the
baseline. For every other condition and every metric both views scored: the means on the turns scored in
both, the **preserve rate** (condition mean / clean mean, VocalBench's ratio) and the **difference**
(condition - clean) with a 95% paired cluster-bootstrap interval over conversations and a sign-flip p
(``stats.paired_compare``, as ``stepeval compare``). For ``input=text`` the difference is the **speech
tax** read the other way round: speech tax = text score - audio score, so a positive tax on a
higher-is-better metric is what the model loses by hearing the question instead of reading it.
Objective signals (speech detected, language match, flags) and judge metrics count alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from stepeval.reporting.mismatch import Mismatch, affected, mismatches
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, PairedResult, paired_compare
from stepeval.reporting.tables import Run, direction, direction_word, escape_markdown, expand_run_dirs, fmt, load_run

CLEAN = {"name": "clean", "kind": "clean", "params": {}}


def condition_of(run: Run) -> dict:
    """The view's input condition (a run made before input conditions was clean)."""
    return dict(run.manifest.get("input") or CLEAN)


def group_key(run: Run) -> tuple:
    """Views that may be compared: the same model (identity), dataset files, history policy and seed."""
    model = json.dumps(run.manifest.get("model") or run.model, sort_keys=True, default=str)
    files = json.dumps((run.manifest.get("dataset") or {}).get("files_sha256"), sort_keys=True)
    return (run.model, model, files, run.manifest.get("history"), run.manifest.get("seed"))


@dataclass
class Row:
    """One condition x metric of one model."""

    model: str
    condition: str
    kind: str
    metric: str
    higher_is_better: bool | None
    result: PairedResult
    mismatched: list[str]

    @property
    def preserve(self) -> float | None:
        """Condition mean / clean mean on the paired turns (None: nothing paired, or a clean mean of 0)."""
        r = self.result
        if r.baseline_mean is None or r.candidate_mean is None or r.baseline_mean == 0:
            return None
        return r.candidate_mean / r.baseline_mean

    @property
    def is_tax(self) -> bool:
        return self.kind == "text"

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "condition": self.condition,
            "kind": self.kind,
            "metric": self.metric,
            "direction": direction_word(self.higher_is_better),
            "clean_mean": self.result.baseline_mean,
            "condition_mean": self.result.candidate_mean,
            "preserve_rate": self.preserve,
            "speech_tax" if self.is_tax else "difference": self.result.difference,
            "low": self.result.low,
            "high": self.result.high,
            "p_value": self.result.p_value,
            "conversations": self.result.conversations,
            "turns": self.result.turns,
            "excluded_turns": self.result.excluded_turns,
            "scored_differently": self.mismatched,
        }


@dataclass
class Group:
    model: str
    clean: Run
    others: list[Run]
    rows: list[Row]
    found: dict[str, list[Mismatch]]  # condition -> how it was scored differently from the clean view


def _metrics(clean: Run, other: Run) -> list[str]:
    theirs = set(other.metrics())
    return [m for m in clean.metrics() if m in theirs]


def build(runs: list[Run], seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> list[Group]:
    """Every model's rows; a model without its clean view, or with two, is an error naming the views."""
    grouped: dict[tuple, list[Run]] = {}
    for run in runs:
        grouped.setdefault(group_key(run), []).append(run)
    groups = []
    for members in grouped.values():
        clean = [r for r in members if condition_of(r)["kind"] == "clean"]
        if len(clean) != 1:
            names = ", ".join(f"{r.label} (input={condition_of(r)['name']})" for r in members)
            what = "no clean view (input=clean)" if not clean else f"{len(clean)} clean views"
            raise ValueError(f"model {members[0].model}: {what} among {names}; give exactly one clean view per model")
        base = clean[0]
        others = sorted(
            (r for r in members if r is not base), key=lambda r: (condition_of(r)["kind"] == "text", condition_of(r)["name"])
        )
        rows, found = [], {}
        for other in others:
            cond = condition_of(other)
            found[cond["name"]] = mismatches(base, other)
            for metric in _metrics(base, other):
                result = paired_compare(base.scores, other.scores, metric, resamples=resamples, seed=seed)
                rows.append(
                    Row(
                        base.model,
                        cond["name"],
                        cond["kind"],
                        metric,
                        direction(metric, base),
                        result,
                        affected(metric, found[cond["name"]]),
                    )
                )
        groups.append(Group(base.model, base, others, rows, found))
    return groups


def _interval(result: PairedResult) -> str:
    if result.difference is None:
        return "n/a"
    if result.low is None:
        return f"{result.difference:+.3f} [n/a]"
    return f"{result.difference:+.3f} [{result.low:+.3f}, {result.high:+.3f}]"


def _p(result: PairedResult) -> str:
    return "n/a" if result.p_value is None else f"{result.p_value:.3g}"


def _preserve(row: Row) -> str:
    return "n/a" if row.preserve is None else f"{row.preserve:.3f}"


def markdown(groups: list[Group], seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> str:
    lines = [
        "## Robustness to the input",
        "",
        f"Per model, each input condition against the clean view on the turns scored in both: preserve rate = condition "
        f"mean / clean mean; difference = condition - clean with a 95% paired cluster-bootstrap interval over "
        f"conversations ({resamples} resamples, seed {seed}) and a sign-flip p. Speech tax = text score - audio score "
        f"(input=text against clean audio).",
    ]
    for g in groups:
        lines += ["", f"### {escape_markdown(g.model)}", "", f"clean view: `{escape_markdown(g.clean.label)}`"]
        degraded = [r for r in g.rows if not r.is_tax]
        taxed = [r for r in g.rows if r.is_tax]
        if degraded:
            lines += [
                "",
                "| condition | metric | direction | clean | condition | preserve rate | difference [95% CI] | p "
                "| conversations (turns) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in degraded:
                mark = f" (scored differently: {', '.join(r.mismatched)})" if r.mismatched else ""
                lines.append(
                    f"| {escape_markdown(r.condition)} | {escape_markdown(r.metric)}{mark} "
                    f"| {direction_word(r.higher_is_better)} "
                    f"| {fmt(r.result.baseline_mean)} | {fmt(r.result.candidate_mean)} | {_preserve(r)} | {_interval(r.result)} "
                    f"| {_p(r.result)} | {r.result.conversations} ({r.result.turns}) |"
                )
        if taxed:
            lines += [
                "",
                "Speech tax (text - audio):",
                "",
                "| metric | direction | audio | text | speech tax [95% CI] | p | conversations (turns) |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in taxed:
                mark = f" (scored differently: {', '.join(r.mismatched)})" if r.mismatched else ""
                lines.append(
                    f"| {escape_markdown(r.metric)}{mark} | {direction_word(r.higher_is_better)} | {fmt(r.result.baseline_mean)} "
                    f"| {fmt(r.result.candidate_mean)} | {_interval(r.result)} | {_p(r.result)} "
                    f"| {r.result.conversations} ({r.result.turns}) |"
                )
        if not g.rows:
            lines += ["", "(no other condition of this model, or no metric scored in both views)"]
        for name, found in g.found.items():
            for m in found:
                lines.append(
                    f"\nNote: input={escape_markdown(name)} was scored differently ({m.aspect}: {escape_markdown(m.detail)})."
                )
    return "\n".join(lines) + "\n"


def section(groups: list[Group]) -> dict:
    """What the HTML report's robustness section shows (plain values, formatted)."""
    out = []
    for g in groups:
        rows = [
            {
                "condition": r.condition,
                "metric": r.metric,
                "direction": direction_word(r.higher_is_better),
                "clean": fmt(r.result.baseline_mean),
                "value": fmt(r.result.candidate_mean),
                "preserve": _preserve(r),
                "difference": _interval(r.result),
                "p": _p(r.result),
                "counts": f"{r.result.conversations} ({r.result.turns})",
                "mismatched": ", ".join(r.mismatched),
            }
            for r in g.rows
            if not r.is_tax
        ]
        tax = [
            {
                "metric": r.metric,
                "direction": direction_word(r.higher_is_better),
                "audio": fmt(r.result.baseline_mean),
                "text": fmt(r.result.candidate_mean),
                "tax": _interval(r.result),
                "p": _p(r.result),
                "counts": f"{r.result.conversations} ({r.result.turns})",
            }
            for r in g.rows
            if r.is_tax
        ]
        out.append({"model": g.model, "clean": g.clean.label, "rows": rows, "tax": tax})
    return {"groups": out}


def run_dirs(paths: list[Path]) -> list[Path]:
    """Views as given; a sweep folder stands for the views its jobs noted, a folder of runs for its runs."""
    from stepeval.reporting.comparison import noted_runs

    found: list[Path] = []
    for path in map(Path, paths):
        noted = noted_runs(path) if path.is_dir() else []
        found.extend(noted if noted else expand_run_dirs([path]))
    return list(dict.fromkeys(found))


def load(paths: list[Path]) -> list[Run]:
    return [load_run(p) for p in run_dirs(paths)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepeval robustness", description=__doc__.splitlines()[0])
    p.add_argument("views", type=Path, nargs="+", help="the clean view and the other conditions' views (or a sweep folder)")
    p.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    p.add_argument("--json", type=Path, help="also write every row as JSON")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        groups = build(load(args.views), seed=args.seed, resamples=args.resamples)
    except (FileNotFoundError, ValueError) as err:
        print(f"stepeval robustness: error: {err}", file=sys.stderr)
        return 2
    if not any(g.others for g in groups):
        print("stepeval robustness: error: only clean views given; add the views of other input conditions", file=sys.stderr)
        return 2
    text = markdown(groups, args.seed, args.resamples)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        rows = [r.to_dict() for g in groups for r in g.rows]
        args.json.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
