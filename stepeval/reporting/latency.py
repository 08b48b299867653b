"""Latency tables of a run (docs/latency.md): per category, p50/p90/p95 and mean of each per-turn timing, with
cluster-bootstrap intervals (conversations resampled whole, as every interval in ``stats``), and the protocol
the figures were measured under, without which they mean nothing.

Read from the replay log (the final record of each turn); a timing a turn could not give is missing with its
reason, never a 0, and counted as missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stepeval.records import ReplayRecord
from stepeval.reporting.stats import DEFAULT_LEVEL, DEFAULT_SEED
from stepeval.store import RecordLog

# the timings tabulated, in the order shown (all lower is better)
METRICS = ("first_audio_s", "first_speech_s", "first_text_s", "first_byte_s", "total_s", "rtf", "queue_s")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95}
RESAMPLES = 1000
PREFIX = "latency."  # the metric names latency has among scores (compare, leaderboard)


def protocol_label(latency: dict) -> str:
    """One line saying how a figure was measured: clock, streaming, concurrency per endpoint, hardware, mode."""
    if not latency:
        return "unrecorded (a run made before latency was recorded)"
    parts = [
        "streamed" if latency.get("streamed") else "not streamed",
        f"concurrency {latency.get('concurrency')}/endpoint",
        f"mode {latency.get('mode') or 'load'}",
        f"hardware {latency.get('hardware') or 'undeclared'}",
        f"clock {latency.get('clock') or '?'}",
    ]
    return ", ".join(parts)


def replay_records(run_dir: Path) -> list[ReplayRecord]:
    path = Path(run_dir) / "records" / "replay.jsonl"
    if not path.is_file():
        return []
    return [ReplayRecord.from_json(r) for r in RecordLog(path).load().values() if r.get("status") == "ok"]


def latency_frame(run_dir: Path) -> pd.DataFrame:
    """Long table, one row per (turn, timing): value NaN with ``missing_reason`` when missing; ``protocol`` per turn."""
    rows = []
    for record in replay_records(run_dir):
        protocol = protocol_label(record.latency)
        for metric in METRICS:
            value = record.timings.get(metric)
            reason = record.timings_missing.get(metric)
            if value is None and reason is None:
                reason = "not recorded (a run made before latency was recorded)" if not record.latency else "not measured"
            rows.append(
                {
                    "conversation_id": record.conversation_id,
                    "turn": record.turn,
                    "category": record.category,
                    "language": record.language,
                    "metric": metric,
                    "value": float("nan") if value is None else float(value),
                    "missing_reason": None if value is not None else reason,
                    "protocol": protocol,
                    "in_flight": record.latency.get("in_flight"),
                    "endpoint": record.latency.get("endpoint") or "unrecorded",
                }
            )
    columns = ["conversation_id", "turn", "category", "language", "metric", "value", "missing_reason", "protocol", "in_flight"]
    columns.append("endpoint")  # redacted: never a key (the wire client records the printable URL)
    return pd.DataFrame(rows, columns=columns)


def as_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Latency rows in the shape of ``records.turn_scores`` (metric ``latency.<timing>``), for ``compare``."""
    out = frame.copy()
    out["metric"] = PREFIX + out["metric"]
    out["stage"] = "replay"
    out["edits"] = out["units"] = float("nan")
    return out.drop(columns=["protocol", "in_flight", "endpoint"])


@dataclass
class Cell:
    """One timing over some turns: quantiles and mean, each with a cluster-bootstrap interval."""

    n: int
    missing: int
    conversations: int
    estimates: dict[str, float | None]
    low: dict[str, float | None]
    high: dict[str, float | None]


def _weighted_quantiles(sorted_values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """Per row of ``weights`` (resamples x values, values sorted): the lower weighted ``q`` quantile."""
    cum = np.cumsum(weights, axis=1)
    target = q * cum[:, -1:]
    index = (cum < target).sum(axis=1)  # the first value whose cumulative weight reaches the target
    return sorted_values[np.minimum(index, sorted_values.size - 1)]


def summarise(part: pd.DataFrame, resamples: int = RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL) -> Cell:
    """Quantiles (lower, no interpolation: a quantile is a measured turn) and mean of ``part['value']``, with
    percentile intervals from resampling conversations with replacement (their turns travel together)."""
    scored = part.dropna(subset=["value"])
    missing = int(part["value"].isna().sum())
    names = [*QUANTILES, "mean"]
    empty = {k: None for k in names}
    if scored.empty:
        return Cell(0, missing, 0, dict(empty), dict(empty), dict(empty))
    order = np.argsort(scored["value"].to_numpy(), kind="stable")
    values = scored["value"].to_numpy()[order]
    codes, uniques = pd.factorize(scored["conversation_id"])
    codes = codes[order]
    ones = np.ones((1, values.size))
    estimates = {k: float(_weighted_quantiles(values, ones, q)[0]) for k, q in QUANTILES.items()}
    estimates["mean"] = float(values.mean())
    low, high = dict(empty), dict(empty)
    if len(uniques) >= 2:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(len(uniques), np.full(len(uniques), 1 / len(uniques)), size=resamples).astype(float)
        weights = draws[:, codes]
        alpha = (1 - level) / 2
        for k, q in QUANTILES.items():
            boot = _weighted_quantiles(values, weights, q)
            low[k], high[k] = float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))
        means = (weights @ values) / weights.sum(axis=1)
        low["mean"], high["mean"] = float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
    return Cell(int(values.size), missing, len(uniques), estimates, low, high)


def table(frame: pd.DataFrame, resamples: int = RESAMPLES, seed: int = DEFAULT_SEED) -> list[dict]:
    """Rows (metric, category incl. ``overall``, protocol) -> Cell; one row per protocol, never pooled across them."""
    rows = []
    for (metric, protocol), part in frame.groupby(["metric", "protocol"], sort=False):
        groups = [("overall", part), *sorted(part.groupby("category"), key=lambda g: str(g[0]))]
        for category, group in groups:
            cell = summarise(group, resamples, seed)
            reasons = group["missing_reason"].dropna().value_counts()
            endpoints = ", ".join(sorted(set(group["endpoint"])))
            rows.append(
                {"metric": metric, "category": category, "protocol": protocol, "cell": cell, "why_missing": reasons.to_dict()}
            )
            rows[-1]["endpoints"] = endpoints
    order = {m: i for i, m in enumerate(METRICS)}
    return sorted(rows, key=lambda r: (order.get(r["metric"], 99), r["protocol"], r["category"] != "overall"))


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if metric == "rtf" else f"{value * 1000:.0f} ms"


def _with_interval(cell: Cell, key: str, metric: str) -> str:
    text = _fmt(cell.estimates[key], metric)
    if cell.low[key] is not None:
        text += f" [{_fmt(cell.low[key], metric)}, {_fmt(cell.high[key], metric)}]"
    return text


def markdown(rows: list[dict]) -> str:
    """The latency table as Markdown: each cell the estimate with its 95% cluster-bootstrap interval."""
    lines = [
        "| timing | category | protocol | endpoints | p50 | p90 | p95 | mean | turns | missing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cell, metric = row["cell"], row["metric"]
        stats = " | ".join(_with_interval(cell, k, metric) for k in (*QUANTILES, "mean"))
        why = "; ".join(f"{n}: {reason}" for reason, n in row["why_missing"].items())
        missing = f"{cell.missing}" + (f" ({why})" if why else "")
        where = row.get("endpoints", "")
        lines.append(f"| {metric} | {row['category']} | {row['protocol']} | {where} | {stats} | {cell.n} | {missing} |")
    return "\n".join(lines) + "\n"


def cdf(
    frame: pd.DataFrame, path: Path, title: str, metrics: tuple[str, ...] = ("first_audio_s", "first_speech_s", "total_s")
) -> Path | None:
    """Empirical CDFs of the timings (one line per timing and protocol); None when nothing was measured."""
    import matplotlib.pyplot as plt

    from stepeval.reporting import plots  # noqa: F401 - sets the Agg backend

    drawn = False
    fig, ax = plt.subplots(figsize=(7, 4))
    for (metric, protocol), part in frame[frame["metric"].isin(metrics)].groupby(["metric", "protocol"]):
        values = np.sort(part["value"].dropna().to_numpy())
        if not values.size:
            continue
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=f"{metric} ({protocol})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("seconds from t0: the request written (in-process: the backend call began)")
    ax.set_ylabel("share of turns")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_point(frame: pd.DataFrame, level: int, turns: int, wall_s: float, resamples: int = RESAMPLES) -> dict:
    """One concurrency level of a latency-throughput sweep: turns/s and p50/p95 of the first-response timings."""
    point: dict = {"concurrency": level, "turns": turns, "wall_s": round(wall_s, 4), "turns_per_s": round(turns / wall_s, 4)}
    point["protocol"] = sorted(set(frame["protocol"])) if len(frame) else []
    for metric in ("first_audio_s", "first_speech_s", "first_text_s", "total_s", "queue_s"):
        cell = summarise(frame[frame["metric"] == metric], resamples)
        point[metric] = {
            "p50": cell.estimates["p50"],
            "p95": cell.estimates["p95"],
            "p50_interval": [cell.low["p50"], cell.high["p50"]],
            "p95_interval": [cell.low["p95"], cell.high["p95"]],
            "mean": cell.estimates["mean"],
            "n": cell.n,
            "missing": cell.missing,
        }
    return point


def curve(points: list[dict], path: Path, title: str, metric: str = "first_audio_s") -> Path | None:
    """Latency against throughput: p50 and p95 of ``metric`` (y) vs turns/s (x), each point labelled with its
    concurrency per endpoint, the p95 with its bootstrap interval."""
    import matplotlib.pyplot as plt

    from stepeval.reporting import plots  # noqa: F401 - sets the Agg backend

    usable = [p for p in points if p[metric]["p50"] is not None]
    if not usable:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = [p["turns_per_s"] for p in usable]
    for key, style in (("p50", "o-"), ("p95", "s--")):
        y = [p[metric][key] for p in usable]
        lows = [p[metric][f"{key}_interval"][0] for p in usable]
        highs = [p[metric][f"{key}_interval"][1] for p in usable]
        err = None
        if all(v is not None for v in lows + highs):
            err = [
                [max(0.0, v - lo) for v, lo in zip(y, lows, strict=True)],
                [max(0.0, hi - v) for v, hi in zip(y, highs, strict=True)],
            ]
        ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=f"{key} {metric}")
    for p in usable:
        ax.annotate(
            f"c={p['concurrency']}", (p["turns_per_s"], p[metric]["p50"]), textcoords="offset points", xytext=(4, -12), fontsize=8
        )
    ax.set_xlabel("throughput (turns per second)")
    ax.set_ylabel(f"{metric} (s from the request written)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def display_rows(rows: list[dict]) -> list[dict]:
    """``table`` rows as strings for a page: each figure with its interval, and why turns are missing."""
    out = []
    for row in rows:
        cell, metric = row["cell"], row["metric"]
        shown = {k: _with_interval(cell, k, metric) for k in (*QUANTILES, "mean")}
        why = "; ".join(f"{n}: {reason}" for reason, n in row["why_missing"].items())
        out.append(
            {
                "metric": metric,
                "category": row["category"],
                "protocol": row["protocol"],
                "endpoints": row.get("endpoints", ""),
                **shown,
                "turns": cell.n,
                "missing": f"{cell.missing}" + (f" ({why})" if why else ""),
            }
        )
    return out


def load_sweep(path: Path) -> dict:
    """A sweep's ``sweep.json`` (scripts/latency_sweep.py), or the folder holding it; an error names the file."""
    import json

    path = Path(path)
    path = path / "sweep.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a latency sweep ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise ValueError(f"{path}: not a latency sweep (no points list)")
    return data


BOARD_METRICS = ("first_audio_s", "first_speech_s")


def board_entry(run_dir: Path, seed: int = DEFAULT_SEED, resamples: int = RESAMPLES) -> dict:
    """Flat leaderboard fields of one run: p50/p95 (with intervals) of the first-response timings and the protocol
    they were measured under; empty when the run timed nothing, numbers None when its turns mix protocols."""
    frame = latency_frame(run_dir)
    frame = frame[frame["metric"].isin(BOARD_METRICS)]
    if frame.empty or frame["value"].notna().sum() == 0:
        return {}
    protocols = sorted(set(frame["protocol"]))
    out: dict = {"latency_protocol": protocols[0] if len(protocols) == 1 else "mixed: " + " | ".join(protocols)}
    for metric in BOARD_METRICS:
        cell = summarise(frame[frame["metric"] == metric], resamples, seed) if len(protocols) == 1 else None
        for key in ("p50", "p95"):
            name = f"latency_{metric}_{key}"
            out[name] = None if cell is None else cell.estimates[key]
            out[f"{name}_low"] = None if cell is None else cell.low[key]
            out[f"{name}_high"] = None if cell is None else cell.high[key]
    return out


def board_cell(row: dict, metric: str, key: str) -> str:
    """'p50 [low, high]' of a leaderboard row, or what stands in for it."""
    if "latency_protocol" not in row:
        return "not timed"
    name = f"latency_{metric}_{key}"
    if row.get(name) is None:
        return "mixed protocols" if row["latency_protocol"].startswith("mixed") else "not measured"
    text = _fmt(row[name], metric)
    if row.get(f"{name}_low") is not None:
        text += f" [{_fmt(row[f'{name}_low'], metric)}, {_fmt(row[f'{name}_high'], metric)}]"
    return text


def board_note(rows: list[dict]) -> str | None:
    """Runs timed under different protocols are not ranked together: the note says so."""
    protocols = {row["latency_protocol"] for row in rows if row.get("latency_protocol")}
    if len(protocols) > 1:
        return "latency measured under different protocols (" + "; ".join(sorted(protocols)) + "): not comparable across them"
    return None
