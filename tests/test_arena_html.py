"""arena.html: the arena as a page (heat map of the win-rate matrix, forest plot of the strengths, controls), its
values checked against the arena.json it was drawn from, in real headless Chromium."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from stepeval.arena import html
from stepeval.reporting import arena_section
from tests import arena_results, cdp


@pytest.fixture(scope="module")
def arena_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("arena")
    result = arena_results.result()
    (out / "arena.json").write_text(json.dumps(result))
    assert html.write(out, result) == out / "arena.html"
    return out


def pairs(result: dict) -> list[tuple[str, str, dict]]:
    return [(a, b, cell) for a, row in result["overall"]["win_rate"].items() for b, cell in row.items()]


def test_the_page_stands_alone_with_both_figures_saved_beside_it(arena_dir: Path):
    page = (arena_dir / "arena.html").read_text()
    for name in ("arena_heatmap.png", "arena_forest.png"):
        with Image.open(arena_dir / name) as image:
            image.verify()
    assert page.count('src="data:image/png;base64,') == 2
    result = json.loads((arena_dir / "arena.json").read_text())
    never = [(a, b) for a, b, cell in pairs(result) if not cell["comparisons"]]
    assert never and page.count(">never met<") == len(never)  # the control met only its origin


def test_without_the_report_extra_it_says_so_in_one_line(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "jinja2", None)  # as if the extra were not installed: the import fails
    assert html.write(tmp_path, arena_results.result(resamples=20)) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the report extra" in err
    assert not (tmp_path / "arena.html").exists()


def test_a_file_that_is_not_an_arena_json_is_refused_by_name(tmp_path: Path):
    path = tmp_path / "leaderboard.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match=r"leaderboard\.json: not an arena\.json .*'rubric'"):
        arena_section.load(path)
    with pytest.raises(ValueError, match=r"absent\.json: cannot read it"):
        arena_section.load(tmp_path / "absent.json")


READ = """(() => {
  const rows = id => [...document.querySelectorAll('#' + id + ' tr[data-system]')];
  const image = id => { const im = document.getElementById(id);
    return {w: im.naturalWidth, h: im.naturalHeight, done: im.complete}; };
  return {
    heatmap: image('arena-heatmap'), forest: image('arena-forest'),
    strengths: rows('arena-strengths').map(r => ({system: r.dataset.system, rank: r.querySelector('.rank').textContent,
      strength: r.querySelector('.strength').textContent, interval: r.querySelector('.interval').textContent,
      p: r.querySelector('.rank-probability').textContent})),
    matrix: rows('arena-matrix').flatMap(r => [...r.querySelectorAll('td[data-against]')].map(c => ({row: r.dataset.system,
      col: c.dataset.against, kind: c.className, text: c.innerText}))),
    controls: [...document.querySelectorAll('#arena-controls tr[data-control]')].map(r => ({control: r.dataset.control,
      rate: r.querySelector('.rate').textContent, interval: r.querySelector('.interval').textContent,
      n: r.querySelector('.comparisons').textContent, result: r.querySelector('.result').textContent.trim()})),
    categories: [...document.querySelectorAll('table.arena-category')].map(t => t.dataset.category),
    sha: document.getElementById('arena-rubric-sha').textContent,
    bias: document.getElementById('arena-position-bias').textContent,
    order: document.getElementById('arena-order-dependent').textContent,
  };
})()"""


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.replace("[", " ").replace("]", " ").replace(",", " ").replace("n=", " ").split()]


@pytest.mark.slow
@pytest.mark.skipif(cdp.binary() is None, reason="no chromium (apt-get install chromium)")
def test_the_page_in_headless_chromium_shows_the_figures_and_the_values_of_arena_json(arena_dir: Path, tmp_path: Path):
    result = json.loads((arena_dir / "arena.json").read_text())
    browser = cdp.Browser(tmp_path / "profile")
    try:
        browser.open((arena_dir / "arena.html").as_uri())
        browser.wait_for("document.readyState === 'complete'")
        page = browser.evaluate(READ)
    finally:
        browser.close()
    for figure in ("heatmap", "forest"):  # decoded by the browser, not a broken image
        assert page[figure]["done"] and page[figure]["w"] > 300 and page[figure]["h"] > 200, page[figure]

    systems = {r["system"]: r for r in result["overall"]["systems"]}
    assert [r["system"] for r in page["strengths"]] == sorted(systems, key=lambda s: systems[s]["rank"])
    for row in page["strengths"]:
        expected = systems[row["system"]]
        assert int(row["rank"]) == expected["rank"]
        assert float(row["strength"]) == pytest.approx(expected["strength"], abs=6e-4)
        assert numbers(row["interval"]) == pytest.approx([expected["low"], expected["high"]], abs=6e-4)
        assert float(row["p"]) == pytest.approx(expected["rank_probability"], abs=5e-3)

    cells = {(c["row"], c["col"]): c for c in page["matrix"]}
    assert len(cells) == len(systems) ** 2
    for a, b, cell in pairs(result):
        shown = cells[(a, b)]
        if not cell["comparisons"]:
            assert shown["kind"] == "never" and shown["text"] == "never met"
        else:
            rate, low, high, n = numbers(shown["text"])
            assert [rate, low, high] == pytest.approx([cell["rate"], cell["low"], cell["high"]], abs=6e-4)
            assert n == cell["comparisons"]
    assert all(cells[(s, s)]["kind"] == "self" for s in systems)

    assert len(page["controls"]) == len(result["controls"]) == 1
    control, shown = result["controls"][0], page["controls"][0]
    assert shown["control"] == control["control"] and shown["result"] == control["result"] == "pass"
    assert float(shown["rate"]) == pytest.approx(control["origin_win_rate"], abs=6e-4)
    assert numbers(shown["interval"]) == pytest.approx([control["low"], control["high"]], abs=6e-4)
    assert int(shown["n"]) == control["comparisons"]

    assert page["sha"] == result["rubric_sha256"]
    assert float(page["bias"]) == pytest.approx(result["position_bias_rate"], abs=6e-4)
    assert float(page["order"]) == pytest.approx(result["order_dependent_rate"], abs=6e-4)
    assert page["categories"] == sorted(result["by_category"])
