"""The package layering docs/architecture.md documents: a module imports only from its own layer or below.

Read from the source with ``ast`` (imports inside functions count too), so a shortcut that climbs back up
the layers fails here, naming the module and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stepeval"

# bottom to top; a top-level module or package of stepeval belongs to exactly one layer
LAYERS: list[set[str]] = [
    {
        "__init__",
        "types",
        "records",
        "secrets",
        "store",
        "audio",
        "provenance",
        "applicability",
        "views",
        "config",
        "conf",
        "threads",
    },
    {"transport", "data"},
    {"asr", "signals", "judging"},
    {"backends", "client", "conditions"},
    {"stages"},
    {"reporting"},
    {"pipeline", "fleet", "validation", "arena"},
    {"cli", "hydra_app", "__main__"},
]


def layer_of(part: str) -> int:
    for number, names in enumerate(LAYERS):
        if part in names:
            return number
    raise AssertionError(f"stepeval.{part} is in no layer: add it to LAYERS and to docs/architecture.md")


def imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = node.module.split(".")
            if names[0] == "stepeval" and len(names) > 1:
                parts.add(names[1])
            elif names[0] == "stepeval":  # from stepeval import x: a module, or a name of stepeval/__init__.py
                for alias in node.names:
                    is_module = (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                    parts.add(alias.name if is_module else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "stepeval" and len(names) > 1:
                    parts.add(names[1])
    return parts


def test_every_module_imports_only_from_its_layer_or_below():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for part in imported_parts(path):
            if layer_of(part) > layer_of(own):
                violations.append(f"{path.relative_to(PACKAGE.parent)} imports stepeval.{part}")
    assert violations == []


def test_the_check_catches_a_climb(tmp_path: Path):
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from stepeval.pipeline import run\n")
    assert imported_parts(module) == {"pipeline"}
    assert layer_of("pipeline") > layer_of("store")
