"""Configuration mistakes fail before any work, with the key or option named; --help lists the groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepeval.config import conf_dir, group_options, redact
from tests.run_helpers import stepeval_run


def test_help_lists_every_group_and_option(tmp_path: Path):
    result = stepeval_run(tmp_path, "--help")
    assert result.returncode == 0
    for group, options in group_options(conf_dir()).items():
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"{group}:"))
        for option in options:
            if option != "schema":
                assert option in line, (group, option)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model=parot", "model/parot"),  # unknown option: Hydra lists the available ones
        ("concurency=3", "concurency"),  # typo in a top-level key
        ("history=audo", "audio, transcript"),  # a bad enum value lists the allowed ones
        ("seed=abc", "seed"),  # wrong type
        ("dataset.columns.layuot=turn", "layuot"),  # typo inside a group
        ("+model.backend.secnds=3", "secnds"),  # an argument the backend class does not take
        ("model=recorded", "model.backend.folder"),  # a mandatory value left unset
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, override: str, named: str):
    result = stepeval_run(tmp_path, "dataset=sample", "asr=none", override)
    assert result.returncode != 0
    assert named in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())  # nothing started


def test_missing_recorded_folder_fails_at_start(tmp_path: Path):
    result = stepeval_run(
        tmp_path / "r", "dataset=sample", "asr=none", "model=recorded", f"model.backend.folder={tmp_path / 'nope'}"
    )
    assert result.returncode == 1
    assert f"recorded replies folder {tmp_path / 'nope'} does not exist" in result.stderr
    assert not (tmp_path / "r").exists()


def test_redact_hides_secret_values_at_any_depth():
    config = {
        "model": {"endpoints": [{"base_url": "http://x", "api_key": "sk-live-123"}], "auth_token": "t"},
        "judge": {"api_key": None, "model": "gpt-4o"},
    }
    clean = redact(config)
    assert "sk-live-123" not in repr(clean) and "'t'" not in repr(clean)
    assert clean["model"]["endpoints"][0]["base_url"] == "http://x"
    assert clean["judge"] == {"api_key": None, "model": "gpt-4o"}


def test_redact_keeps_token_counts_and_tokenizer_paths():
    config = {"sampling": {"max_tokens": 512}, "tokens_per_minute": 9000, "tokenizer_path": "/m", "hf_token": "hf_x"}
    assert redact(config) == {
        "sampling": {"max_tokens": 512},
        "tokens_per_minute": 9000,
        "tokenizer_path": "/m",
        "hf_token": "<redacted>",
    }
