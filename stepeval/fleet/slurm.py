"""A replica as a SLURM job, submitted through submitit's ``SlurmExecutor`` (the engine of Hydra's SLURM launcher).

The job (``ServeJob``) runs on its node: it takes a port, writes ``{host, port, job_id, node, restart}`` to an address
file in the shared job folder, and runs the serve command until it ends or the job is cancelled. The harness reads
the address, waits for health, and ``scancel``s the job on stop. The address is read again whenever it changes: a job
that SLURM requeued (preemption, a node failure) may come back on another node and port, and the fleet moves the
replica's endpoint there. A replica that dies is resubmitted anywhere in the partition, or, with
``slurm.pin_restarts``, on the node it ran on, named as SLURM names it (``SLURMD_NODENAME``), never by its address.

The fleet asks SLURM about all its jobs in one call (``job_states``: ``sacct``, or ``squeue`` where accounting is
disabled) and cancels them in one ``scancel``, whose failure is reported, not ignored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from stepeval.fleet.spec import LaunchSpec

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED", "SUBMITTED"}
RUNNING = {"RUNNING", "COMPLETING", "READY", "STAGE_OUT", "SIGNALING"}
ALIVE = QUEUED | RUNNING
GONE = "GONE"  # squeue no longer lists the job (accounting disabled: its exit code is not known)


@dataclass
class ServeJob:
    """What runs on the node (pickled by submitit; needs stepeval importable there, i.e. a shared venv)."""

    spec: LaunchSpec
    index: int
    port: int | None
    address_file: str
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self) -> None:
        port = self.port or _free_port()
        host = os.environ.get("STEPEVAL_FLEET_ADVERTISE_HOST") or socket.gethostname()
        job_id = os.environ.get("SLURM_JOB_ID")
        address = {
            "host": host,
            "port": port,
            "job_id": job_id,
            "node": os.environ.get("SLURMD_NODENAME"),  # SLURM's own name for the node: what --nodelist takes
            "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0),  # > 0 after a requeue
        }
        tmp = Path(f"{self.address_file}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(address), encoding="utf-8")
        os.replace(tmp, self.address_file)
        argv = self.spec.argv(self.index, port)
        print(f"== stepeval fleet: replica {self.index} (job {job_id}) on {host}:{port}: {' '.join(argv)}", flush=True)
        # same process group as the job step: scancel (or the job's end) takes the server with it
        process = subprocess.Popen(argv, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        try:
            code = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
        if code != 0:  # raised, not returned: submitit then ends the job non-zero and SLURM says FAILED, not COMPLETED
            raise RuntimeError(f"replica {self.index}: the server exited with code {code}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def executor(spec: LaunchSpec, folder: Path, name: str, nodelist: str | None = None):
    """submitit's SlurmExecutor with this replica's resources (one task, ``gpus_per_replica`` GPUs on one node)."""
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=0, python=spec.slurm_python())
    s = spec.slurm
    params = {
        "job_name": name,
        "nodes": 1,
        "ntasks_per_node": 1,
        "time": s.time_min,
        "partition": s.partition,
        "account": s.account,
        "qos": s.qos,
        "cpus_per_task": spec.slurm_cpus(),
        "mem": f"{spec.slurm_mem_gb()}GB",
        "constraint": s.constraint,
        "gpus_per_node": spec.gpus_per_replica or None,
        "setup": list(s.setup) or None,
        "additional_parameters": dict(s.additional_parameters) or None,
        "nodelist": nodelist,
        "stderr_to_stdout": True,
    }
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


@dataclass
class JobState:
    state: str  # SLURM's state word (RUNNING, PENDING, FAILED ...), GONE, or UNKNOWN (not listed yet)
    node: str | None = None
    reason: str | None = None  # squeue's reason for a pending job (Resources, Priority ...)

    @property
    def alive(self) -> bool:
        return self.state in ALIVE or self.state == "UNKNOWN"

    @property
    def queued(self) -> bool:
        return self.state in QUEUED or self.state == "UNKNOWN"


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: {err}")


def job_states(job_ids: list[str]) -> dict[str, JobState]:
    """The state of every job in ``job_ids``, in one ``sacct`` call; where that fails (accounting disabled, no
    slurmdbd), one ``squeue`` call, in which a job no longer listed is ``GONE``."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    done = _run(["sacct", "-X", "-n", "--parsable2", "-o", "JobID,State,NodeList", "-j", ",".join(ids)])
    if done.returncode == 0:
        found: dict[str, JobState] = {}
        for line in done.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 3 and parts[0] in ids:
                node = parts[2] if parts[2] and parts[2] not in ("None assigned", "(null)") else None
                found[parts[0]] = JobState(parts[1].split()[0], node)  # "CANCELLED by 123" -> CANCELLED
        return {j: found.get(j, JobState("UNKNOWN")) for j in ids}
    queue = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%N|%r"])
    if queue.returncode != 0 and "Invalid job id" not in queue.stderr:
        detail = (done.stderr or queue.stderr).strip().splitlines()
        raise RuntimeError(f"slurm: neither sacct nor squeue answered: {detail[-1] if detail else queue.returncode}")
    listed: dict[str, JobState] = {}
    for line in queue.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 4:
            listed[parts[0]] = JobState(parts[1], parts[2] or None, parts[3] or None)
    return {j: listed.get(j, JobState(GONE)) for j in ids}


def cancel(job_ids: list[str]) -> None:
    """One ``scancel`` for all ``job_ids``; raises with scancel's own words when it fails."""
    if not job_ids:
        return
    done = _run(["scancel", *job_ids])
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise RuntimeError(f"scancel {' '.join(job_ids)} failed: {said}")


class SlurmReplica:
    where = "slurm"

    def __init__(self, spec: LaunchSpec, index: int, folder: Path, name: str, port: int | None = None):
        self.spec, self.index, self.folder, self.name = spec, index, folder, name
        self.port = port or spec.base_port and spec.base_port + index
        self.host: str | None = None  # where the server is reached (advertised address)
        self.node: str | None = None  # SLURM's name for the node it runs on
        self.restart: int = 0  # SLURM_RESTART_COUNT the address was written under
        self.job = None
        self.job_ids: list[str] = []
        self.address_file = folder / f"replica-{index}.address.json"
        self.last = JobState("UNKNOWN")  # the last state the fleet's query saw

    @property
    def job_id(self) -> str | None:
        return self.job_ids[-1] if self.job_ids else None

    @property
    def base_url(self) -> str:
        if self.host is None:
            raise RuntimeError(f"replica {self.index}: job {self.job_id or '?'} has not started yet")
        return f"http://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.job_id}_0_log.out" if self.job_ids else self.folder

    def start(self) -> None:
        """Submit (again): pinned to the node it ran on only with ``slurm.pin_restarts``, by SLURM's node name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.address_file.unlink(missing_ok=True)
        nodelist = self.node if self.spec.slurm.pin_restarts and self.node else None
        ex = executor(self.spec, self.folder, f"stepeval-{self.name}-r{self.index}", nodelist=nodelist)
        self.job = ex.submit(ServeJob(self.spec, self.index, self.port, str(self.address_file), dict(self.spec.env)))
        self.job_ids.append(str(self.job.job_id))
        self.last = JobState("UNKNOWN")

    def read_address(self) -> tuple[str, int, int] | None:
        """(host, port, restart) the job wrote, or None before it wrote one."""
        try:
            address = json.loads(self.address_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if str(address.get("job_id")) != str(self.job_id):
            return None  # a previous job's
        self.node = address.get("node") or self.last.node or self.node
        return str(address["host"]), int(address["port"]), int(address.get("restart") or 0)

    def started(self) -> bool:
        """True once the job runs its server and wrote where (fills host and port)."""
        address = self.read_address()
        if address is None:
            return False
        self.host, self.port, self.restart = address
        return True

    def moved(self) -> tuple[str, str] | None:
        """After a requeue the job may serve elsewhere: (old base URL, new base URL) when its address changed."""
        address = self.read_address()
        if address is None or self.host is None or address == (self.host, self.port, self.restart):
            return None
        old = self.base_url
        self.host, self.port, self.restart = address
        return (old, self.base_url) if old != self.base_url else None

    def state(self) -> str:
        return self.last.state if self.job is not None else "NONE"

    def alive(self) -> bool:
        return self.job is not None and self.last.alive

    def queued(self) -> bool:
        return self.job is not None and self.last.queued

    def exit_code(self) -> int | None:
        return None if self.alive() else 1

    def failure(self) -> str:
        state = self.last.state + (" (accounting disabled: its exit status is unknown)" if self.last.state == GONE else "")
        return f"replica {self.index}: slurm job {self.job_id or '?'} is {state}; log: {self.log}"

    def stop(self, timeout_s: float) -> None:
        """Cancel this replica's job and wait until SLURM says it ended (see ``stop_all`` for a fleet)."""
        stop_all([self], timeout_s)

    def describe(self) -> dict:
        return {
            "index": self.index,
            "where": "slurm",
            "host": self.host,
            "node": self.node,
            "base_url": f"{self.base_url}{self.spec.api_path}" if self.host else None,
            "gpus": self.spec.gpus_per_replica,
            "job_ids": list(self.job_ids),
            "state": self.last.state,
            "log": str(self.log),
        }


def refresh(replicas: list[SlurmReplica]) -> None:
    """Every replica's ``last`` state, from one query."""
    live = [r for r in replicas if r.job_id is not None]
    states = job_states([r.job_id for r in live])  # type: ignore[misc]
    for replica in live:
        replica.last = states.get(str(replica.job_id), JobState("UNKNOWN"))
        replica.node = replica.last.node or replica.node


def stop_all(replicas: list[SlurmReplica], timeout_s: float, poll_s: float = 1.0) -> list[str]:
    """One ``scancel`` for every replica's job, then one query per ``poll_s`` until all ended or ``timeout_s``.

    Raises when scancel fails (the jobs may run on, holding their GPUs). Returns the job ids still not ended at
    the deadline; a Ctrl-C while waiting stops the wait (the cancel was sent), not the cancel."""
    jobs = [str(r.job_id) for r in replicas if r.job is not None and r.job_id is not None]
    if not jobs:
        return []
    try:
        known = job_states(jobs)
        jobs = [j for j in jobs if known[j].alive]  # scancel refuses an ended job (and says so, exit 1)
    except RuntimeError:
        pass  # no answer from SLURM: cancel them all
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a Ctrl-C must not cut the cancel
    try:
        cancel(jobs)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + timeout_s
    waiting = list(jobs)
    try:
        while waiting:
            states = job_states(waiting)  # type: ignore[arg-type]
            waiting = [j for j in waiting if states[j].alive and states[j].state != "UNKNOWN"]
            for replica in replicas:
                if replica.job_id in states:
                    replica.last = states[replica.job_id]  # type: ignore[index]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(f"stepeval fleet: not waiting for slurm job(s) {', '.join(waiting)} to end (scancel was sent)", file=sys.stderr)
    return [str(j) for j in waiting]
