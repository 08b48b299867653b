"""A replica as a subprocess on this node: its own session (process group), its GPUs, its port, its log file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from stepeval.fleet.spec import LaunchSpec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalReplica:
    """``start()`` runs the command; ``stop()`` ends its whole process group (a vLLM server's workers too)."""

    where = "local"

    def __init__(self, spec: LaunchSpec, index: int, gpus: list[int], port: int, log: Path):
        self.spec, self.index, self.gpus, self.port, self.log = spec, index, gpus, port, log
        self.process: subprocess.Popen | None = None
        self.pids: list[int] = []
        self.argv: list[str] = []  # every process started for this replica, in order (restarts included)

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.spec.host in ("0.0.0.0", "::") else self.spec.host

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        env = {**os.environ, **self.spec.env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, self.gpus)), "PYTHONUNBUFFERED": "1"}
        argv = self.argv = self.spec.argv(self.index, self.port)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"\n== stepeval fleet: replica {self.index} starts: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                # its own session: a Ctrl-C in the terminal reaches the harness only, which stops replicas in order
                self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as err:
                raise RuntimeError(f"model.launch.command: replica {self.index} cannot start {argv[0]!r}: {err}") from None
        self.pids.append(self.process.pid)

    def exit_code(self) -> int | None:
        """None while running."""
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def failure(self) -> str:
        code = self.exit_code()
        return f"replica {self.index} exited with code {code}; last lines of {self.log}:\n{tail(self.log)}"

    def terminate(self) -> None:
        """SIGTERM to the group, without waiting (``stop`` waits)."""
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM to the group, SIGKILL after ``timeout_s``; returns once the leader is reaped."""
        if self.process is None:
            return
        group = self.process.pid
        _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(group, signal.SIGKILL)  # stragglers of the group (workers), or a leader that ignored SIGTERM
        self.process.wait()

    def describe(self) -> dict:
        return {
            "index": self.index,
            "where": "local",
            "host": socket.gethostname(),
            "base_url": f"{self.base_url}{self.spec.api_path}",
            "gpus": self.gpus,
            "pids": list(self.pids),
            "argv": list(self.argv),
            "log": str(self.log),
        }


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass
