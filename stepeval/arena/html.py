"""``arena.html``: the arena as one self-contained page (heat map of the win-rate matrix, forest plot of the
Bradley-Terry strengths, rank probabilities, position bias, controls, judge identity, per-category strengths).

The page needs the ``report`` extra (jinja2, matplotlib); without it ``stepeval arena`` says so in one line and
still writes ``arena.json`` and ``arena.md``. The figures are also saved as PNG next to the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXTRA_LINE = "stepeval arena: arena.html not written: it needs the report extra (pip install 'stepeval[report]')"


def write(out: Path, result: dict) -> Path | None:
    """Write ``<out>/arena.html`` (and its PNGs) from the arena's result; None when the report extra is absent."""
    try:
        import jinja2

        from stepeval.reporting import arena_section
    except ImportError:
        print(EXTRA_LINE, file=sys.stderr)
        return None
    from stepeval import __version__

    out = Path(out)
    arena = arena_section.section(result, out, "arena", source=str(out / "arena.json"))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(arena_section.TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    page = out / "arena.html"
    page.write_text(env.get_template("arena.html.j2").render(arena=arena, version=__version__), encoding="utf-8")
    return page
