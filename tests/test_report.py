"""`stepeval report`: the HTML page of a real demo run, rendered in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from stepeval import views
from stepeval.cli import main as cli
from tests import arena_results

pytestmark = pytest.mark.slow  # demo runs and headless chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = '<script>alert("judge")</script> & <b>bold</b>'


class Audio(HTMLParser):
    """Collects <audio> elements' attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "audio":
            self.elements.append(dict(attrs))


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is not installed (apt-get install chromium; .ci/run installs it)"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def judged_run(demo_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parrot run plus a judge log as a judge stage writes it (record contract), with hostile text."""
    run = shutil.copytree(demo_runs["parrot"], tmp_path_factory.mktemp("judged") / demo_runs["parrot"].name)
    scores = [json.loads(line) for line in (run / "records" / "score.jsonl").read_text().splitlines()]
    with open(run / "records" / "judge-chat_score.jsonl", "w", encoding="utf-8") as fh:
        for number, record in enumerate(scores):
            value = None if number == 0 else float(1 + number % 5)
            judged = {
                "conversation_id": record["conversation_id"],
                "turn": record["turn"],
                "category": record["category"],
                "language": record["language"],
                "stage": "judge-chat_score",
                "fingerprint": f"fp{number}",
                "metrics": {"chat_score": value},
                "missing": {"chat_score": "judge reply could not be parsed"} if value is None else {},
                "rationale": f"turn {number}: {HOSTILE}",
                "raw": f'{{"score": {value}, "why": "{HOSTILE}"}}',
            }
            fh.write(json.dumps(judged) + "\n")
    manifest = json.loads((run / "manifest.json").read_text())  # as the judge stage records what it scored
    manifest["judge"] = {"name": "fake", "rubrics": {"chat_score": {"name": "chat_score.v1"}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    _, view = views.resolve(run)  # and as the pipeline selects a view's records
    view.selection["judge-chat_score"] = {(r["conversation_id"], r["turn"]): f"fp{n}" for n, r in enumerate(scores)}
    views.save(run, view)
    return run


@pytest.fixture(scope="module")
def page(judged_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert cli(["report", str(judged_run), "--out", str(out)]) == 0
    return out


def test_charts_are_saved_as_png_next_to_the_page(page: Path):
    for name in ("report_radar.png", "report_bars.png", "report_latency_cdf.png"):
        with Image.open(page.parent / name) as image:
            image.verify()
    assert page.read_text().count('src="data:image/png;base64,') == 3  # and embedded: the page stands alone


def test_every_turn_has_the_users_and_the_replys_audio_embedded(page: Path, judged_run: Path):
    parser = Audio()
    parser.feed(page.read_text())
    turns = sum(1 for _ in (judged_run / "audio").rglob("turn_*.wav"))
    assert turns == 22 and len(parser.elements) == 2 * turns
    for element in parser.elements:
        prefix, payload = element["src"].split(",", 1)
        assert prefix == "data:audio/wav;base64"
        samples, rate = sf.read(io.BytesIO(base64.b64decode(payload)))
        assert rate > 0 and len(samples) / rate > 0.5 and np.abs(samples).max() > 0.01  # real speech, not empty


def test_record_text_is_escaped_and_judge_fields_are_shown(page: Path):
    html = page.read_text()
    assert '<script>alert("judge")' not in html
    assert "&lt;script&gt;alert(&#34;judge&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count(">rationale<") == 22 and html.count(">raw<") == 22
    assert "judge reply could not be parsed" in html
    assert "Can you sing me a short lullaby about the moon?" in html  # the user's transcript, from the dataset


def test_paper_layout_carries_reference_rows_with_provenance(page: Path):
    html = page.read_text()
    assert html.count("reported, not reproduced") >= 4 + 8  # 4 Table 5 rows, 8 Table 7 cells
    assert "arXiv 2502.11946, Table 5" in html and "arXiv 2502.11946, Table 7" in html
    assert "NOT StepEval-Audio-360" in html and "reference only: the set is mostly Chinese" in html
    table5 = html.split("Table 5 layout", 1)[1].split("Table 7 layout", 1)[0]
    this_run = table5.split("this run", 1)[0].rsplit("<tr", 1)[1]
    # chat_score was judged (21 of 22 turns); factuality and relevance were not run
    assert "(21/22)" in this_run and this_run.count("not run") == 2


def test_page_renders_in_headless_chromium_with_playable_audio(page: Path, tmp_path: Path):
    shot = page.parent / "report-screenshot.png"
    result = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50  # text, tables and colours, not a blank page
    print(f"report screenshot: {shot}")

    result = chromium(tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "stepeval report:" in dom and 'id="conversations"' in dom
    parser = Audio()
    parser.feed(dom)
    states = [el.get("data-state") for el in parser.elements]
    assert len(states) == 44
    assert "error" not in states  # the page's own script marks a clip the browser cannot decode
    playable = [el for el in parser.elements if el.get("data-state") == "playable"]
    assert playable and all(float(el["data-duration"]) > 0.5 for el in playable)


def test_report_with_arena_json_adds_a_section_of_its_own(judged_run: Path, tmp_path: Path, capsys):
    _, view = views.resolve(judged_run)
    result = arena_results.result({"strong": str(views.view_dir(judged_run, view.name))}, resamples=100)
    arena = tmp_path / "arena.json"
    arena.write_text(json.dumps(result))
    out = tmp_path / "report.html"
    assert cli(["report", str(judged_run), "--arena", str(arena), "--out", str(out)]) == 0
    html = out.read_text()
    assert html.index('id="summary"') < html.index('<section id="arena">')  # after the absolute scores, apart
    section = html.split('<section id="arena">', 1)[1].split("</section>", 1)[0]
    assert "separate from the absolute scores above" in section
    assert "This run is the arena's system <code>strong</code>" in section  # which system this run is
    assert f"judged by <code>{result['judge']['model']}</code>" in section and result["rubric_sha256"] in section
    for row in result["systems"]:
        assert f"<code>{row['system']}</code>" in section  # which systems it covers
    assert (
        section.count('src="data:image/png;base64,') == 2 and 'id="arena-heatmap"' in section and 'id="arena-forest"' in section
    )
    for name in ("report_arena_heatmap.png", "report_arena_forest.png"):
        with Image.open(tmp_path / name) as image:
            image.verify()
    strong = next(r for r in result["overall"]["systems"] if r["system"] == "strong")
    row = section.split('data-system="strong"><td class="rank">', 1)[1].split("</tr>", 1)[0]
    assert f'<td class="strength">{strong["strength"]:.3f}</td>' in row

    plain = tmp_path / "plain.html"  # without --arena: no arena section
    assert cli(["report", str(judged_run), "--no-audio", "--out", str(plain)]) == 0
    assert 'id="arena"' not in plain.read_text()
    capsys.readouterr()
    assert cli(["report", str(judged_run), "--arena", str(tmp_path / "report_bars.png"), "--out", str(plain)]) == 2
    assert "report_bars.png: not JSON" in capsys.readouterr().err
