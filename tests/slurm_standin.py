"""A local stand-in for SLURM's ``sbatch``, ``srun``, ``sacct`` and ``scancel`` (no SLURM on this machine).

submitit's real ``SlurmExecutor`` writes the real sbatch file and calls these commands by name; ``install(bin_dir)``
puts wrappers on a folder for ``PATH``. ``sbatch`` runs the file with bash in its own session, with the environment
a SLURM job step has (``SLURM_JOB_ID``...), and keeps each submitted file in ``$STANDIN_SLURM_DIR``; ``srun`` runs
its command with ``--output``; ``sacct`` reports RUNNING / COMPLETED / FAILED / CANCELLED; ``scancel`` ends the
job's whole session. What it does not do: queue, allocate GPUs, or run on another node.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "scancel")


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


def sbatch(args: list[str]) -> int:
    state = _state()
    counter = state / "counter"
    job_id = int(counter.read_text()) + 1 if counter.exists() else 1000
    counter.write_text(str(job_id))
    script = Path(args[-1])
    (state / f"{job_id}.sbatch").write_text(script.read_text())
    env = {
        **os.environ,
        "SLURM_JOB_ID": str(job_id),
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_JOB_NODELIST": socket.gethostname(),
    }
    runner = f'bash "{script}"; echo $? > "{state / f"{job_id}.rc"}"'
    with open(state / f"{job_id}.out", "ab") as out:
        process = subprocess.Popen(["bash", "-c", runner], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (state / f"{job_id}.pid").write_text(str(process.pid))
    print(f"Submitted batch job {job_id}")
    return 0


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
    if (state / f"{job_id}.cancelled").exists():
        return "CANCELLED"
    rc = state / f"{job_id}.rc"
    if rc.exists():
        return "COMPLETED" if rc.read_text().strip() == "0" else "FAILED"
    pid_file = state / f"{job_id}.pid"
    if not pid_file.exists():
        return "PENDING"
    return "RUNNING" if _alive(int(pid_file.read_text())) else "FAILED"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sacct(args: list[str]) -> int:
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for job_id in ids:
        print(f"{job_id}|{job_state(job_id)}|{socket.gethostname()}")
    return 0


def scancel(args: list[str]) -> int:
    state = _state()
    job_id = args[0]
    with open(state / "scancel.log", "a") as log:
        log.write(" ".join(args) + "\n")
    if "--signal" in args:
        return 0
    (state / f"{job_id}.cancelled").write_text("")
    pid_file = state / f"{job_id}.pid"
    if not pid_file.exists():
        return 0
    group = int(pid_file.read_text())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.05)
    return 0


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
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel}[command](rest))
