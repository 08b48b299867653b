"""``stepeval validate-judge <view>``: does the judge judge the content? Controls and agreement, from a judged view.

    stepeval validate-judge results/<run>/views/<view>                     # the view's own judge
    stepeval validate-judge results/<run>                                  # the run's one judged view
    stepeval validate-judge <view> judge.model=other-model                 # the view's judge, overridden
    stepeval validate-judge <view> judge=my_judge.yaml --second judge=gpt4o   # inter-judge agreement

Reads the judge records the view uses (what the judge read), derives control items, pre-flights the
judge, judges them (cached in ``records/validation-<metric>.jsonl``), and writes the validation under
the identity of the judge it validated (``validations/<judge key>/validation.json``), which
``stepeval report`` and ``stepeval leaderboard`` show under that judge's rows only. No reference
answers are needed. ``--second`` and its overrides come last.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stepeval import views
from stepeval.config import SECRET_KEY, JudgeSchema, conf_dir, register_schemas
from stepeval.judging import identity as judge_identity
from stepeval.judging import rubric as rubric_mod
from stepeval.judging.llm_judge import JudgeEndpointError
from stepeval.judging.rubric import Rubric
from stepeval.reporting import validity
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from stepeval.secrets import scrub
from stepeval.stages import judge as judge_stage
from stepeval.store import load_manifest, write_json_atomic
from stepeval.validation import agreement, controls, items, listen, ratings
from stepeval.validation.runner import CachedJudge, Outcome, Task, build_client, quiet_http_logs
from stepeval.views import VIEW_FILE, VIEWS_DIR, View

ALL_CONTROLS = (*controls.CONTROLS, controls.WER, *listen.CONTROLS)
REPEAT_SEED_OFFSET = 1000  # the self-consistency repeat asks with seed + this (beyond any samples' seeds)


def view_overlay(judge: dict) -> dict:
    """The judge config keys a view's (or manifest's) ``judge`` section fixes: models, endpoints, settings
    that change verdicts, what it reads, its rubrics."""
    endpoints = judge.get("endpoints") or {}
    settings = judge.get("settings") or {}
    out: dict = {}
    if endpoints.get("text"):
        out.update(model=endpoints["text"].get("model"), base_url=endpoints["text"].get("base_url"))
    if endpoints.get("audio"):
        out.update(audio_model=endpoints["audio"].get("model"), audio_base_url=endpoints["audio"].get("base_url"))
    out.update({k: settings[k] for k in ("temperature", "seed", "samples", "structured_output", "max_tokens") if k in settings})
    out.update({k: judge[k] for k in ("reads", "audio_user") if judge.get(k) is not None})
    if judge.get("rubrics"):
        out["metrics"] = [r["name"] for r in judge["rubrics"].values()]
    return out


def judge_config(manifest: dict, overrides: list[str], view_judge: dict | None = None) -> DictConfig:
    """The judge to validate: ``judge=<name | file.yaml>`` (default: the view's judge: its config group,
    the run's settings except secrets, which come from the environment again, and the view's models,
    endpoints, settings and rubrics) then ``judge.<key>=<value>``."""
    group, dots = None, []
    for override in overrides:
        if override.startswith("judge="):
            group = override.split("=", 1)[1]
        elif override.startswith("judge."):
            dots.append(override[len("judge.") :])
        else:
            raise ValueError(f"{scrub(override)!r}: expected judge=<name or file.yaml> or judge.<key>=<value>")
    run_judge = dict((manifest.get("config") or {}).get("judge") or {})
    name = group or (view_judge or {}).get("name") or run_judge.get("name")
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
    if group is None:  # the view's own judge: the run's settings (secrets from the environment), the view's judge
        layers.append(OmegaConf.create({k: v for k, v in run_judge.items() if not SECRET_KEY.search(str(k))}))
        if view_judge:
            overlay = view_overlay(view_judge)
            if judge_identity.bare_url(overlay.get("base_url")) == judge_identity.bare_url(run_judge.get("base_url")):
                overlay.pop("base_url", None)  # the configured URL (it may carry what the recorded one lacks)
            layers.append(OmegaConf.create(overlay))
    layers.append(OmegaConf.from_dotlist(dots))
    return OmegaConf.merge(*layers)  # type: ignore[return-value]


def judged_target(path: Path) -> tuple[Path, View | None]:
    """(run folder, view) to validate: a view folder, or a run folder meaning its one judged view (several:
    an error naming them); a run from before views has none (its manifest's judge)."""
    path = Path(path)
    if (path / VIEW_FILE).is_file():
        return path.parent.parent, views.load(path)
    if not load_manifest(path):
        raise FileNotFoundError(f"{path}: no manifest.json, not a stepeval run folder (or a view folder of one)")
    folder = path / VIEWS_DIR
    found = [views.load(p.parent) for p in sorted(folder.glob(f"*/{VIEW_FILE}"))] if folder.is_dir() else []
    if not found:
        return path, None
    judged = [v for v in found if judge_identity.of(v.description.get("judge"))]
    if len(judged) == 1:
        return path, judged[0]
    if not judged:
        raise ValueError(f"{path}: none of its views was judged ({', '.join(v.name for v in found)}): run a judge first")
    names = ", ".join(v.name for v in judged)
    raise ValueError(f"{path} holds {len(judged)} judged views ({names}): pass one of them as {path}/{VIEWS_DIR}/<name>")


def _rubrics(judge: DictConfig) -> list[Rubric]:
    names = [str(m) for m in judge.metrics or []]
    if not names:
        raise ValueError(f"judge={judge.name} lists no rubrics (judge.metrics): nothing to validate")
    return rubric_mod.load_all(rubric_mod.rubrics_dir(judge.rubrics_dir), names)


def text_rubrics(judge: DictConfig) -> list[Rubric]:
    return [r for r in _rubrics(judge) if r.modality == "text"]


def listening_rubrics(judge: DictConfig) -> list[Rubric]:
    """The listening judge's rubrics the audio controls apply to."""
    return [r for r in _rubrics(judge) if r.modality == "audio" and r.metric in listen.METRICS]


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


def public(client_identity: dict, name: str) -> dict:
    """A judge client's identity fit for a file: the endpoint without userinfo or query (credentials)."""
    return {**client_identity, "base_url": judge_identity.bare_url(client_identity.get("base_url")), "name": name}


def validate(
    path: Path,
    judge: DictConfig,
    second: DictConfig | None = None,
    wanted: tuple[str, ...] = ("shuffle", "truncate", "wer"),
    rates: tuple[float, ...] = controls.DEFAULT_WER_RATES,
    repeat: bool = True,
    alpha: float = controls.DEFAULT_ALPHA,
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    thresholds: controls.Thresholds | None = None,
) -> dict:
    """Run every requested control and agreement over the view's judge items; store the validation under
    the validated judge's identity (``validity.path_for``) and return it."""
    run_dir, view = judged_target(Path(path))
    manifest = load_manifest(run_dir)
    th = thresholds or controls.Thresholds(alpha=alpha)
    unknown = set(wanted) - set(ALL_CONTROLS)
    if unknown:
        raise ValueError(f"--controls: unknown {sorted(unknown)}; expected some of {list(ALL_CONTROLS)}")
    rubrics = text_rubrics(judge)
    listening = listening_rubrics(judge)
    if not rubrics and not listening:
        raise ValueError(f"judge={judge.name}: no rubric to validate")
    described = judge_stage.describe(judge)  # checks the config (model, key) before anything is sent
    identity = judge_identity.of(described)
    view_judge = view.description.get("judge") if view is not None else manifest.get("judge")
    view_identity = judge_identity.of(view_judge)
    quiet_http_logs()
    result: dict = {
        "format": validity.FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(run_dir),
        "view": view.name if view is not None else None,
        "identity": identity,
        "judge_key": judge_identity.key(identity),
        "view_judge_key": judge_identity.key(view_identity),
        "settings": {
            "controls": list(wanted),
            "wer_rates": list(rates),
            "alpha": th.alpha,
            "seed": seed,
            "resamples": resamples,
            "thresholds": {
                "min_items": th.min_items,
                "min_conversations": th.conversations_needed(),
                "max_unusable": th.max_unusable,
                "agreement": dict(th.agreement),
            },
        },
        "checks": [],
        "sensitivity": [],
        "agreement": [],
        "skipped": {},
    }
    if view_identity is not None and view_identity != identity:
        result["differs_from_view_judge"] = judge_identity.differences(view_identity, identity)
    primary_values: dict[str, dict] = {}

    async def go() -> None:
        clients = {"primary": build_client(judge)} if rubrics else {}
        if rubrics and repeat:
            clients["repeat"] = build_client(judge, REPEAT_SEED_OFFSET)
        if rubrics and second is not None:
            clients["second"] = build_client(second)
        audio_client = build_client(judge, modality="audio") if listening else None
        try:
            # one clear line, before any work, when a judge is down, refuses the key or does not serve the model
            for client in [*(c for role, c in clients.items() if role != "repeat"), *([audio_client] if audio_client else [])]:
                await client.preflight()
            primary = clients.get("primary") or audio_client
            result["judge"] = public(primary.identity(), judge.name)
            result["rubrics"] = {r.metric: {"name": r.name, "sha256": r.sha256} for r in [*rubrics, *listening]}
            if second is not None and "second" in clients:
                result["second_judge"] = public(clients["second"].identity(), second.name)
            for rubric in rubrics:
                found = _items(run_dir, view, rubric, result)
                if found is None:
                    continue
                found, unusable = found
                found = limit_items(found, limit)
                judges = {role: CachedJudge(c, rubric, run_dir, judge.concurrency, role) for role, c in clients.items()}
                try:
                    done = await _judge_metric(rubric, found, judges, wanted, rates, seed)
                finally:
                    for cached in judges.values():
                        cached.close()
                _tally(result, rubric, judges)
                _summarise_metric(result, rubric, found, done, th, seed, resamples, unusable)
                primary_values[rubric.metric] = _values(*done["primary"], "original")
            for rubric in listening:
                await listen.validate_rubric(
                    result, run_dir, view, rubric, audio_client, judge, wanted, th, seed, resamples, limit, manifest
                )
        finally:
            for client in [*clients.values(), *([audio_client] if audio_client else [])]:
                await client.aclose()

    asyncio.run(go())
    result["agreement"].extend(ratings.agreement_entries(run_dir, primary_values, rubrics, seed, resamples))
    _agreement_checks(result, th)
    result["summary"] = validity.summarise(result)
    write_json_atomic(validity.path_for(run_dir, identity), result)
    validity.refresh_tables(run_dir)
    return result


def _items(run_dir: Path, view: View | None, rubric: Rubric, result: dict) -> tuple[list[items.Item], float] | None:
    """The rubric's items the view's judge read, and the share of them the controls cannot use."""
    selection = view.selection.get(judge_stage.log_name(rubric.metric)) if view is not None else None
    scores = view.selection.get("score") if view is not None else None
    try:
        found, skipped = items.load(run_dir, rubric, selection, items.misheard(run_dir, scores))
    except FileNotFoundError as err:
        result["skipped"][rubric.metric] = {str(err): 1}
        return None
    empty = [i for i in found if not i.reply.strip()]
    if empty:
        skipped = {**skipped, "empty transcript or reply": len(empty)}
    result["skipped"][rubric.metric] = skipped
    total = len(found) + sum(v for k, v in skipped.items() if k != "empty transcript or reply")
    unusable = sum(skipped.values()) / total if total else 1.0
    return [i for i in found if i.reply.strip()], unusable


def _tally(result: dict, rubric: Rubric, judges: dict) -> None:
    result.setdefault("requests", {})[rubric.metric] = {
        role: {"reused": j.tally.reused, "computed": j.tally.computed, "failed": j.tally.failed} for role, j in judges.items()
    }


def _summarise_metric(result: dict, rubric: Rubric, found, done: dict, th, seed: int, resamples: int, unusable: float) -> None:
    tasks, outcomes = done["primary"]
    original = _values(tasks, outcomes, "original")
    failed = sum(o.status == "failed" for o in outcomes)
    for name, control in controls.CONTROLS.items():
        if rubric.metric not in control.metrics or name not in result["settings"]["controls"]:
            continue
        derived = _values(tasks, outcomes, name)
        paired = controls.paired(original, derived, rubric.metric, seed, resamples)
        check = controls.check_entry(name, control, rubric.metric, len(found), derived, paired, th, unusable)
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
        conversations = len({u[0] for u, _, _ in pairs})
        status, why = controls.sensitivity_verdict(slope, conversations, unusable, th)
        result["checks"].append(
            {
                "name": f"wer/{rubric.metric}",
                "control": controls.WER,
                "metric": rubric.metric,
                "description": "synthetic word errors in the transcript the judge reads: the score must fall",
                "expected": "down",
                "status": status,
                "why": why,
                "items": slope.get("items"),
                "turns": slope.get("items"),
                "conversations": conversations,
                "unusable_share": round(unusable, 4),
                **{k: slope.get(k) for k in ("per_wer_point", "low", "high")},
            }
        )
    for role, kind in (("repeat", "self-consistency"), ("second", "inter-judge")):
        if role in done:
            other = _values(*done[role], "original")
            label = f"seed +{REPEAT_SEED_OFFSET}" if role == "repeat" else "second judge"
            result["agreement"].append(agreement.entry(kind, rubric, ["judge", label], original, other, seed, resamples))


def _agreement_checks(result: dict, th: controls.Thresholds) -> None:
    """Each agreement of the judge (with itself, another judge, people) against its threshold."""
    for entry in result["agreement"]:
        threshold = th.agreement_threshold(entry["kind"])
        if threshold is None:
            continue  # human-human, humans: about the raters, not the judge
        status, why, coefficient = controls.agreement_verdict(entry, threshold, th)
        raters = entry["raters"][1] if len(entry["raters"]) == 2 else f"{len(entry['raters']) - 1} raters"
        result["checks"].append(
            {
                "name": f"agreement/{entry['kind']}/{entry['metric']}" + (f"/{raters}" if entry["kind"] == "judge-human" else ""),
                "control": "agreement",
                "metric": entry["metric"],
                "description": f"{entry['kind']} agreement ({' vs '.join(entry['raters'][:3])}) at least {threshold}",
                "expected": f">= {threshold}",
                "status": status,
                "why": why,
                "threshold": threshold,
                "items": entry["items"],
                "turns": entry["items"],
                "conversations": entry["conversations"],
                "coefficient": coefficient.get("name") if coefficient else None,
                **({k: coefficient.get(k) for k in ("value", "low", "high")} if coefficient else {}),
            }
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stepeval validate-judge",
        description=__doc__.splitlines()[0],
        epilog="--second judge=<name|file.yaml> [judge.key=value ...] must come last: the second judge for inter-judge "
        "agreement. Exit status: 0 every check passed, 1 a check failed, 3 none failed but some were inconclusive, 2 bad input "
        "or a judge that cannot be reached.",
    )
    p.add_argument("run", type=Path, help="a judged view (results/<run>/views/<view>), or a run folder with one judged view")
    p.add_argument("overrides", nargs="*", help="judge=<name | file.yaml> and judge.<key>=<value> (default: the view's judge)")
    p.add_argument("--controls", nargs="+", default=list(ALL_CONTROLS), help=f"some of {' '.join(ALL_CONTROLS)} (default: all)")
    p.add_argument("--wer-rates", nargs="+", type=float, default=list(controls.DEFAULT_WER_RATES), help="synthetic WER rates")
    p.add_argument("--no-repeat", action="store_true", help="skip the self-consistency repeat (seed + 1000)")
    p.add_argument("--alpha", type=float, default=controls.DEFAULT_ALPHA, help="significance level of the control checks")
    th = controls.Thresholds
    p.add_argument("--min-items", type=int, default=th.min_items, help="fewer items scored both ways: inconclusive")
    p.add_argument("--min-conversations", type=int, help="fewer: inconclusive (default: the least that can reach --alpha)")
    p.add_argument("--max-unusable", type=float, default=th.max_unusable, help="a larger share of unusable items: inconclusive")
    p.add_argument(
        "--agreement-threshold",
        nargs="+",
        default=[],
        metavar="KIND=VALUE",
        help="least kappa/alpha per agreement kind (self-consistency, inter-judge, judge-human, judge-and-humans)",
    )
    p.add_argument("--limit", type=int, help="only this many conversations (spread over categories): a cheaper check")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the derivations and bootstraps")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    return p


def thresholds_from(args: argparse.Namespace) -> controls.Thresholds:
    agreement_levels = dict(controls.Thresholds.agreement)
    for item in args.agreement_threshold:
        kind, _, value = item.partition("=")
        if kind not in agreement_levels:
            raise ValueError(f"--agreement-threshold {item!r}: kind must be one of {sorted(agreement_levels)}")
        try:
            agreement_levels[kind] = float(value)
        except ValueError:
            raise ValueError(f"--agreement-threshold {item!r}: expected KIND=<number>") from None
    return controls.Thresholds(
        alpha=args.alpha,
        min_items=args.min_items,
        min_conversations=args.min_conversations,
        max_unusable=args.max_unusable,
        agreement=tuple(agreement_levels.items()),
    )


def main(argv: list[str]) -> int:
    argv = list(argv)
    second_overrides = None
    if "--second" in argv:
        at = argv.index("--second")
        argv, second_overrides = argv[:at], argv[at + 1 :]
    args = parser().parse_intermixed_args(argv)
    try:
        run_dir, view = judged_target(args.run)
        manifest = load_manifest(run_dir)
        view_judge = view.description.get("judge") if view is not None else manifest.get("judge")
        judge = judge_config(manifest, args.overrides, view_judge)
        second = judge_config(manifest, second_overrides) if second_overrides is not None else None
        if second_overrides is not None and not any(o.startswith("judge=") for o in second_overrides):
            raise ValueError("--second needs judge=<name or file.yaml> (then judge.<key>=<value> overrides)")
        if view is not None:
            print(f"validating the judge of view {view.name}" + (" (as overridden)" if args.overrides else ""))
        result = validate(
            args.run, judge, second, tuple(args.controls), tuple(args.wer_rates), not args.no_repeat,
            args.alpha, args.limit, args.seed, args.resamples, thresholds_from(args),
        )  # fmt: skip
    except (ValueError, OSError, JudgeEndpointError, OmegaConfBaseException) as err:
        print(f"stepeval validate-judge: error: {scrub(str(err))}", file=sys.stderr)
        return 2
    print(validity.text(result))
    for line in result.get("differs_from_view_judge") or []:
        print(f"note: not the view's judge as judged: {line}")
    print(f"written: {validity.path_for(run_dir, result['identity'])}")
    summary = result["summary"]
    return 1 if summary["failed"] else (3 if summary["inconclusive"] else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
