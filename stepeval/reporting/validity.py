"""Reading a run's ``validation.json`` (written by ``stepeval validate-judge``) for tables and reports.

One line for leaderboards ("judge validated: 4/4 checks passed (...)" or "judge not validated") and
a view for the HTML report's "Judge validity" section. A validation whose rubric hashes differ from
the run's current judge rubrics is stale and said to be.
"""

from __future__ import annotations

import json
from pathlib import Path

FILE = "validation.json"
FORMAT = "stepeval-validation-v1"
NOT_VALIDATED = "judge not validated (run `stepeval validate-judge <run>`, docs/judging.md)"


def load(run_dir: Path) -> dict | None:
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data


def summarise(result: dict) -> dict:
    checks = result.get("checks", [])
    return {
        "checks_run": len(checks),
        "passed": sum(c["status"] == "passed" for c in checks),
        "failed": sum(c["status"] != "passed" for c in checks),
    }


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def check_figure(check: dict) -> str:
    return f"{check['name']} {_num(check.get('difference'))} p={_num(check.get('p_value'), 2)} {check['status']}"


def stale(result: dict, manifest: dict | None) -> list[str]:
    """Why the validation no longer describes the run's judge (rubric edited, other judge model)."""
    judge = (manifest or {}).get("judge") or {}
    current = judge.get("rubrics") or {}
    out = []
    for metric, rubric in (result.get("rubrics") or {}).items():
        now = (current.get(metric) or {}).get("sha256")
        if now is not None and now != rubric.get("sha256"):
            out.append(f"rubric {metric} changed since the validation")
    model = ((judge.get("endpoints") or {}).get("text") or {}).get("model")
    validated = (result.get("judge") or {}).get("model")
    if model and validated and model != validated:
        out.append(f"validated judge model {validated}, the run's judge is {model}")
    return out


def line(run_dir: Path, manifest: dict | None = None) -> str:
    """One line for under a leaderboard or table."""
    try:
        result = load(run_dir)
    except ValueError as err:
        return f"judge not validated ({err})"
    if result is None:
        return NOT_VALIDATED
    summary = result.get("summary") or summarise(result)
    if not summary["checks_run"]:
        return "judge not validated (validation.json has no control check)"
    figures = "; ".join(check_figure(c) for c in result["checks"])
    head = "judge validated" if summary["failed"] == 0 else "judge validation FAILED"
    text = f"{head}: {summary['passed']}/{summary['checks_run']} checks passed ({figures})"
    problems = stale(result, manifest)
    return text + (f" [not the run's current judge: {'; '.join(problems)}]" if problems else "")


def _coefficient_text(c: dict) -> str:
    if c.get("value") is None:
        return f"{c['name']} n/a"
    ci = f" [{_num(c['low'])}, {_num(c['high'])}]" if c.get("low") is not None else ""
    return f"{c['name']} {_num(c['value'])}{ci}"


def section(run_dir: Path, manifest: dict | None = None) -> dict:
    """What the report's "Judge validity" section shows."""
    try:
        result = load(run_dir)
    except ValueError as err:
        return {"line": f"judge not validated ({err})", "present": False}
    if result is None:
        return {"line": NOT_VALIDATED, "present": False}
    checks = [
        {
            "name": c["name"],
            "status": c["status"],
            "description": c["description"],
            "expected": c["expected"],
            "original": _num(c.get("baseline_mean")),
            "control": _num(c.get("candidate_mean")),
            "difference": _num(c.get("difference")),
            "interval": f"[{_num(c.get('low'))}, {_num(c.get('high'))}]" if c.get("low") is not None else "n/a",
            "p_value": _num(c.get("p_value"), 2),
            "counts": f"{c.get('turns', 0)} turns, {c.get('conversations', 0)} conv.",
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
    judge = result.get("judge") or {}
    return {
        "present": True,
        "line": line(run_dir, manifest),
        "created_at": result.get("created_at"),
        "judge": f"{judge.get('name')} ({judge.get('model')}, seed {judge.get('seed')})",
        "alpha": (result.get("settings") or {}).get("alpha"),
        "checks": checks,
        "sensitivity": sensitivity,
        "agreement": agreement,
        "stale": stale(result, manifest),
    }


def text(result: dict) -> str:
    """The validation as plain text for the terminal."""
    view_checks = [f"  {c['status'].upper():7} {c['name']}: {c['why']}" for c in result.get("checks", [])]
    lines = ["control checks:", *(view_checks or ["  (none run)"])]
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
    lines.append(f"{summary['passed']}/{summary['checks_run']} checks passed")
    return "\n".join(lines)
