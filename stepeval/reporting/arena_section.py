"""The arena's figures and page section, drawn from an ``arena.json`` (``stepeval arena``): the win-rate matrix as
a heat map, the Bradley-Terry strengths with their intervals as a forest plot, and the tables beside them.

Used by ``stepeval arena`` for ``arena.html`` and by ``stepeval report --arena`` for a section of the run's page;
it reads the JSON only (the reporting layer sits below the arena), so both pages show exactly what the file says.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "templates"
NEVER_MET = "never met"
REQUIRED = ("rubric", "rubric_sha256", "judge", "systems", "overall", "controls")


def load(path: Path) -> dict:
    """An ``arena.json``; a clear error naming the file (and the key) when it is not one."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"--arena {path}: cannot read it ({err.strerror or err})") from err
    except ValueError as err:
        raise ValueError(f"--arena {path}: not JSON ({err})") from err
    if not isinstance(result, dict):
        raise ValueError(f"--arena {path}: not an arena.json written by stepeval arena (not an object)")
    absent = [key for key in REQUIRED if key not in result]
    if absent:
        raise ValueError(f"--arena {path}: not an arena.json written by stepeval arena (no {absent[0]!r})")
    return result


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(low: float | None, high: float | None, digits: int = 3) -> str:
    return "no CI" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def heatmap(ranking: dict, path: Path, title: str) -> Path | None:
    """Win rate of each row system against each column system, annotated with its interval and the number of
    comparisons; a pair that never met is grey and says so. Systems in rank order. None: fewer than two systems."""
    names = [r["system"] for r in sorted(ranking["systems"], key=lambda r: r["rank"])]
    n = len(names)
    if n < 2:
        return None
    rates = np.full((n, n), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            cell = ranking["win_rate"].get(a, {}).get(b)
            if i != j and cell and cell["comparisons"] and cell["rate"] is not None:
                rates[i, j] = cell["rate"]
    size = 1.5 * n + 2.6
    fig, ax = plt.subplots(figsize=(size, 1.15 * n + 2.0))
    cmap = plt.get_cmap("RdBu").with_extremes(bad="#e4e4e4")
    image = ax.imshow(np.ma.masked_invalid(rates), cmap=cmap, vmin=0.0, vmax=1.0)
    font = 9 if n <= 5 else 7
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                ax.text(j, i, "-", ha="center", va="center", color="#777", fontsize=font)
                continue
            cell = ranking["win_rate"].get(a, {}).get(b) or {}
            if not cell.get("comparisons") or cell.get("rate") is None:  # hatched: no data, not a value
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="#c4c4c4", linewidth=0))
                ax.text(
                    j,
                    i,
                    NEVER_MET,
                    ha="center",
                    va="center",
                    color="#444",
                    fontsize=font,
                    style="italic",
                    bbox={"facecolor": "#e4e4e4", "edgecolor": "none", "pad": 1.5},
                )
                continue
            text = f"{cell['rate']:.2f}\n{_interval(cell['low'], cell['high'], 2)}\nn={cell['comparisons']}"
            dark = abs(cell["rate"] - 0.5) > 0.3
            ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=font)
    ax.set_xticks(range(n), [_wrap(b) for b in names], fontsize=font + 1)
    ax.set_yticks(range(n), [_wrap(a) for a in names], fontsize=font + 1)
    ax.set_xlabel("against (column)")
    ax.set_ylabel("row system's win rate")
    ax.set_title(title, fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="win rate (ties count half)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def forest(ranking: dict, controls: dict[str, str], path: Path, title: str) -> Path | None:
    """Bradley-Terry strengths (centred on 0) with their intervals, strongest on top; derived controls in another
    colour and marked as such; P(rank) written beside each. None: no system."""
    rows = sorted(ranking["systems"], key=lambda r: (r["rank"], r["system"]))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(rows) + 1.6))
    for y, row in enumerate(rows):
        control = row["system"] in controls
        color = "#dd8452" if control else "#4c72b0"
        if row["low"] is not None and row["high"] is not None:
            ax.plot([row["low"], row["high"]], [y, y], color=color, linewidth=2.2, solid_capstyle="butt")
        if row["strength"] is not None:
            ax.plot([row["strength"]], [y], marker="s" if control else "o", color=color, markersize=8)
        prob = "" if row["rank_probability"] is None else f"   P(rank {row['rank']}) = {row['rank_probability']:.2f}"
        ax.annotate(prob, xy=(1.0, y), xycoords=("axes fraction", "data"), va="center", fontsize=8, color="#333")
    labels = [
        f"{r['rank']}. {r['system']}" + (f"\n(control of {controls[r['system']]})" if r["system"] in controls else "")
        for r in rows
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.axvline(0.0, color="#999", linewidth=0.8, linestyle="--")
    ax.set_xlabel("Bradley-Terry strength (log odds, mean 0) with 95% interval")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rows(ranking: dict, controls: dict[str, str]) -> list[dict]:
    return [
        {
            "rank": r["rank"],
            "system": r["system"],
            "control_of": controls.get(r["system"]),
            "strength": _num(r["strength"]),
            "interval": _interval(r["low"], r["high"]),
            "rank_probability": _num(r["rank_probability"], 2),
        }
        for r in sorted(ranking["systems"], key=lambda r: (r["rank"], r["system"]))
    ]


def _matrix(ranking: dict) -> dict:
    names = [r["system"] for r in sorted(ranking["systems"], key=lambda r: (r["rank"], r["system"]))]
    rows = []
    for a in names:
        cells = []
        for b in names:
            cell = ranking["win_rate"].get(a, {}).get(b)
            if a == b:
                cells.append({"kind": "self", "against": b, "text": "-"})
            elif not cell or not cell["comparisons"] or cell["rate"] is None:
                cells.append({"kind": "never", "against": b, "text": NEVER_MET})
            else:
                cells.append(
                    {
                        "kind": "value",
                        "against": b,
                        "rate": _num(cell["rate"]),
                        "interval": _interval(cell["low"], cell["high"]),
                        "comparisons": cell["comparisons"],
                    }
                )
        rows.append({"system": a, "cells": cells})
    return {"names": names, "rows": rows}


def _judge_line(judge: dict) -> str:
    shown = [f"{k}={v}" for k, v in judge.items() if k not in ("rubric", "rubric_sha256") and v not in (None, "")]
    return ", ".join(shown)


def section(result: dict, folder: Path, stem: str, source: str = "arena.json") -> dict:
    """What the arena part of a page shows, with its two figures saved as ``<stem>_heatmap.png`` and
    ``<stem>_forest.png`` in ``folder`` and embedded as data URIs (the page stands alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    controls = {s["system"]: s["control_of"] for s in result["systems"] if s.get("control_of")}
    overall = result["overall"]
    heat = heatmap(overall, folder / f"{stem}_heatmap.png", f"Win rate of row against column ({result['rubric']})")
    tree = forest(overall, controls, folder / f"{stem}_forest.png", f"Bradley-Terry strengths ({result['rubric']})")
    judge = result["judge"]
    return {
        "source": source,
        "rubric": result["rubric"],
        "rubric_sha256": result["rubric_sha256"],
        "judge_model": judge.get("model", "?"),
        "judge_line": _judge_line(judge),
        "systems": [{"system": s["system"], "source": s["source"], "control_of": s.get("control_of")} for s in result["systems"]],
        "measured": [s["system"] for s in result["systems"] if not s.get("control_of")],
        "comparisons": overall["comparisons"],
        "conversations": overall["conversations"],
        "planned": result.get("comparisons_planned"),
        "requests": result.get("requests") or {},
        "missing": result.get("missing", 0),
        "missing_reasons": result.get("missing_reasons") or [],
        "position_bias_rate": _num(result.get("position_bias_rate")),
        "order_dependent_rate": _num(result.get("order_dependent_rate")),
        "model": overall.get("model", ""),
        "interval": overall.get("interval") or {},
        "seed": overall.get("seed"),
        "ranking": _rows(overall, controls),
        "matrix": _matrix(overall),
        "heatmap": heat,
        "forest": tree,
        "heatmap_uri": _png_uri(heat),
        "forest_uri": _png_uri(tree),
        "controls": [
            {
                **c,
                "rate": _num(c.get("origin_win_rate")),
                "interval_text": _interval(c.get("low"), c.get("high")),
            }
            for c in result["controls"]
        ],
        "categories": [
            {
                "name": name,
                "comparisons": ranking["comparisons"],
                "conversations": ranking["conversations"],
                "ranking": _rows(ranking, controls),
            }
            for name, ranking in sorted((result.get("by_category") or {}).items())
        ],
    }


def _png_uri(path: Path | None) -> str | None:
    return None if path is None else "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _wrap(text: str, width: int = 14) -> str:
    words, lines, line = str(text).replace("+", " +").split(), [], ""
    for word in words:
        if line and len(line) + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line}{word}" if word.startswith("+") else f"{line} {word}".strip()
    return "\n".join([*lines, line])
