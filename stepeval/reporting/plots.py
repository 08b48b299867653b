"""Charts for the report (matplotlib, Agg backend: no display needed): a radar by category and
bar charts with their 95% intervals."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stepeval.reporting.tables import OVERALL  # noqa: E402

RADAR_MAX = 6


def _unit_metrics(table: dict, directions: dict[str, bool | None]) -> list[str]:
    """Up to RADAR_MAX metrics whose category means all lie in [0, 1] (the radar's one axis scale): those that
    vary across categories and cover them all first, then by direction (higher-is-better, lower, neutral).
    A metric constant over every category says nothing by category and is left off when others remain."""
    ranked = []
    order = {True: 0, False: 1, None: 2}
    for metric, entry in table["metrics"].items():
        if entry is None:
            continue
        means = [c.mean for c in entry["by_category"].values() if c.mean is not None]
        if means and all(0.0 <= m <= 1.0 for m in means):
            constant = max(means) - min(means) < 1e-12
            gaps = len(table["categories"]) - len(means)
            ranked.append(((constant, gaps, order[directions.get(metric)]), metric))
    ranked.sort()
    varying = [m for key, m in ranked if not key[0]]
    return (varying or [m for _, m in ranked])[:RADAR_MAX]


def radar(table: dict, path: Path, title: str, directions: dict[str, bool | None]) -> tuple[Path | None, str]:
    """Radar of per-category means for [0, 1] metrics. Returns (png path or None, note)."""
    categories = table["categories"]
    metrics = _unit_metrics(table, directions)
    skipped = [m for m, e in table["metrics"].items() if e is not None and m not in metrics]
    if len(categories) < 3 or not metrics:
        return None, f"no radar: it needs at least 3 categories and a metric on a 0-1 scale (have {len(categories)} categories)"
    angles = np.linspace(0, 2 * math.pi, len(categories), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(8, 7), subplot_kw={"projection": "polar"})
    for metric in metrics:
        cells = table["metrics"][metric]["by_category"]
        values = [cells[c].mean if c in cells and cells[c].mean is not None else np.nan for c in categories]
        arrow = {True: " (higher better)", False: " (lower better)"}.get(directions.get(metric), "")
        ax.plot([*angles, angles[0]], [*values, values[0]], marker="o", linewidth=1.5, label=metric + arrow)
        if not np.isnan(values).any():  # a gap (no scored turn, not applicable) would make the fill lie
            ax.fill([*angles, angles[0]], [*values, values[0]], alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels([_wrap(c) for c in categories], fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=11, pad=24)
    ax.legend(loc="upper right", bbox_to_anchor=(1.32, 1.12), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    note = "category means of metrics on a 0-1 scale; a gap: no scored turn in that category, or not applicable to it"
    if skipped:
        note += f"; not on the radar (other scales, or more than {RADAR_MAX}): {', '.join(skipped)}"
    return path, note


def bars(table: dict, path: Path, title: str) -> Path | None:
    """One panel per metric with a scored turn: category means (and overall) with 95% interval whiskers."""
    metrics = [m for m, e in table["metrics"].items() if e is not None and e[OVERALL].mean is not None]
    if not metrics:
        return None
    labels = [*table["categories"], OVERALL]
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 0.3 * len(labels) * rows + 1.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        entry = table["metrics"][metric]
        cells = [entry[OVERALL] if lab == OVERALL else entry["by_category"].get(lab) for lab in labels]
        means = np.array([c.mean if c is not None and c.mean is not None else np.nan for c in cells], dtype=float)
        low = np.array([c.low if c is not None and c.low is not None else np.nan for c in cells], dtype=float)
        high = np.array([c.high if c is not None and c.high is not None else np.nan for c in cells], dtype=float)
        err = np.vstack([np.nan_to_num(means - low), np.nan_to_num(high - means)])
        y = np.arange(len(labels))
        colors = ["#4c72b0"] * (len(labels) - 1) + ["#dd8452"]
        ax.barh(y, np.nan_to_num(means), xerr=err, color=colors, capsize=3, ecolor="#333333")
        excluded = table.get("not_applicable", {}).get(metric, [])
        for yi, m, lab in zip(y, means, labels, strict=True):
            if np.isnan(m):
                text = " not applicable" if lab in excluded else " no scored turn"
                ax.text(0, yi, text, va="center", fontsize=8, color="#888" if lab in excluded else "#a00")
        if np.nanmin(np.append(low, means)) >= 0:  # counts, rates, scores: start the axis at zero
            ax.set_xlim(left=0, right=max(float(np.nanmax(np.append(high, means))) * 1.05, 1e-9) if np.nanmax(means) > 0 else 1)
        ax.set_yticks(y)
        ax.set_yticklabels([_wrap(lab, 24) for lab in labels], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 16) -> str:
    words, lines, line = str(text).split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
