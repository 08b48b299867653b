"""Reading judge validations (written by ``stepeval validate-judge``) for tables and reports.

A validation belongs to a judge, not to a run: each is stored under the identity of the judge it
validated (``judging.identity``), in ``<run>/validations/<judge key>/validation.json``. A table,
leaderboard row or report shows the validation of *its own* judge (the view's), or "not validated";
never another judge's. Where a validation of the same judge model exists but something that changes
verdicts differs (a rubric edited, another seed, another endpoint), the line says "stale" and names
what changed. A ``validation.json`` at the run's top level (written by earlier versions) is read as
the validation of the judge it names when that judge matches (model, endpoint, settings, rubrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepeval.judging import identity as judge_identity

FILE = "validation.json"
FOLDER = "validations"
FORMAT = "stepeval-validation-v2"
LEGACY_FORMAT = "stepeval-validation-v1"
STATUSES = ("passed", "failed", "inconclusive")


def path_for(run_dir: Path, identity: dict[str, Any]) -> Path:
    """Where the validation of the judge with this identity is stored."""
    return Path(run_dir) / FOLDER / judge_identity.key(identity) / FILE


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if data.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data


def _legacy_matches(data: dict, identity: dict[str, Any]) -> bool:
    """Whether a v1 run-level validation.json validated this judge (it recorded the client's identity)."""
    judge = data.get("judge") or {}
    models = identity.get("models") or {}
    endpoints = identity.get("endpoints") or {}
    if judge.get("model") != models.get("text"):
        return False
    if judge_identity.bare_url(judge.get("base_url")) != endpoints.get("text"):
        return False
    settings = identity.get("settings") or {}
    if any(k in judge and k in settings and judge[k] != settings[k] for k in judge_identity.VERDICT_SETTINGS):
        return False
    rubrics = identity.get("rubrics") or {}
    return all(rubrics.get(m) == (r or {}).get("sha256") for m, r in (data.get("rubrics") or {}).items())


def all_for(run_dir: Path) -> list[dict]:
    """Every validation stored in the run (unreadable ones raise, naming the file)."""
    folder = Path(run_dir) / FOLDER
    return [_read(p) for p in sorted(folder.glob(f"*/{FILE}"))] if folder.is_dir() else []


def find(run_dir: Path, identity: dict[str, Any] | None) -> tuple[dict | None, list[str]]:
    """(this judge's validation or None, what changed where only a stale one of the same model exists)."""
    if not identity:
        return None, []
    path = path_for(run_dir, identity)
    if path.is_file():
        return _read(path), []
    legacy = Path(run_dir) / FILE
    if legacy.is_file():
        data = _read(legacy)
        if data.get("format") == LEGACY_FORMAT and _legacy_matches(data, identity):
            return data, []
    slug = judge_identity.slug(identity)
    stale = [v for v in all_for(run_dir) if judge_identity.slug(v.get("identity")) == slug and v.get("identity")]
    if not stale:
        return None, []
    closest = min(stale, key=lambda v: len(judge_identity.differences(v["identity"], identity)))
    return None, judge_identity.differences(closest["identity"], identity)


def summarise(result: dict) -> dict:
    checks = result.get("checks", [])
    return {
        "checks_run": len(checks),
        **{status: sum(c["status"] == status for c in checks) for status in STATUSES},
    }


def verdict_word(summary: dict) -> str:
    """'validated' (every check passed), 'validation FAILED' (any failed), else 'validation INCONCLUSIVE'."""
    if summary.get("failed"):
        return "validation FAILED"
    if summary.get("inconclusive"):
        return "validation INCONCLUSIVE"
    return "validated"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def check_figure(check: dict) -> str:
    if check.get("control") == "wer":
        return f"{check['name']} {_num(check.get('per_wer_point'))}/pt {check['status']}"
    if check.get("control") == "agreement":
        return f"{check['name']} {_num(check.get('value'))} {check['status']}"
    return f"{check['name']} {_num(check.get('difference'))} p={_num(check.get('p_value'), 2)} {check['status']}"


def _judge_section(manifest: dict | None, judge: dict | None) -> dict | None:
    return judge if judge is not None else (manifest or {}).get("judge")


def line(run_dir: Path, manifest: dict | None = None, judge: dict | None = None) -> str:
    """One line for under a table or leaderboard row: the validation of the judge of ``judge`` (a view's
    judge section; default: the manifest's), or why there is none."""
    identity = judge_identity.of(_judge_section(manifest, judge))
    if identity is None:
        return "no judge ran"
    name = judge_identity.key(identity)
    try:
        result, changed = find(run_dir, identity)
    except ValueError as err:
        return f"judge {name} not validated ({err})"
    if result is None:
        if changed:
            slug = judge_identity.slug(identity)
            return f"judge {name} not validated (stale: a validation of {slug} exists; changed: {'; '.join(changed)})"
        return f"judge {name} not validated (run `stepeval validate-judge <view>`, docs/judging.md)"
    summary = summarise(result)
    if not summary["checks_run"]:
        return f"judge {name} not validated (its validation has no check)"
    figures = "; ".join(check_figure(c) for c in result["checks"])
    counts = f"{summary['passed']}/{summary['checks_run']} checks passed"
    if summary["inconclusive"]:
        counts += f", {summary['inconclusive']} inconclusive"
    return f"judge {name} {verdict_word(summary)}: {counts} ({figures})"


TABLE_PREFIX = "Judge validity: "


def refresh_table(view_folder: Path, judge: dict | None) -> None:
    """Put (or replace) the line under a view's ``table.md``: its own judge's validation."""
    path = Path(view_folder) / "table.md"
    if not path.is_file() or judge_identity.of(judge) is None:
        return
    kept = [row for row in path.read_text(encoding="utf-8").rstrip("\n").split("\n") if not row.startswith(TABLE_PREFIX)]
    while kept and not kept[-1].strip():
        kept.pop()
    text = line(Path(view_folder).parent.parent, judge=judge)
    path.write_text("\n".join(kept) + f"\n\n{TABLE_PREFIX}{text}\n", encoding="utf-8")


def refresh_tables(run_dir: Path) -> None:
    """Every view's table line (after a validation: the views of the judge validated now say so)."""
    from stepeval import views

    for found in sorted((Path(run_dir) / views.VIEWS_DIR).glob(f"*/{views.VIEW_FILE}")):
        try:
            view = views.load(found.parent)
        except ValueError:
            continue
        refresh_table(found.parent, view.description.get("judge"))


def _coefficient_text(c: dict) -> str:
    if c.get("value") is None:
        return f"{c['name']} n/a"
    ci = f" [{_num(c['low'])}, {_num(c['high'])}]" if c.get("low") is not None else ""
    return f"{c['name']} {_num(c['value'])}{ci}"


def section(run_dir: Path, manifest: dict | None = None, judge: dict | None = None) -> dict:
    """What the report's "Judge validity" section shows, for the view's own judge."""
    identity = judge_identity.of(_judge_section(manifest, judge))
    text = line(run_dir, manifest, judge)
    try:
        result, changed = find(run_dir, identity)
    except ValueError:
        result, changed = None, []
    if result is None:
        return {"line": text, "present": False, "stale": changed}
    checks = [
        {
            "name": c["name"],
            "status": c["status"],
            "description": c["description"],
            "expected": c["expected"],
            "original": _num(c.get("baseline_mean")),
            "control": _num(c.get("candidate_mean", c.get("per_wer_point", c.get("value")))),
            "difference": _num(c.get("difference")),
            "interval": f"[{_num(c.get('low'))}, {_num(c.get('high'))}]" if c.get("low") is not None else "n/a",
            "p_value": _num(c.get("p_value"), 2),
            "counts": f"{c.get('turns', c.get('items', 0))} items, {c.get('conversations', 0)} conv.",
            "why": c["why"],
        }
        for c in result.get("checks", [])
    ]
    sensitivity = [
        {
            "metric": s["metric"],
            "slope": _num(s.get("per_wer_point")),
            "interval": f"[{_num(s.get('low'))}, {_num(s.get('high'))}]" if s.get("low") is not None else "n/a",
            "rates": ", ".join(
                f"{r['rate']:g} (realized {_num(r.get('realized_wer'), 2)}): {_num(r.get('difference'))}" for r in s["rates"]
            ),
        }
        for s in result.get("sensitivity", [])
    ]
    agreement = [
        {
            "kind": a["kind"],
            "metric": a["metric"],
            "raters": " vs ".join(a["raters"]) if len(a["raters"]) <= 3 else f"{len(a['raters'])} raters",
            "items": f"{a['items']} items, {a['conversations']} conv.",
            "figures": "; ".join(_coefficient_text(c) for c in a.get("coefficients", [])) or a.get("note", ""),
        }
        for a in result.get("agreement", [])
    ]
    judge_info = result.get("judge") or {}
    return {
        "present": True,
        "line": text,
        "created_at": result.get("created_at"),
        "judge": f"{judge_identity.key(identity)}: {judge_info.get('name')} "
        f"({judge_info.get('model')}, seed {judge_info.get('seed')})",
        "alpha": (result.get("settings") or {}).get("alpha"),
        "checks": checks,
        "sensitivity": sensitivity,
        "agreement": agreement,
        "stale": [],
    }


def text(result: dict) -> str:
    """The validation as plain text for the terminal."""
    view_checks = [f"  {c['status'].upper():12} {c['name']}: {c['why']}" for c in result.get("checks", [])]
    lines = [f"judge {result.get('judge_key', '?')}", "checks:", *(view_checks or ["  (none run)"])]
    if result.get("sensitivity"):
        lines.append("sensitivity to word errors (score change per WER point, 95% interval):")
        for s in result["sensitivity"]:
            ci = f" [{_num(s.get('low'))}, {_num(s.get('high'))}]" if s.get("low") is not None else ""
            lines.append(f"  {s['metric']}: {_num(s.get('per_wer_point'))}{ci}")
    if result.get("agreement"):
        lines.append("agreement:")
        for a in result["agreement"]:
            figures = "; ".join(_coefficient_text(c) for c in a.get("coefficients", [])) or a.get("note", "")
            lines.append(f"  {a['kind']} {a['metric']} ({' vs '.join(a['raters'][:3])}, {a['items']} items): {figures}")
    summary = result.get("summary") or summarise(result)
    tail = f", {summary['inconclusive']} inconclusive" if summary.get("inconclusive") else ""
    lines.append(f"{summary['passed']}/{summary['checks_run']} checks passed{tail}: judge {verdict_word(summary)}")
    return "\n".join(lines)
