"""Views: one way of looking at a run's replies, with its own summary and table.

A run folder holds the replies of one (dataset, model, history, seed): replaying is the expensive,
shared part. Everything computed from the replies depends on more: which conversations (``limit``),
which ASR, which judge and rubrics, which signals and metrics config. Each such combination is a
*view*, stored in ``views/<name>/`` (``view.json``, ``summary.json``, ``table.md``) and listed in the
manifest, so a smoke run with ``limit=2`` next to the full run, or a second judge, never overwrites
another view's numbers.

``view.json`` holds the exact selection: for every record log, the fingerprint of the record the view
uses for each (conversation, turn). Every reader of scores (table, leaderboard, report, compare)
selects those records and no others, so verdicts of another judge or rubric never mix in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepeval.records import Key
from stepeval.store import fingerprint, load_manifest, safe_name, write_json_atomic

VIEWS_DIR = "views"
VIEW_FILE = "view.json"


def _key_text(key: Key) -> str:
    return f"{key[0]}\t{key[1]}"


def _text_key(text: str) -> Key:
    conversation, turn = text.rsplit("\t", 1)
    return (conversation, int(turn))


@dataclass
class View:
    """What a view looks at (``description``) and exactly which records it uses (``selection``)."""

    name: str
    description: dict[str, Any]
    selection: dict[str, dict[Key, str]] = field(default_factory=dict)  # log name -> key -> fingerprint

    @property
    def subset(self) -> bool:
        return bool(self.description.get("subset"))

    @property
    def label(self) -> str:
        """'subset: 2 of 10 conversations' for a subset view, '' for a full one."""
        return subset_label(self.description)

    @property
    def keys(self) -> list[Key]:
        return [_text_key(k) for k in self.description.get("keys", [])]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "selection": {log: {_key_text(k): fp for k, fp in chosen.items()} for log, chosen in self.selection.items()},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> View:
        selection = {log: {_text_key(k): fp for k, fp in chosen.items()} for log, chosen in raw.get("selection", {}).items()}
        return cls(raw["name"], raw.get("description", {}), selection)


def subset_label(description: dict[str, Any]) -> str:
    if not description.get("subset"):
        return ""
    return f"subset: {description.get('conversations')} of {description.get('dataset_conversations')} conversations"


def describe(
    keys: list[Key],
    dataset_conversations: int,
    limit: int | None,
    asr: dict[str, Any] | None,
    judge: dict[str, Any],
    signals: dict[str, Any],
    metrics: dict[str, Any],
    names: dict[str, str],
) -> tuple[str, dict[str, Any]]:
    """The view's name and description. The name reads as what it is (subset, ASR, judge, metrics
    config) and ends in a hash of everything the numbers depend on, so two views never share one.
    ``names['judge']`` is the judge's slug (``judging.identity.slug``: the judge model, not its config
    group), so two views that differ by judge read as two judges."""
    conversations = len({k[0] for k in keys})
    description = {
        "subset": conversations < dataset_conversations,
        "limit": limit,
        "conversations": conversations,
        "dataset_conversations": dataset_conversations,
        "turns": len(keys),
        "keys": [_key_text(k) for k in keys],
        "asr": asr,
        "judge": judge,
        "signals": signals,
        "metrics": metrics,
        "names": names,
    }
    digest = fingerprint(_without_names(description))[:8]
    scope = f"first{conversations}" if description["subset"] else "all"
    name = safe_name(f"{scope}-asr_{names['asr']}-judge_{names['judge']}-metrics_{names['metrics']}-{digest}")
    return name, description


def _without_names(description: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in description.items() if k != "names"}


def migrate(run_dir: Path, view: View) -> str | None:
    """Rename the folder of the same view saved under an older name (before view names carried the judge
    model's slug they said ``judge_<config group>``) to ``view.name``; the old name, or None.

    Same view: same digest and the same description apart from the names. Views that are not renamed
    (other numbers, or a run not rerun) keep their folders and open as before."""
    folder = Path(run_dir) / VIEWS_DIR
    digest = view.name.rsplit("-", 1)[-1]
    target = view_dir(run_dir, view.name)
    if target.exists() or not folder.is_dir():
        return None
    for old in sorted(folder.glob(f"*-{digest}")):
        try:
            found = load(old)
        except ValueError:
            continue
        if old.name != view.name and _without_names(found.description) == _without_names(view.description):
            old.rename(target)
            return old.name
    return None


def view_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / VIEWS_DIR / name


def save(run_dir: Path, view: View) -> Path:
    folder = view_dir(run_dir, view.name)
    write_json_atomic(folder / VIEW_FILE, view.to_json())
    return folder


def load(folder: Path) -> View:
    path = Path(folder) / VIEW_FILE
    try:
        return View.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: not a readable stepeval view ({err})") from err


def resolve(path: Path) -> tuple[Path, View | None]:
    """(run folder, view) for a path given by a user: a view folder (``<run>/views/<name>``) or a run
    folder. A run folder with one view means that view; with several, the user must say which (the
    error lists them); a run made before views existed has none (None: read it the old way)."""
    path = Path(path)
    if (path / VIEW_FILE).is_file():
        return path.parent.parent, load(path)
    folder = path / VIEWS_DIR
    found = sorted(p.parent for p in folder.glob(f"*/{VIEW_FILE}")) if folder.is_dir() else []
    if not found:
        return path, None
    if len(found) == 1:
        return path, load(found[0])
    listing = load_manifest(path).get("views", {})
    names = ", ".join(
        f"{p.name}{' (' + subset_label(listing.get(p.name, {})) + ')' if listing.get(p.name, {}).get('subset') else ''}"
        for p in found
    )
    raise ValueError(f"{path} holds {len(found)} views ({names}): pass one of them as {path}/{VIEWS_DIR}/<name>")
