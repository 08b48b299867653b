"""Every stage's progress bar: tqdm's on a terminal; plain whole lines, now and then, where stderr is a log file
or a pipe (a SLURM log, ``2> run.log``, CI), which would otherwise fill with carriage returns and cursor codes."""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_INTERVAL_S = 30.0  # off a terminal: at most one line per bar this often (and a last one when it closes)
PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed} elapsed, {rate_fmt}]"
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")  # cursor movement, erase, carriage return


def bar(*, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments) that writes plain lines when ``file`` (default: stderr) is not a terminal."""
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        return tqdm(file=stream, **kwargs)
    return PlainBar(file=stream, **kwargs)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class _Lines:
    """What tqdm writes, as whole lines: control codes dropped, and the blank lines of positioning and closing."""

    def __init__(self, inner: TextIO):
        self.inner = inner

    def write(self, text: str) -> int:
        line = _CONTROL.sub("", text).strip()
        if line:
            self.inner.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    @property
    def encoding(self) -> str:
        return getattr(self.inner, "encoding", None) or "utf-8"


class PlainBar(tqdm):
    """tqdm for logs: ``desc: n/total unit [elapsed, rate]`` at most every ``mininterval`` seconds (explicit
    refreshes too, so a bar whose total grows one unit at a time does not print a line per unit), and at close."""

    def __init__(self, *args: Any, file: TextIO | None = None, **kwargs: Any):
        kwargs.pop("dynamic_ncols", None)  # no terminal to measure
        kwargs.setdefault("mininterval", PLAIN_INTERVAL_S)
        kwargs.setdefault("bar_format", PLAIN_FORMAT)
        super().__init__(*args, file=_Lines(file if file is not None else sys.stderr), ascii=True, **kwargs)

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> bool:
        if self.disable:
            return False
        now = self._time()
        last = getattr(self, "last_print_t", None)  # unset while tqdm's __init__ draws the empty bar: no line for it
        if last is None or now - last < self.mininterval:
            return False
        self.last_print_t = now
        return super().refresh(nolock=nolock, lock_args=lock_args)
