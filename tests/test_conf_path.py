"""Where configs come from: the package, plus user folders only when named; subcommands name their missing extra."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

from stepeval import cli, hydra_app
from stepeval.config import CONF_DIR_ENV, conf_dir, group_options, search_path_override, user_conf_dirs

REPO = Path(__file__).resolve().parents[1]
QUIET = "defaults: [schema, _self_]\nname: quiet\nbackend:\n  _target_: stepeval.backends.control.Silence\n  seconds: 0.5\n"


@pytest.fixture
def mine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(CONF_DIR_ENV, raising=False)
    folder = tmp_path / "my_conf"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "quiet.yaml").write_text(QUIET)
    return folder


def composed(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert hydra_app.main(["--cfg", "job", "dataset=sample", *args]) == 0
    return capsys.readouterr().out


def test_packaged_configs_live_in_the_package():
    assert conf_dir() == REPO / "stepeval" / "conf"
    assert (conf_dir() / "__init__.py").is_file()  # Hydra's pkg:// source needs a package
    assert {"dataset", "model", "asr", "judge", "metrics"} <= set(group_options())


def test_a_conf_folder_in_the_working_directory_is_not_read(tmp_path, monkeypatch, capsys, mine):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "config.yaml").write_text("defaults:\n  - model: quiet\n")
    (tmp_path / "conf" / "model" / "quiet.yaml").write_text(QUIET)
    monkeypatch.chdir(tmp_path)
    assert "name: parrot" in composed(capsys)  # the packaged default, not the decoy's
    assert hydra_app.main(["--cfg", "job", "model=quiet"]) != 0
    assert "Could not find 'model/quiet'" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["--config-dir", "-cd", "searchpath", "env"])
def test_a_named_user_folder_adds_options(how, mine, monkeypatch, capsys):
    args = {"--config-dir": ["--config-dir", str(mine)], "-cd": ["-cd", str(mine)], "env": []}
    args["searchpath"] = [f"hydra.searchpath=[file://{mine}]"]
    if how == "env":
        monkeypatch.setenv(CONF_DIR_ENV, str(mine))
    shown = composed(capsys, *args[how], "model=quiet")
    assert "name: quiet" in shown and "seconds: 0.5" in shown
    assert hydra_app.main([*args[how], "--help"]) == 0
    model_line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("model:"))
    assert "quiet" in model_line and "parrot*" in model_line


def test_user_folder_mistakes_are_named(mine, tmp_path, monkeypatch):
    monkeypatch.setenv(CONF_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=f"config folder {CONF_DIR_ENV}=.*nope does not exist"):
        user_conf_dirs()
    monkeypatch.delenv(CONF_DIR_ENV)
    (mine / "model" / "parrot.yaml").write_text(QUIET)  # would be shadowed by the packaged parrot
    with pytest.raises(ValueError, match=r"model/parrot.yaml has the name of the packaged option model=parrot"):
        user_conf_dirs([mine])
    (mine / "model" / "parrot.yaml").unlink()
    (mine / "config.yaml").write_text("defaults: []\n")
    with pytest.raises(ValueError, match="config.yaml: a user config folder adds options"):
        user_conf_dirs([mine])


def test_user_folder_mistake_is_one_line_from_the_command(mine, capsys):
    (mine / "model" / "silence.yaml").write_text(QUIET)
    assert hydra_app.main(["--config-dir", str(mine), "model=quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stepeval run: error: ") and "model/silence.yaml" in err[0]


def test_search_path_override_is_hydra_syntax(tmp_path):
    assert search_path_override([]) == []
    assert search_path_override([tmp_path, "pkg://mine.conf"]) == [f"hydra.searchpath=['file://{tmp_path}','pkg://mine.conf']"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["X"]),
        (["a=1", "--cfg", "job"], ["X", "a=1", "--cfg", "job"]),
        (["--cfg", "job", "a=1"], ["--cfg", "job", "X", "a=1"]),
        (["-m", "--info", "searchpath", "a=1,2"], ["-m", "--info", "searchpath", "X", "a=1,2"]),
        (["--help"], ["--help", "X"]),
    ],
)
def test_search_path_goes_next_to_the_users_overrides(args, expected):
    # Hydra's parser takes one run of overrides: one added after a flag's value would be "unrecognized"
    assert hydra_app._with_overrides(args, ["X"]) == expected


def test_every_extra_module_belongs_to_that_extra_in_pyproject():
    """cli.EXTRAS (modules) against pyproject's optional-dependencies (distributions), through the installed metadata."""
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    declared: dict[str, set[str]] = {}
    for name, body in re.findall(r"^(\w+) = \[(.*?)\]$", block, flags=re.M | re.S):
        names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in re.findall(r'"([^"]+)"', body)}
        declared[name] = {n.replace("_", "-") for n in names if not n.startswith("stepeval")}
    declared.pop("dev")
    assert set(cli.EXTRAS) == set(declared)
    providers = md.packages_distributions()
    for extra, modules in cli.EXTRAS.items():
        dists = {d.lower().replace("_", "-") for m in modules for d in providers.get(m, [])}
        dists.discard("stepeval")  # the hydra_plugins namespace is shared: stepeval ships its own sweeper there
        assert dists == declared[extra], extra


@pytest.mark.parametrize(("command", "extra", "module"), [("report", "report", "jinja2"), ("leaderboard", "report", "tabulate")])
def test_a_subcommand_without_its_extra_says_which_to_install(command, extra, module, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    assert cli.main([command, "somewhere"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"stepeval {command} needs the '{extra}' extra: pip install 'stepeval[{extra}]'\n"


def test_version_is_the_projects(capsys):
    (version,) = re.findall(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), flags=re.M)
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"stepeval {version}\n"
