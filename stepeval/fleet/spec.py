"""A model config's ``launch`` section, checked, and what each replica runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

WHERE = ("local", "slurm")
PLACEHOLDERS = ("port", "host", "gpus", "replica", "python", "stepeval")


@dataclass
class SlurmSettings:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 720
    cpus_per_task: int | None = None  # null: CPUS_PER_GPU per GPU (at least one GPU's worth)
    mem_gb: int | None = None  # null: MEM_GB_PER_GPU per GPU (at least one GPU's worth)
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    folder: str | None = None
    python: str | None = None  # the interpreter the job runs; null: `python` from setup's environment, else ours
    pin_restarts: bool = False  # resubmit a dead replica to the node it ran on (by SLURM's node name)
    queue_timeout_s: float = 3600.0  # how long a job may wait in the queue (PENDING) before the fleet gives up on it


CPUS_PER_GPU = 8
MEM_GB_PER_GPU = 64  # a 7B model in bf16 loads in well under this; a cluster's default is often 2-4 GB per CPU


@dataclass
class LaunchSpec:
    command: list[str]
    where: str = "local"
    replicas: int = 1
    gpus_per_replica: int = 0
    gpus: list[int] | None = None
    host: str = "127.0.0.1"
    base_port: int | None = None
    health_path: str = "/health"
    api_path: str = "/v1"
    concurrency: int | None = None
    startup_timeout_s: float = 900.0
    stop_timeout_s: float = 30.0
    max_restarts: int = 3
    monitor_interval_s: float = 1.0
    env: dict[str, str] = field(default_factory=dict)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    @classmethod
    def from_config(cls, launch: dict, where: str = "model.launch") -> LaunchSpec:
        """Checks every field; the error names it (``model.launch.replicas must be >= 1``)."""
        raw = dict(launch)
        command = raw.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if not isinstance(command, list) or not command or not all(isinstance(a, (str, int, float)) for a in command):
            example = "'{stepeval} serve parrot --port {port}'"
            raise ValueError(f"{where}.command must be a non-empty string or list, e.g. {example}")
        command = [str(a) for a in command]
        for arg in command:
            try:
                arg.format(**{k: "" for k in PLACEHOLDERS})
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"{where}.command: {arg!r} has an unknown placeholder ({err}); use {PLACEHOLDERS}") from None
        kind = str(raw.get("where") or "local")
        if kind not in WHERE:
            raise ValueError(f"{where}.where={kind!r}: use local or slurm")
        replicas = raw.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"{where}.replicas must be >= 1, got {replicas}")
        if int(raw.get("gpus_per_replica") or 0) < 0:
            raise ValueError(f"{where}.gpus_per_replica must be >= 0")
        if raw.get("concurrency") is not None and int(raw["concurrency"]) < 1:
            raise ValueError(f"{where}.concurrency must be >= 1")
        slurm = SlurmSettings(**{k: v for k, v in (raw.get("slurm") or {}).items() if v is not None})
        startup = float(raw.get("startup_timeout_s") or 900.0)
        if kind == "slurm" and slurm.time_min * 60 <= startup:
            raise ValueError(
                f"{where}.slurm.time_min={slurm.time_min} ({slurm.time_min * 60} s) does not outlast "
                f"{where}.startup_timeout_s={startup:g}: each replica job would reach its time limit before or soon "
                "after it is healthy; raise time_min to the run's length"
            )
        if kind == "slurm" and slurm.queue_timeout_s <= 0:
            raise ValueError(f"{where}.slurm.queue_timeout_s must be > 0, got {slurm.queue_timeout_s:g}")
        interval = raw.get("monitor_interval_s") or (15.0 if kind == "slurm" else 1.0)
        return cls(
            command=command,
            where=kind,
            replicas=replicas,
            gpus_per_replica=int(raw.get("gpus_per_replica") or 0),
            gpus=[int(g) for g in raw["gpus"]] if raw.get("gpus") is not None else None,
            host=str(raw.get("host") or ("0.0.0.0" if kind == "slurm" else "127.0.0.1")),
            base_port=int(raw["base_port"]) if raw.get("base_port") else None,
            health_path=str(raw.get("health_path") or "/health"),
            api_path=str(raw.get("api_path") or "/v1"),
            concurrency=int(raw["concurrency"]) if raw.get("concurrency") else None,
            startup_timeout_s=startup,
            stop_timeout_s=float(raw.get("stop_timeout_s") or 30.0),
            max_restarts=int(raw.get("max_restarts") if raw.get("max_restarts") is not None else 3),
            monitor_interval_s=float(interval),
            env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
            slurm=slurm,
        )

    def argv(self, replica: int, port: int, host: str | None = None) -> list[str]:
        """The command for one replica, placeholders filled."""
        values = {
            "port": port,
            "host": host or self.host,
            "gpus": self.gpus_per_replica,
            "replica": replica,
            "python": sys.executable,
            "stepeval": f"{sys.executable} -m stepeval.cli",
        }
        out: list[str] = []
        for arg in self.command:
            if arg == "{stepeval}":
                out += [sys.executable, "-m", "stepeval.cli"]
            else:
                out.append(arg.format(**values))
        return out

    def slurm_python(self) -> str:
        """What submitit runs on the node: ``slurm.python``; else ``python`` when ``slurm.setup`` prepares an
        environment (``source /shared/venv/bin/activate`` must choose the interpreter); else this interpreter."""
        if self.slurm.python:
            return self.slurm.python
        return "python" if self.slurm.setup else shlex.quote(sys.executable)

    def slurm_cpus(self) -> int:
        return self.slurm.cpus_per_task or CPUS_PER_GPU * max(1, self.gpus_per_replica)

    def slurm_mem_gb(self) -> int:
        return self.slurm.mem_gb or MEM_GB_PER_GPU * max(1, self.gpus_per_replica)

    def gpu_groups(self) -> list[list[int]]:
        """Local: the GPU ids of each replica (disjoint, in order); [] each when no GPUs are asked for."""
        if self.gpus_per_replica == 0:
            return [[] for _ in range(self.replicas)]
        available = self.gpus if self.gpus is not None else visible_gpus()
        need = self.replicas * self.gpus_per_replica
        if need > len(available):
            raise ValueError(
                f"model.launch: {self.replicas} replica(s) x {self.gpus_per_replica} GPU(s) need {need} GPUs, and this node "
                f"offers {len(available)} ({available}); lower replicas or set model.launch.gpus"
            )
        g = self.gpus_per_replica
        return [available[i * g : (i + 1) * g] for i in range(self.replicas)]


def visible_gpus() -> list[int]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else what ``nvidia-smi`` lists, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(x) for x in out.split() if x.strip().isdigit()]
