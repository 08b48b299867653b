"""Shared fixtures: an isolated cache and results folder per test session, the bundled sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest_runs import demo_runs  # noqa: F401  (session fixture: real silence and parrot demo runs)
from tests.unit_guard import (  # noqa: F401  (the fast loop: `unit` marking and its guard)
    pytest_collection_modifyitems,
    pytest_runtest_call,
    pytest_runtest_setup,
    pytest_terminal_summary,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Extraction and model caches go to a temp folder, never the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("stepeval-cache")
    os.environ["STEPEVAL_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def repo() -> Path:
    return REPO
