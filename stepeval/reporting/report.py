"""``stepeval report <run> [--out FILE]``: one self-contained HTML page for a run.

The page opens from disk with nothing beside it: audio (the user's turns and the model's
replies) and charts are embedded as base64 data URIs; the charts are also saved as PNG next to
the page. All text that comes from records (transcripts, judge rationales, errors) is untrusted
and is escaped by the template engine (jinja2 autoescape).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

from stepeval import audio as audio_io
from stepeval.reporting import arena_section, latency, paper, plots, robustness, validity
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, Interval
from stepeval.reporting.tables import (
    NOT_RUN,
    OVERALL,
    Run,
    absent_cell,
    category_table,
    direction,
    direction_word,
    fmt,
    load_run,
)
from stepeval.store import RecordLog, safe_name
from stepeval.views import view_dir

TEMPLATES = Path(__file__).resolve().parent / "templates"
# formats every current browser plays from a data URI; anything else is transcoded to WAV
PLAYABLE = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".flac": "audio/flac", ".webm": "audio/webm"}
# record keys every score record has; whatever else a judge record carries (raw, rationale...) is shown as is
STANDARD_KEYS = {"conversation_id", "turn", "category", "language", "fingerprint", "stage", "metrics", "missing"}


@dataclass
class Media:
    uri: str | None = None
    note: str | None = None  # why there is no audio


@dataclass
class TurnView:
    index: int
    anchor: str
    user_text: str | None
    user_audio: Media
    reply: dict
    asr: dict | None
    scores: list[dict]
    judges: list[dict]
    flags: list[str] = field(default_factory=list)


def audio_uri(path: Path) -> str:
    """A data URI for an audio file: its own bytes if browsers play the format, else WAV."""
    suffix = path.suffix.lower()
    if suffix in PLAYABLE:
        data, mime = path.read_bytes(), PLAYABLE[suffix]
    else:
        samples, rate = audio_io.read(path)
        data, mime = audio_io.encode_wav(samples, rate), "audio/wav"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _media(path: Path | None, embed: bool, missing: str) -> Media:
    if path is None:
        return Media(note=missing)
    if not path.is_file():
        return Media(note=f"audio file not found: {path}")
    if not embed:
        return Media(note="audio not embedded (--no-audio)")
    try:
        return Media(uri=audio_uri(path))
    except (OSError, ValueError) as err:
        return Media(note=f"cannot embed {path.name}: {err}")


def dataset_conversations(manifest: dict) -> tuple[dict, str | None]:
    """The run's dataset (user audio and transcripts), loaded from the manifest's config; (conversations, note)."""
    from stepeval.data import loader, sources
    from stepeval.data.columns import ColumnSpec

    cfg = (manifest.get("config") or {}).get("dataset") or {}
    try:
        source = cfg.get("source") or "sample"
        location = cfg.get("local_dir") if source == "local" else cfg.get("repo_id")
        files = sources.resolve(source, location, cfg.get("revision"))
        spec = ColumnSpec.from_mapping(cfg.get("columns"))
        cache = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else None
        allow = bool(cfg.get("allow_outside_paths"))  # as the run read it
        loaded = loader.load(files, spec, cache_dir=cache, strict=False, allow_outside_paths=allow)
    except Exception as err:  # the report still shows the replies and scores without the user side
        return {}, f"user audio and transcripts unavailable: could not load dataset {cfg.get('name')!r} ({err})"
    return {c.id: c for c in loaded.conversations}, None


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2, default=str)


def _records(run: Run, stage: str) -> dict:
    return RecordLog(run.root / "records" / f"{stage}.jsonl").load()


def judge_details(run: Run) -> dict[tuple[str, int], list[dict]]:
    """Per turn: every judge record's extra fields (raw reply, rationale, judge identity...), generically."""
    out: dict[tuple[str, int], list[dict]] = {}
    for path in sorted((run.root / "records").glob("judge-*.jsonl")):
        for key, record in RecordLog(path).load().items():
            extras = [(k, _text(v)) for k, v in sorted(record.items()) if k not in STANDARD_KEYS and v not in (None, "", {}, [])]
            out.setdefault(key, []).append({"stage": path.stem, "metrics": record.get("metrics", {}), "extras": extras})
    return out


def conversation_views(run: Run, conversations: dict, embed: bool) -> list[dict]:
    replays, asr, details = _records(run, "replay"), _records(run, "asr"), judge_details(run)
    scores = run.scores
    keys = set(replays) | {(c.id, t.index) for c in conversations.values() for t in c.turns}
    keys |= set(zip(scores["conversation_id"], scores["turn"], strict=True))
    by_conversation: dict[str, list[int]] = {}
    for cid, turn in sorted(keys):
        by_conversation.setdefault(cid, []).append(turn)
    views = []
    for cid, turns in by_conversation.items():
        conv = conversations.get(cid)
        user_turns = {t.index: t for t in conv.turns} if conv else {}
        anchor = f"conv-{safe_name(cid)}"
        first = replays.get((cid, turns[0]), {})
        items = []
        for turn in turns:
            reply = dict(replays.get((cid, turn), {}))
            user = user_turns.get(turn)
            part = scores[(scores["conversation_id"] == cid) & (scores["turn"] == turn)]
            rows = [
                {
                    "metric": r.metric,
                    "value": None if pd.isna(r.value) else f"{r.value:.4g}",
                    "missing": None if pd.isna(r.missing_reason) else str(r.missing_reason),
                    "stage": r.stage,
                }
                for r in part.itertuples()
            ]
            flags = []
            if reply.get("status") not in (None, "ok"):
                flags.append(f"reply {reply.get('status')}: {reply.get('error', '')}")
            if not reply:
                flags.append("no reply record")
            heard = asr.get((cid, turn))
            if heard is not None and heard.get("status") != "ok":
                flags.append(f"ASR failed: {heard.get('error', '')}")
            reply_audio = run.root / reply["audio"] if reply.get("audio") else None
            items.append(
                TurnView(
                    index=turn,
                    anchor=f"{anchor}-turn-{turn}",
                    user_text=user.text if user else None,
                    user_audio=_media(user.audio_path if user else None, embed, "user audio not available"),
                    reply={**reply, "media": _media(reply_audio, embed, "no reply audio")},
                    asr=heard,
                    scores=rows,
                    judges=details.get((cid, turn), []),
                    flags=flags,
                )
            )
        views.append(
            {
                "id": cid,
                "anchor": anchor,
                "category": conv.category if conv else first.get("category", "unknown"),
                "language": conv.language if conv else first.get("language"),
                "turns": items,
                "flags": sum(len(t.flags) for t in items),
                "missing": sum(s["value"] is None for t in items for s in t.scores),
            }
        )
    return views


def _cell_view(cell: Interval | None, absent: str) -> dict:
    """One summary cell split for compact display: mean, interval and counts on separate lines."""
    if cell is None:
        return {"kind": "absent", "mean": absent, "ci": "", "counts": ""}
    counts = f"{cell.scored}/{cell.scored + cell.missing} turns"
    if cell.mean is None:
        return {"kind": "absent", "mean": "n/a", "ci": "no scored turn", "counts": counts}
    ci = f"[{fmt(cell.low)}, {fmt(cell.high)}]" if cell.low is not None else f"no CI ({cell.conversations} conv.)"
    return {"kind": "value", "mean": fmt(cell.mean), "ci": ci, "counts": counts}


def metric_rows(table: dict, run: Run) -> list[dict]:
    """Rows: metrics; cells: overall, then each category (metrics grow in number, categories do not)."""
    rows = []
    for metric, entry in table["metrics"].items():
        if entry is None:
            cells = [_cell_view(None, NOT_RUN) for _ in range(len(table["categories"]) + 1)]
        else:
            cells = [_cell_view(entry[OVERALL], "n/a")]
            for category in table["categories"]:
                cells.append(_cell_view(entry["by_category"].get(category), absent_cell(table, metric, category)))
        rows.append({"metric": metric, "direction": direction_word(direction(metric, run)), "cells": cells})
    return rows


def png_uri(path: Path | None) -> str | None:
    return None if path is None else "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def arena_part(run: Run, result: dict, out: Path, source: str) -> dict:
    """The arena section of the run's page (``--arena``): its figures next to the page, and which arena system
    (if any) is this run's view."""
    part = arena_section.section(result, out.parent, f"{out.stem}_arena", source=source)
    mine = {run.root.resolve(), *([view_dir(run.root, run.view.name).resolve()] if run.view is not None else [])}
    part["this_run"] = next(
        (s["system"] for s in result["systems"] if s.get("source") and Path(s["source"]).resolve() in mine), None
    )
    return part


def render(
    run: Run,
    out: Path,
    embed_audio: bool = True,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    robustness_runs: list[Run] | None = None,
    sweep: Path | None = None,
    arena: dict | None = None,
    arena_source: str = "arena.json",
) -> dict:
    """Write the HTML page and its PNG charts; returns the paths written. ``robustness_runs``: views of other
    input conditions (with this one) for the robustness section (docs/robustness.md). ``sweep``: a latency sweep's
    folder or ``sweep.json`` (scripts/latency_sweep.py), drawn as the latency-throughput curve. ``arena``: an
    ``arena.json`` (loaded by ``arena_section.load``) shown in a section of its own."""
    out.parent.mkdir(parents=True, exist_ok=True)
    timings = latency.latency_frame(run.root)
    latency_rows = latency.display_rows(latency.table(timings, resamples=min(resamples, latency.RESAMPLES), seed=seed))
    cdf_path = latency.cdf(timings, out.with_name(f"{out.stem}_latency_cdf.png"), f"{run.name}: latency CDF")
    sweep_data = latency.load_sweep(sweep) if sweep is not None else None
    curve_path = None
    if sweep_data is not None:
        title = f"{sweep_data.get('server', '')}: {'; '.join(sweep_data.get('protocols') or [])}"[:140]
        metric = sweep_data.get("metric", "first_audio_s")
        curve_path = latency.curve(sweep_data["points"], out.with_name(f"{out.stem}_latency_sweep.png"), title, metric)
    expected = [m for m in run.configured_metrics() if m not in run.metrics()]
    table = category_table(run.scores, [*run.metrics(), *expected], seed=seed, resamples=resamples)
    directions = {m: direction(m, run) for m in table["metrics"]}
    radar_path, radar_note = plots.radar(table, out.with_name(f"{out.stem}_radar.png"), f"{run.name}: by category", directions)
    bars_path = plots.bars(table, out.with_name(f"{out.stem}_bars.png"), f"{run.name}: means with 95% intervals")
    conversations, dataset_note = dataset_conversations(run.manifest)
    views = conversation_views(run, conversations, embed_audio)
    arena_view = arena_part(run, arena, out, arena_source) if arena is not None else None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    notes = [*run.summary.get("notes", []), *([dataset_note] if dataset_note else [])]
    # the paper's reference rows belong to StepEval-Audio-360 runs (its dataset config says benchmark: stepeval360)
    paper_layout = ((run.manifest.get("config") or {}).get("dataset") or {}).get("benchmark", paper.BENCHMARK) == paper.BENCHMARK
    html = env.get_template("report.html.j2").render(
        run=run,
        manifest=run.manifest,
        config=run.manifest.get("config", {}),
        summary=run.summary,
        rows=metric_rows(table, run),
        categories=table["categories"],
        paper_layout=paper_layout,
        table5=paper.table5_rows([run], seed=seed, resamples=resamples).to_dict("records") if paper_layout else [],
        table7=paper.table7_rows(run, seed=seed, resamples=resamples).to_dict("records") if paper_layout else [],
        table5_columns=[c.title for c in paper.TABLE5_COLUMNS],
        table7_columns=[c.title for c in paper.TABLE7_COLUMNS],
        radar=png_uri(radar_path),
        radar_note=radar_note,
        bars=png_uri(bars_path),
        conversations=views,
        arena=arena_view,
        notes=notes,
        validity=validity.section(run.root, run.manifest, judge=run.provenance()["judge"]),
        robustness=robustness.section(robustness.build(robustness_runs, seed=seed, resamples=resamples))
        if robustness_runs
        else None,
        latency_rows=latency_rows,
        latency_cdf=png_uri(cdf_path),
        latency_curve=png_uri(curve_path),
        latency_sweep=sweep_data,
        seed=seed,
        resamples=resamples,
    )
    out.write_text(html, encoding="utf-8")
    written = {"html": out, "radar": radar_path, "bars": bars_path, "latency_cdf": cdf_path, "latency_sweep": curve_path}
    if arena_view is not None:
        written |= {"arena_heatmap": arena_view["heatmap"], "arena_forest": arena_view["forest"]}
    return written


def default_path(run: Run) -> Path:
    """``<run>/views/<view>/report.html``: each view's report in its own folder, so reports of two views of
    one run never overwrite each other; ``<run>/report.html`` for a run made before views."""
    folder = view_dir(run.root, run.view.name) if run.view is not None else run.root
    return folder / "report.html"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepeval report", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the run folder (results/<run>)")
    p.add_argument("--out", type=Path, help="HTML file (default: report.html in the view's folder); PNG charts go next to it")
    p.add_argument("--no-audio", action="store_true", help="do not embed audio (a much smaller page for very large runs)")
    p.add_argument(
        "--robustness",
        type=Path,
        nargs="+",
        metavar="VIEW",
        help="views of other input conditions (or a sweep folder): adds the robustness section (docs/robustness.md)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    p.add_argument("--latency-sweep", type=Path, help="a latency sweep's folder (scripts/latency_sweep.py): its curve is drawn")
    p.add_argument("--arena", type=Path, help="an arena.json (stepeval arena): adds the pairwise ranking as a section of its own")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        run = load_run(args.run)
        others = None
        if args.robustness:
            others = [run, *(r for r in robustness.load(args.robustness) if r.root != run.root)]
            robustness.build(others, seed=args.seed, resamples=10)  # a missing clean view fails here, not mid-render
        arena = arena_section.load(args.arena) if args.arena else None
    except (FileNotFoundError, ValueError) as err:
        print(f"stepeval report: error: {err}", file=sys.stderr)
        return 2
    out = args.out or default_path(run)
    try:
        paths = render(
            run,
            out,
            not args.no_audio,
            args.seed,
            args.resamples,
            robustness_runs=others,
            sweep=args.latency_sweep,
            arena=arena,
            arena_source=str(args.arena),
        )
    except ValueError as err:
        print(f"stepeval report: error: {err}", file=sys.stderr)
        return 2
    print("written: " + ", ".join(str(p) for p in paths.values() if p is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
