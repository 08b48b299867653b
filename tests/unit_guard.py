"""The fast loop (``make test-fast``, ``pytest -m unit``): which tests are in it, and a guard that keeps it honest.

A test is ``unit`` when its module is listed in ``UNIT_MODULES`` (and it is not marked ``slow``), or when it is
marked ``@pytest.mark.unit`` itself. While a unit test (and the fixtures it sets up) runs, starting a subprocess,
opening a network connection or listening socket, or importing a model runtime (torch, transformers, CTranslate2,
ONNX Runtime, Resemblyzer) fails the test with the reason: so the loop stays fast on any machine without timing
anything, and a test that needs one of these belongs outside it (unmarked, or ``slow``). The conftest imports the
hooks below.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

# modules of pure unit tests: functions and classes on in-memory data and temporary files
UNIT_MODULES = frozenset(
    {
        "test_applicability",
        "test_archive",
        "test_audio_codec",
        "test_judge_parsing",
        "test_layering",
        "test_signal_availability",
        "test_stats",
        "test_store",
        "test_text_norm",
        "test_validation_agreement",
        "test_view_identity",
    }
)
# tests in those modules that start a subprocess (a real run, a process that dies holding a lock): outside the loop
NOT_UNIT = frozenset(
    {
        "test_applicability.py::test_pipeline_run_filters_its_table_and_refilters_without_recompute",
        "test_archive.py::test_truncated_or_garbage_archive_is_one_line_naming_the_file",
        "test_archive.py::test_stale_extraction_temporaries_of_dead_processes_are_removed",
    }
)
RUNTIMES = ("torch", "transformers", "faster_whisper", "ctranslate2", "onnxruntime", "resemblyzer", "speechmos")


class UnitViolation(pytest.fail.Exception):
    """Raised where a unit test does what it must not (a BaseException: code under test cannot swallow it)."""


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise UnitViolation(f"a unit test {what}: leave it out of UNIT_MODULES (tests/unit_guard.py) or mark it slow")

    return refused


class _RuntimeBlocker(importlib.abc.MetaPathFinder):
    """Finds model runtimes as usual (``find_spec`` answers the same: availability checks still see them) but
    refuses to import them."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] not in RUNTIMES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        spec.loader = _RefusingLoader(name)
        return spec


class _RefusingLoader(importlib.abc.Loader):
    def __init__(self, name: str):
        self.name = name

    def create_module(self, spec):
        raise UnitViolation(f"a unit test imported the model runtime {self.name!r}: leave it out of the fast loop")

    def exec_module(self, module):  # pragma: no cover - create_module raised
        raise AssertionError


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Subprocesses, sockets that connect or listen, and imports of model runtimes refused."""
    patches = [
        (subprocess.Popen, "__init__", _refuse("started a subprocess")),
        (os, "fork", _refuse("forked")),
        *([(os, "posix_spawn", _refuse("spawned a process"))] if hasattr(os, "posix_spawn") else []),
        (socket.socket, "connect", _refuse("opened a network connection")),
        (socket.socket, "connect_ex", _refuse("opened a network connection")),
        (socket.socket, "listen", _refuse("started a server")),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    blocker = _RuntimeBlocker()
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        sys.meta_path.insert(0, blocker)
        yield
    finally:
        sys.meta_path.remove(blocker)
        for owner, name, original in saved:
            setattr(owner, name, original)


def is_unit(item: pytest.Item) -> bool:
    return item.get_closest_marker("unit") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        function = getattr(item, "originalname", item.name)
        if name in UNIT_MODULES and f"{name}.py::{function}" not in NOT_UNIT and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    if not is_unit(item):
        return (yield)
    with guarded():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if not is_unit(item):
        return (yield)
    with guarded():
        return (yield)


_STARTED = (time.perf_counter(), time.process_time())


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """For the fast loop (``-m unit``): how many unit tests ran, the wall time and this process's CPU time since
    pytest started (collection included); on a machine shared with other work the CPU time is the steadier figure."""
    if "unit" not in (config.option.markexpr or ""):
        return
    ran = sum(len(terminalreporter.stats.get(kind, [])) for kind in ("passed", "failed", "error"))
    wall, cpu = time.perf_counter() - _STARTED[0], time.process_time() - _STARTED[1]
    terminalreporter.write_line(f"fast loop: {ran} unit tests, {wall:.1f} s wall, {cpu:.1f} s CPU (collection included)")
