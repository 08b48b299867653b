"""Put the demo's comparison table into the README, from a real run (so the README shows what `make eval` prints).

    make readme-demo          # runs `make eval`, then this script on results/sweeps/comparison.md
    python scripts/readme_demo.py [results/sweeps/comparison.md]

The table goes between the ``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->`` lines of README.md;
tests/test_pipeline.py runs the demo and checks that the README still matches it.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"


def table_lines(comparison: str) -> list[str]:
    """The Markdown table at the top of a sweep's comparison.md (its rows, no notes)."""
    lines = []
    for line in comparison.splitlines():
        if not line.startswith("|"):
            if lines:
                break
            continue
        lines.append(line)
    return lines


def readme_block(readme: str) -> list[str]:
    """The table lines currently between the markers."""
    inside = readme.split(START, 1)[1].split(END, 1)[0]
    return [line for line in inside.splitlines() if line.startswith("|")]


def replace_block(readme: str, lines: list[str]) -> str:
    before, rest = readme.split(START, 1)
    after = rest.split(END, 1)[1]
    return f"{before}{START}\n```\n" + "\n".join(lines) + f"\n```\n{END}{after}"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else REPO / "results" / "sweeps" / "comparison.md"
    lines = table_lines(source.read_text(encoding="utf-8"))
    if not lines:
        print(f"{source}: no table found", file=sys.stderr)
        return 1
    readme = REPO / "README.md"
    readme.write_text(replace_block(readme.read_text(encoding="utf-8"), lines), encoding="utf-8")
    print(f"README.md: demo table updated from {source} ({len(lines) - 2} metrics)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
