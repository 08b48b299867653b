"""A local stand-in for SLURM's ``sbatch``, ``srun``, ``sacct``, ``squeue`` and ``scancel`` (no SLURM on this machine).

submitit's real ``SlurmExecutor`` writes the real sbatch file and calls these commands by name; ``install(bin_dir)``
puts wrappers on a folder for ``PATH``. ``sbatch`` runs the file with bash in its own session, with the environment
a SLURM job step has (``SLURM_JOB_ID``, ``SLURMD_NODENAME``, ``SLURM_RESTART_COUNT``...), and keeps each submitted
file in ``$STANDIN_SLURM_DIR``; ``srun`` runs its command with ``--output``; ``sacct`` reports PENDING / REQUEUED /
RUNNING / COMPLETED / FAILED / CANCELLED; ``squeue`` lists the jobs still queued or running; ``scancel`` ends the
job's whole session. Every call is logged to ``calls.log``.

What a test can make it do, through files in ``$STANDIN_SLURM_DIR`` (``hold``, ``release``, ``requeue``...):
- queue: while ``hold`` exists, a new job stays PENDING until ``release(state, job_id)``;
- requeue on another node: ``requeue(state, job_id, node)`` ends the job's processes and runs it again as SLURM does
  after a preemption (REQUEUED until released when ``hold`` exists, then RUNNING on ``node``, restart count + 1);
- a failing ``scancel``: while ``scancel_fails`` exists it refuses, as for a job of another user;
- disabled accounting: while ``no_accounting`` exists ``sacct`` fails as it does without slurmdbd.
Nodes are names only (every job runs on this machine); ``--nodelist`` picks the name. No GPUs are allocated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scancel")
DEFAULT_NODE = "standin-node-1"


def install(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {name} "$@"\n')
        wrapper.chmod(0o755)


def _state() -> Path:
    folder = Path(os.environ["STANDIN_SLURM_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _log_call(name: str, args: list[str]) -> None:
    with open(_state() / "calls.log", "a") as log:
        log.write(" ".join([name, *args]) + "\n")


def calls(state: Path, name: str) -> list[str]:
    """The argument lines of every call of ``name`` so far."""
    log = state / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 1)[1] if " " in line else "" for line in lines if line.split(" ", 1)[0] == name]


def sbatch(args: list[str]) -> int:
    _log_call("sbatch", args)
    state = _state()
    counter = state / "counter"
    job_id = int(counter.read_text()) + 1 if counter.exists() else 1000
    counter.write_text(str(job_id))
    script = Path(args[-1])
    text = script.read_text()
    (state / f"{job_id}.sbatch").write_text(text)
    pinned = [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith("#SBATCH --nodelist=")]
    (state / f"{job_id}.node").write_text(pinned[0] if pinned else DEFAULT_NODE)
    (state / f"{job_id}.script").write_text(str(script))
    if (state / "hold").exists():
        (state / f"{job_id}.held").write_text("")
    _launch(job_id)
    print(f"Submitted batch job {job_id}")
    return 0


def _launch(job_id: int | str) -> None:
    """Run the job's script in its own session once it is no longer held (what a node's slurmd would do)."""
    state = _state()
    restarts = int((state / f"{job_id}.restarts").read_text()) if (state / f"{job_id}.restarts").exists() else 0
    node = (state / f"{job_id}.node").read_text()
    env = {
        **os.environ,
        "SLURM_JOB_ID": str(job_id),
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_JOB_NODELIST": node,
        "SLURMD_NODENAME": node,
        "SLURM_RESTART_COUNT": str(restarts),
    }
    script = (state / f"{job_id}.script").read_text()
    held = state / f"{job_id}.held"
    runner = f'while [ -e "{held}" ]; do sleep 0.1; done; bash "{script}"; echo $? > "{state / f"{job_id}.rc"}"'
    with open(state / f"{job_id}.out", "ab") as out:
        process = subprocess.Popen(["bash", "-c", runner], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (state / f"{job_id}.pid").write_text(str(process.pid))


def release(state: Path, job_id: str) -> None:
    """A held (PENDING or REQUEUED) job starts running."""
    (state / f"{job_id}.held").unlink(missing_ok=True)


def requeue(state: Path, job_id: str, node: str) -> None:
    """As SLURM requeues a preempted job: its processes end, it queues again, and runs again on ``node``."""
    restarts = state / f"{job_id}.restarts"
    restarts.write_text(str(int(restarts.read_text()) + 1 if restarts.exists() else 1))
    (state / f"{job_id}.held").write_text("")  # REQUEUED from here on, until it runs again
    _end_group(int((state / f"{job_id}.pid").read_text()))
    (state / f"{job_id}.rc").unlink(missing_ok=True)
    (state / f"{job_id}.node").write_text(node)
    previous = os.environ.get("STANDIN_SLURM_DIR")
    os.environ["STANDIN_SLURM_DIR"] = str(state)
    try:
        _launch(job_id)
        if not (state / "hold").exists():
            release(state, job_id)
    finally:
        if previous is None:
            os.environ.pop("STANDIN_SLURM_DIR")
        else:
            os.environ["STANDIN_SLURM_DIR"] = previous


def srun(args: list[str]) -> int:
    output = None
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in ("--output", "--error"):
            value = args.pop(0).replace("%j", os.environ.get("SLURM_JOB_ID", "0")).replace("%t", "0")
            output = output or value
    if output:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    os.execvp(args[0], args)
    return 1


def job_state(job_id: str) -> str:
    state = _state()
    if not (state / f"{job_id}.node").exists():
        return "UNKNOWN"
    if (state / f"{job_id}.cancelled").exists():
        return "CANCELLED"
    if (state / f"{job_id}.held").exists():
        return "REQUEUED" if (state / f"{job_id}.restarts").exists() else "PENDING"
    rc = state / f"{job_id}.rc"
    if rc.exists():
        return "COMPLETED" if rc.read_text().strip() == "0" else "FAILED"
    pid_file = state / f"{job_id}.pid"
    if not pid_file.exists():
        return "PENDING"
    return "RUNNING" if _alive(int(pid_file.read_text())) else "FAILED"


def _node(job_id: str) -> str:
    node = _state() / f"{job_id}.node"
    return node.read_text() if node.exists() else ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _job_ids(args: list[str]) -> list[str]:
    return [j for i, a in enumerate(args) if a == "-j" for j in args[i + 1].split(",")]


def sacct(args: list[str]) -> int:
    _log_call("sacct", args)
    if (_state() / "no_accounting").exists():
        print("sacct: error: Slurm accounting storage is disabled", file=sys.stderr)
        return 1
    if "-n" not in args:
        print("JobID|State|NodeList")
    for job_id in _job_ids(args):
        state = job_state(job_id)
        if state != "UNKNOWN":
            node = "None assigned" if state in ("PENDING", "REQUEUED") else _node(job_id)
            print(f"{job_id}|{state}|{node}")
    return 0


def squeue(args: list[str]) -> int:
    """``squeue -h -j ids -o '%i|%T|%N|%r'``: the jobs still queued or running, ended ones not listed."""
    _log_call("squeue", args)
    for job_id in _job_ids(args):
        state = job_state(job_id)
        if state in ("PENDING", "REQUEUED"):
            print(f"{job_id}|{state}||{'BeginTime' if state == 'REQUEUED' else 'Resources'}")
        elif state == "RUNNING":
            print(f"{job_id}|RUNNING|{_node(job_id)}|None")
    return 0


def scancel(args: list[str]) -> int:
    _log_call("scancel", args)
    state = _state()
    with open(state / "scancel.log", "a") as log:
        log.write(" ".join(args) + "\n")
    if "--signal" in args:
        return 0
    if (state / "scancel_fails").exists():
        print(f"scancel: error: Kill job error on job id {args[0]}: Access/permission denied", file=sys.stderr)
        return 1
    code = 0
    for job_id in [a for a in args if not a.startswith("-")]:
        if job_state(job_id) in ("COMPLETED", "FAILED", "CANCELLED"):  # as SLURM answers for an ended job
            print(f"scancel: error: Kill job error on job id {job_id}: Job/step already completing or completed", file=sys.stderr)
            code = 1
            continue
        (state / f"{job_id}.cancelled").write_text("")
        (state / f"{job_id}.held").unlink(missing_ok=True)
        pid_file = state / f"{job_id}.pid"
        if pid_file.exists():
            _end_group(int(pid_file.read_text()))
    return code


def _end_group(group: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.05)


def _group_alive(group: int) -> bool:
    """Any live (not zombie) process left in the group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scancel": scancel}[command](rest))
