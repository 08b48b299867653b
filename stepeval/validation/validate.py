"""``stepeval validate-judge <run>``: does the judge judge the content? Controls and agreement, from a finished run.

    stepeval validate-judge results/<run>                                  # the run's own judge config
    stepeval validate-judge results/<run> judge.model=other-model          # the same judge group, overridden
    stepeval validate-judge results/<run> judge=my_judge.yaml --second judge=gpt4o   # inter-judge agreement

Reads the run's judge records (what the judge read), derives control items, judges them (cached in
``records/validation-<metric>.jsonl``), and writes ``validation.json``, which ``stepeval report`` and
``stepeval leaderboard`` show. No reference answers are needed. ``--second`` and its overrides come last.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stepeval.config import SECRET_KEY, JudgeSchema, conf_dir, register_schemas
from stepeval.judging import rubric as rubric_mod
from stepeval.judging.llm_judge import JudgeEndpointError
from stepeval.judging.rubric import Rubric
from stepeval.reporting import validity
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from stepeval.store import load_manifest, write_json_atomic
from stepeval.validation import agreement, controls, items, ratings
from stepeval.validation.runner import CachedJudge, Outcome, Task, build_client, quiet_http_logs

REPEAT_SEED_OFFSET = 1000  # the self-consistency repeat asks with seed + this (beyond any samples' seeds)


def judge_config(manifest: dict, overrides: list[str]) -> DictConfig:
    """The judge to validate: ``judge=<name | file.yaml>`` (default: the run's judge, with the run's
    settings except secrets, which come from the environment again) then ``judge.<key>=<value>``."""
    group, dots = None, []
    for override in overrides:
        if override.startswith("judge="):
            group = override.split("=", 1)[1]
        elif override.startswith("judge."):
            dots.append(override[len("judge.") :])
        else:
            raise ValueError(f"{override!r}: expected judge=<name or file.yaml> or judge.<key>=<value>")
    run_judge = dict((manifest.get("config") or {}).get("judge") or {})
    name = group or run_judge.get("name")
    if not name:
        raise ValueError("the run's manifest.json has no config.judge: name one with judge=<name or file.yaml>")
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"judge={name}: no such file")
        loaded = OmegaConf.load(path)
        loaded.pop("defaults", None)
        base = OmegaConf.merge(OmegaConf.structured(JudgeSchema), loaded)
    else:
        from hydra import compose, initialize_config_dir

        register_schemas()
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            base = compose("config", overrides=[f"judge={name}"]).judge
    layers = [base]
    if group is None:  # the run's own judge: its settings as run (base_url, model...), secrets from the environment
        layers.append(OmegaConf.create({k: v for k, v in run_judge.items() if not SECRET_KEY.search(str(k))}))
    layers.append(OmegaConf.from_dotlist(dots))
    return OmegaConf.merge(*layers)  # type: ignore[return-value]


def text_rubrics(judge: DictConfig) -> list[Rubric]:
    names = [str(m) for m in judge.metrics or []]
    if not names:
        raise ValueError(f"judge={judge.name} lists no rubrics (judge.metrics): nothing to validate")
    loaded = rubric_mod.load_all(rubric_mod.rubrics_dir(judge.rubrics_dir), names)
    return [r for r in loaded if r.modality == "text"]


def limit_items(found: list[items.Item], limit: int | None) -> list[items.Item]:
    """The items of the first ``limit`` conversations, taken category by category in turn."""
    if limit is None:
        return found
    by_category: dict[str, list[str]] = {}
    for item in found:
        ids = by_category.setdefault(item.category, [])
        if item.conversation_id not in ids:
            ids.append(item.conversation_id)
    chosen: list[str] = []
    queues = [list(v) for _, v in sorted(by_category.items())]
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    keep = set(chosen)
    return [i for i in found if i.conversation_id in keep]


def _tasks(rubric: Rubric, found: list[items.Item], wanted: tuple[str, ...], rates: tuple[float, ...], seed: int) -> list[Task]:
    tasks = [Task(i, "original", i.messages(rubric)) for i in found]
    if "shuffle" in wanted and rubric.metric in controls.CONTROLS["shuffle"].metrics:
        swaps = controls.shuffled(found, seed)
        for item in found:
            swap = swaps.get(item.unit)
            if swap is not None:
                reply, source, crossed = swap
                extra = {"from": list(source), "cross_category": crossed}
                tasks.append(Task(item, "shuffle", item.messages(rubric, reply), extra))
    if "truncate" in wanted and rubric.metric in controls.CONTROLS["truncate"].metrics:
        tasks.extend(Task(i, "truncate", i.messages(rubric, controls.truncate(i.reply))) for i in found if i.reply.strip())
    if controls.WER in wanted:
        vocabulary = sorted({t for i in found for t in controls.tokens(i.reply)[0]})
        for rate in rates:
            for item in found:
                noisy = controls.with_word_errors(item.reply, rate, controls.rng_for(seed, "wer", rate, item.unit), vocabulary)
                wer = controls.realized_wer(item.reply, noisy)
                if wer is not None:
                    tasks.append(Task(item, f"wer-{rate:g}", item.messages(rubric, noisy), {"rate": rate, "wer": wer}))
    return tasks


def _values(tasks: list[Task], outcomes: list[Outcome], variant: str) -> dict:
    return {t.item.unit: o.value for t, o in zip(tasks, outcomes, strict=True) if t.variant == variant}


async def _judge_metric(rubric, found, judges: dict, wanted, rates, seed) -> dict:
    tasks = _tasks(rubric, found, wanted, rates, seed)
    originals = [t for t in tasks if t.variant == "original"]
    out = {"primary": (tasks, await judges["primary"].judge_all(tasks))}
    for role in ("repeat", "second"):
        if role in judges:
            out[role] = (originals, await judges[role].judge_all(originals))
    return out


def validate(
    run_dir: Path,
    judge: DictConfig,
    second: DictConfig | None = None,
    wanted: tuple[str, ...] = ("shuffle", "truncate", "wer"),
    rates: tuple[float, ...] = controls.DEFAULT_WER_RATES,
    repeat: bool = True,
    alpha: float = controls.DEFAULT_ALPHA,
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict:
    """Run every requested control and agreement over the run's text-judge items; write and return validation.json."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    if not manifest:
        raise FileNotFoundError(f"{run_dir}: no manifest.json, not a stepeval run folder")
    unknown = set(wanted) - {*controls.CONTROLS, controls.WER}
    if unknown:
        raise ValueError(f"--controls: unknown {sorted(unknown)}; expected some of {[*controls.CONTROLS, controls.WER]}")
    rubrics = text_rubrics(judge)
    if not rubrics:
        raise ValueError(f"judge={judge.name}: no text rubric to validate (the controls alter transcripts)")
    quiet_http_logs()
    result: dict = {
        "format": validity.FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(run_dir),
        "settings": {"controls": list(wanted), "wer_rates": list(rates), "alpha": alpha, "seed": seed, "resamples": resamples},
        "checks": [],
        "sensitivity": [],
        "agreement": [],
        "skipped": {},
    }
    primary_values: dict[str, dict] = {}

    async def go() -> None:
        clients = {"primary": build_client(judge)}
        if repeat:
            clients["repeat"] = build_client(judge, REPEAT_SEED_OFFSET)
        if second is not None:
            clients["second"] = build_client(second)
        result["judge"] = {**clients["primary"].identity(), "name": judge.name}
        result["rubrics"] = {r.metric: {"name": r.name, "sha256": r.sha256} for r in rubrics}
        if second is not None:
            result["second_judge"] = {**clients["second"].identity(), "name": second.name}
        try:
            for rubric in rubrics:
                try:
                    found, skipped = items.load(run_dir, rubric)
                except FileNotFoundError as err:
                    result["skipped"][rubric.metric] = {str(err): 1}
                    continue
                result["skipped"][rubric.metric] = skipped
                found = limit_items(found, limit)
                judges = {role: CachedJudge(c, rubric, run_dir, judge.concurrency, role) for role, c in clients.items()}
                try:
                    done = await _judge_metric(rubric, found, judges, wanted, rates, seed)
                finally:
                    for cached in judges.values():
                        cached.close()
                result.setdefault("requests", {})[rubric.metric] = {
                    role: {"reused": j.tally.reused, "computed": j.tally.computed, "failed": j.tally.failed}
                    for role, j in judges.items()
                }
                _summarise_metric(result, rubric, found, done, alpha, seed, resamples)
                primary_values[rubric.metric] = _values(*done["primary"], "original")
        finally:
            for client in clients.values():
                await client.aclose()

    asyncio.run(go())
    result["agreement"].extend(ratings.agreement_entries(run_dir, primary_values, rubrics, seed, resamples))
    result["summary"] = validity.summarise(result)
    write_json_atomic(run_dir / validity.FILE, result)
    return result


def _summarise_metric(result: dict, rubric: Rubric, found, done: dict, alpha: float, seed: int, resamples: int) -> None:
    tasks, outcomes = done["primary"]
    original = _values(tasks, outcomes, "original")
    failed = sum(o.status == "failed" for o in outcomes)
    for name, control in controls.CONTROLS.items():
        if rubric.metric not in control.metrics or name not in result["settings"]["controls"]:
            continue
        derived = _values(tasks, outcomes, name)
        paired = controls.paired(original, derived, rubric.metric, seed, resamples)
        status, why = controls.verdict(paired, control.expected, alpha)
        check = {
            "name": f"{name}/{rubric.metric}",
            "control": name,
            "metric": rubric.metric,
            "description": control.description,
            "expected": control.expected,
            "status": status,
            "why": why,
            "items": len(found),
            "derived": len(derived),
            **{k: paired[k] for k in ("difference", "low", "high", "p_value", "p_method", "baseline_mean", "candidate_mean")},
            **{k: paired[k] for k in ("conversations", "turns", "excluded_turns")},
        }
        if name == "shuffle":
            crossed = sum(t.extra.get("cross_category", False) for t in tasks if t.variant == "shuffle")
            check["cross_category"] = crossed
            if crossed:
                check["description"] += f"; {crossed} of {len(derived)} from another category (theirs has one conversation)"
        if failed:
            check["judge_failures"] = failed
        result["checks"].append(check)
    wer_tasks = [(t, o) for t, o in zip(tasks, outcomes, strict=True) if t.variant.startswith("wer-")]
    if wer_tasks:
        per_rate, pairs = [], []
        for rate in result["settings"]["wer_rates"]:
            variant = f"wer-{rate:g}"
            chosen = [(t, o) for t, o in wer_tasks if t.variant == variant]
            paired = controls.paired(original, {t.item.unit: o.value for t, o in chosen}, rubric.metric, seed, resamples)
            realized = [t.extra["wer"] for t, _ in chosen]
            per_rate.append(
                {
                    "rate": rate,
                    "realized_wer": sum(realized) / len(realized) if realized else None,
                    **{k: paired[k] for k in ("difference", "low", "high", "p_value", "turns", "conversations")},
                }
            )
            for t, o in chosen:
                base = original.get(t.item.unit)
                if base is not None and o.value is not None:
                    pairs.append((t.item.unit, t.extra["wer"], o.value - base))
        slope = controls.sensitivity(pairs, seed, resamples)
        result["sensitivity"].append({"control": controls.WER, "metric": rubric.metric, "rates": per_rate, **slope})
    for role, kind in (("repeat", "self-consistency"), ("second", "inter-judge")):
        if role in done:
            other = _values(*done[role], "original")
            label = f"seed +{REPEAT_SEED_OFFSET}" if role == "repeat" else "second judge"
            result["agreement"].append(agreement.entry(kind, rubric, ["judge", label], original, other, seed, resamples))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stepeval validate-judge",
        description=__doc__.splitlines()[0],
        epilog="--second judge=<name|file.yaml> [judge.key=value ...] must come last: the second judge for inter-judge agreement",
    )
    p.add_argument("run", type=Path, help="a finished run folder whose judge has run (results/<run>)")
    p.add_argument("overrides", nargs="*", help="judge=<name | file.yaml> and judge.<key>=<value> (default: the run's judge)")
    p.add_argument("--controls", nargs="+", default=["shuffle", "truncate", "wer"], help="shuffle truncate wer (default: all)")
    p.add_argument("--wer-rates", nargs="+", type=float, default=list(controls.DEFAULT_WER_RATES), help="synthetic WER rates")
    p.add_argument("--no-repeat", action="store_true", help="skip the self-consistency repeat (seed + 1000)")
    p.add_argument("--alpha", type=float, default=controls.DEFAULT_ALPHA, help="significance level of the control checks")
    p.add_argument("--limit", type=int, help="only this many conversations (spread over categories): a cheaper check")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the derivations and bootstraps")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    return p


def main(argv: list[str]) -> int:
    argv = list(argv)
    second_overrides = None
    if "--second" in argv:
        at = argv.index("--second")
        argv, second_overrides = argv[:at], argv[at + 1 :]
    args = parser().parse_intermixed_args(argv)
    try:
        manifest = load_manifest(args.run)
        if not manifest:
            raise FileNotFoundError(f"{args.run}: no manifest.json, not a stepeval run folder")
        judge = judge_config(manifest, args.overrides)
        second = judge_config(manifest, second_overrides) if second_overrides is not None else None
        if second_overrides is not None and not any(o.startswith("judge=") for o in second_overrides):
            raise ValueError("--second needs judge=<name or file.yaml> (then judge.<key>=<value> overrides)")
        result = validate(
            args.run, judge, second, tuple(args.controls), tuple(args.wer_rates), not args.no_repeat,
            args.alpha, args.limit, args.seed, args.resamples,
        )  # fmt: skip
    except (ValueError, OSError, JudgeEndpointError, OmegaConfBaseException) as err:
        print(f"stepeval validate-judge: error: {err}", file=sys.stderr)
        return 2
    print(validity.text(result))
    print(f"written: {Path(args.run) / validity.FILE}")
    return 0 if result["summary"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
