"""A replica as a SLURM job, submitted through submitit's ``SlurmExecutor`` (the engine of Hydra's SLURM launcher).

The job (``ServeJob``) runs on its node: it takes a port, writes ``{host, port, job_id}`` to an address file in the
shared job folder, and runs the serve command until it ends or the job is cancelled. The harness reads the address,
waits for health, and ``scancel``s the job on stop. A restarted replica asks for the same node and port
(``--nodelist``), so the endpoint the wire client holds stays valid.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from stepeval.fleet.spec import LaunchSpec

RUNNING = {"RUNNING", "PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "COMPLETING", "UNKNOWN", "READY"}


@dataclass
class ServeJob:
    """What runs on the node (pickled by submitit; needs stepeval importable there, i.e. a shared venv)."""

    spec: LaunchSpec
    index: int
    port: int | None
    address_file: str
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self) -> int:
        port = self.port or _free_port()
        host = os.environ.get("STEPEVAL_FLEET_ADVERTISE_HOST") or socket.gethostname()
        job_id = os.environ.get("SLURM_JOB_ID")
        tmp = Path(f"{self.address_file}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"host": host, "port": port, "job_id": job_id}), encoding="utf-8")
        os.replace(tmp, self.address_file)
        argv = self.spec.argv(self.index, port)
        print(f"== stepeval fleet: replica {self.index} (job {job_id}) on {host}:{port}: {' '.join(argv)}", flush=True)
        # same process group as the job step: scancel (or the job's end) takes the server with it
        process = subprocess.Popen(argv, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        try:
            return process.wait()
        finally:
            if process.poll() is None:
                process.terminate()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def executor(spec: LaunchSpec, folder: Path, name: str, nodelist: str | None = None):
    """submitit's SlurmExecutor with this replica's resources (one task, ``gpus_per_replica`` GPUs on one node)."""
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=0)
    s = spec.slurm
    params = {
        "job_name": name,
        "nodes": 1,
        "ntasks_per_node": 1,
        "time": s.time_min,
        "partition": s.partition,
        "account": s.account,
        "qos": s.qos,
        "cpus_per_task": s.cpus_per_task,
        "mem": f"{s.mem_gb}GB" if s.mem_gb else None,
        "constraint": s.constraint,
        "gpus_per_node": spec.gpus_per_replica or None,
        "setup": list(s.setup) or None,
        "additional_parameters": dict(s.additional_parameters) or None,
        "nodelist": nodelist,
        "stderr_to_stdout": True,
    }
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


class SlurmReplica:
    where = "slurm"

    def __init__(self, spec: LaunchSpec, index: int, folder: Path, name: str, port: int | None = None):
        self.spec, self.index, self.folder, self.name = spec, index, folder, name
        self.port = port or spec.base_port and spec.base_port + index
        self.node: str | None = None
        self.job = None
        self.job_ids: list[str] = []
        self.address_file = folder / f"replica-{index}.address.json"

    @property
    def base_url(self) -> str:
        if self.node is None:
            raise RuntimeError(f"replica {self.index}: job {self.job_ids[-1] if self.job_ids else '?'} has not started yet")
        return f"http://{self.node}:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.job_ids[-1]}_0_log.out" if self.job_ids else self.folder

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.address_file.unlink(missing_ok=True)
        ex = executor(self.spec, self.folder, f"stepeval-{self.name}-r{self.index}", nodelist=self.node)
        self.job = ex.submit(ServeJob(self.spec, self.index, self.port, str(self.address_file), dict(self.spec.env)))
        self.job_ids.append(str(self.job.job_id))

    def started(self) -> bool:
        """True once the job runs its server and wrote where (fills node and port)."""
        if not self.address_file.exists():
            return False
        address = json.loads(self.address_file.read_text(encoding="utf-8"))
        self.node, self.port = str(address["host"]), int(address["port"])
        return True

    def state(self) -> str:
        return self.job.watcher.get_state(self.job.job_id, mode="force") if self.job is not None else "NONE"

    def alive(self) -> bool:
        return self.job is not None and self.state().split()[0] in RUNNING

    def exit_code(self) -> int | None:
        return None if self.alive() else 1

    def failure(self) -> str:
        return f"replica {self.index}: slurm job {self.job_ids[-1] if self.job_ids else '?'} is {self.state()}; log: {self.log}"

    def stop(self, timeout_s: float) -> None:
        if self.job is None:
            return
        try:
            self.job.cancel(check=False)
        except Exception as err:  # scancel missing or refused: say so, the job may still hold its GPUs
            print(f"stepeval fleet: could not cancel slurm job {self.job.job_id}: {err}", file=sys.stderr)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.5)

    def describe(self) -> dict:
        return {
            "index": self.index,
            "where": "slurm",
            "host": self.node,
            "base_url": f"{self.base_url}{self.spec.api_path}" if self.node else None,
            "gpus": self.spec.gpus_per_replica,
            "job_ids": list(self.job_ids),
            "log": str(self.log),
        }
