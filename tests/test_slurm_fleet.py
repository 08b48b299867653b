"""SLURM as it behaves beyond the happy path, through submitit's real ``SlurmExecutor`` and ``tests/slurm_standin.py``.

Each replica here serves ``python -m http.server`` (health path ``/``): these tests are about jobs, queues, nodes and
cancellation, which a tiny real HTTP server shows as well as a model server, and it starts in a fraction of a second.
The stand-in is told through files in its state folder to hold jobs in the queue, requeue one on another node, refuse
``scancel``, or answer as a cluster without accounting.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from stepeval.client import endpoints
from stepeval.fleet import slurm
from stepeval.fleet.fleet import Fleet
from stepeval.fleet.slurm import job_states
from stepeval.fleet.spec import LaunchSpec
from tests import slurm_standin

HTTP = "{python} -m http.server {port} --bind 127.0.0.1"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in on PATH, its state folder; at teardown every job it started is ended (by its process group)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    slurm_standin.install(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_SLURM_DIR", str(state))
    monkeypatch.setenv("STEPEVAL_FLEET_ADVERTISE_HOST", "127.0.0.1")
    state.mkdir()
    yield state
    for pid_file in state.glob("*.pid"):
        pid = int(pid_file.read_text())
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def spec(**launch) -> LaunchSpec:
    slurm_settings = {"time_min": 60, **launch.pop("slurm", {})}
    raw = {
        "command": HTTP,
        "where": "slurm",
        "health_path": "/",
        "startup_timeout_s": 60,
        "stop_timeout_s": 10,
        "monitor_interval_s": 0.3,
        "slurm": slurm_settings,
        **launch,
    }
    return LaunchSpec.from_config(raw)


def events(fleet: Fleet) -> list[tuple[int, str]]:
    return [(e["replica"], e["event"]) for e in fleet.events]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def job_pids(state: Path) -> list[int]:
    return [int(p.read_text()) for p in state.glob("*.pid")]


# ---------------------------------------------------------------- settings (no jobs)


def test_time_limit_must_outlast_the_startup_timeout_and_resources_have_defaults():
    with pytest.raises(ValueError, match=r"model.launch.slurm.time_min=10 \(600 s\) does not outlast .*startup_timeout_s=900"):
        LaunchSpec.from_config({"command": "x", "where": "slurm", "slurm": {"time_min": 10}})
    LaunchSpec.from_config({"command": "x", "where": "local", "slurm": {"time_min": 10}})  # local: not a SLURM job
    two = LaunchSpec.from_config({"command": "x", "where": "slurm", "gpus_per_replica": 2})
    assert (two.slurm_cpus(), two.slurm_mem_gb()) == (16, 128)
    cpu_only = LaunchSpec.from_config({"command": "x", "where": "slurm", "slurm": {"cpus_per_task": 4, "mem_gb": 20}})
    assert (cpu_only.slurm_cpus(), cpu_only.slurm_mem_gb()) == (4, 20)
    # the interpreter on the node: the one setup's environment puts on PATH, unless named
    assert (
        LaunchSpec.from_config({"command": "x", "where": "slurm", "slurm": {"setup": ["source /v/bin/activate"]}}).slurm_python()
        == "python"
    )
    assert LaunchSpec.from_config({"command": "x", "where": "slurm"}).slurm_python() == sys.executable
    named = {"setup": ["module load x"], "python": "/opt/env/bin/python3"}
    assert LaunchSpec.from_config({"command": "x", "where": "slurm", "slurm": named}).slurm_python() == "/opt/env/bin/python3"


# ---------------------------------------------------------------- jobs through the stand-in


@pytest.mark.slow
def test_queued_then_starting_with_their_own_deadlines_and_one_query_for_all(tmp_path: Path, standin: Path):
    """Items 5 and 6: replicas queue (PENDING) past startup_timeout_s without failing; one sacct call a tick asks
    about every job; a job still queued at queue_timeout_s is cancelled and given up while another replica serves."""
    (standin / "hold").write_text("")
    fleet = Fleet(spec(replicas=2, startup_timeout_s=8, slurm={"queue_timeout_s": 16}), tmp_path / "fleet", "m")

    def release_first():
        wait_for(lambda: (standin / "1000.held").exists(), 30, "job 1000 submitted")
        time.sleep(10)  # queued longer than startup_timeout_s=8: the queue has its own deadline
        slurm_standin.release(standin, "1000")

    releaser = threading.Thread(target=release_first)
    releaser.start()
    try:
        with fleet:
            releaser.join()
            assert [e["base_url"] for e in fleet.endpoints()] == [f"{fleet.replicas[0].base_url}/v1"]
            assert [e["name"] for e in fleet.endpoints()] == ["m replica 0"]
    finally:
        releaser.join()
    seen = events(fleet)
    assert seen[:2] == [(0, "submitted"), (1, "submitted")]  # not "started": a submission queues first
    assert seen.index((0, "running")) < seen.index((0, "healthy"))
    given_up = next(e for e in fleet.events if e["event"] == "given up")
    assert given_up["replica"] == 1 and "job 1001 still PENDING" in given_up["detail"]
    assert "queue_timeout_s=16" in given_up["detail"]
    assert (standin / "1001.cancelled").exists()
    queries = slurm_standin.calls(standin, "sacct")
    assert queries and all(q.count("-j") == 1 for q in queries)  # one call per tick, never one per replica
    assert any("1000,1001" in q for q in queries)


@pytest.mark.slow
def test_a_run_whose_replicas_never_leave_the_queue_says_they_were_pending(tmp_path: Path, standin: Path):
    (standin / "hold").write_text("")
    fleet = Fleet(spec(replicas=2, slurm={"queue_timeout_s": 2}), tmp_path / "fleet", "m")
    with pytest.raises(RuntimeError) as caught:
        with fleet:
            pass
    message = str(caught.value)
    assert "still PENDING" in message and "queue_timeout_s=2" in message and "no other replica" in message
    assert "_log.out" not in message  # no log file is named: a queued job has none yet
    assert (standin / "1000.cancelled").exists() and (standin / "1001.cancelled").exists()


@pytest.mark.slow
def test_without_accounting_squeue_answers_and_an_ended_job_is_not_alive(tmp_path: Path, standin: Path):
    """Item 5: sacct fails on a cluster without slurmdbd; the state then comes from squeue, and a job it no longer
    lists has ended (before: UNKNOWN, alive forever)."""
    (standin / "no_accounting").write_text("")
    fleet = Fleet(spec(replicas=2), tmp_path / "fleet", "m")
    with fleet:
        assert {(0, "healthy"), (1, "healthy")} <= set(events(fleet))
        os.killpg(int((standin / "1001.pid").read_text()), signal.SIGKILL)  # the job ends without scancel
        states = wait_for(lambda: (s := job_states(["1000", "1001"]))["1001"].state == slurm.GONE and s, 30, "job gone")
        assert states["1000"].state == "RUNNING" and states["1000"].node == "standin-node-1"
        wait_for(lambda: (1, "died") in events(fleet), 30, "the monitor sees replica 1 gone")
    assert slurm_standin.calls(standin, "squeue")
    died = next(e for e in fleet.events if e["event"] == "died")
    assert "GONE" in died["detail"] and "exit status is unknown" in died["detail"]


@pytest.mark.slow
def test_a_requeued_job_that_comes_back_on_another_node_moves_its_endpoint(tmp_path: Path, standin: Path):
    """Item 2: REQUEUED counts as queued again (an event says so); the address is read again and the wire client's
    endpoint follows the job to its new node and port."""
    fleet = Fleet(spec(replicas=1), tmp_path / "fleet", "m")
    with fleet:
        replica = fleet.replicas[0]
        old = replica.base_url
        (standin / "hold").write_text("")
        slurm_standin.requeue(standin, "1000", "standin-node-7")
        wait_for(lambda: (0, "requeued") in events(fleet), 30, "the requeue noticed")
        slurm_standin.release(standin, "1000")
        wait_for(lambda: (0, "moved") in events(fleet), 30, "the endpoint moved")
        assert replica.node == "standin-node-7" and replica.base_url != old
        assert endpoints._MOVED[f"{old}/v1"] == f"{replica.base_url}/v1"
        wait_for(lambda: (0, "running again") in events(fleet), 30, "running again")
    record = fleet.describe()["replicas"][0]
    assert record["node"] == "standin-node-7" and record["base_url"] == f"{replica.base_url}/v1"


@pytest.mark.slow
def test_a_restart_is_pinned_by_slurm_node_name_or_not_at_all(tmp_path: Path, standin: Path):
    """Item 1: --nodelist takes SLURM's node name (never the advertised address), and only with pin_restarts."""
    for pin, folder in ((False, "free"), (True, "pinned")):
        fleet = Fleet(spec(replicas=1, slurm={"pin_restarts": pin}), tmp_path / folder, "m")
        with fleet:
            replica = fleet.replicas[0]
            first = replica.job_id
            os.killpg(int((standin / f"{first}.pid").read_text()), signal.SIGKILL)
            wait_for(lambda r=replica, f=first, fl=fleet: r.job_id != f and (r.index, "healthy") in events(fl)[2:], 60, "restart")
            sbatch = (standin / f"{replica.job_id}.sbatch").read_text()
        assert "127.0.0.1" not in sbatch
        if pin:
            assert "#SBATCH --nodelist=standin-node-1" in sbatch
        else:
            assert "--nodelist" not in sbatch


@pytest.mark.slow
def test_a_failing_scancel_is_reported_not_recorded_as_stopped(tmp_path: Path, standin: Path, capsys):
    """Items 3 and 4: one scancel for every job; when it fails, fleet.json says so and the jobs are named."""
    fleet = Fleet(spec(replicas=2), tmp_path / "fleet", "m")
    fleet.start()
    (standin / "scancel_fails").write_text("")
    fleet.stop()
    err = capsys.readouterr().err
    assert "scancel 1000 1001 failed: scancel: error: Kill job error on job id 1000: Access/permission denied" in err
    assert "the jobs may still run: 1000, 1001" in err
    seen = events(fleet)
    assert (0, "stop failed") in seen and (1, "stop failed") in seen and (0, "stopped") not in seen
    assert all(_alive(pid) for pid in job_pids(standin))  # as on a cluster: refused, they run on
    assert slurm_standin.calls(standin, "scancel") == ["1000 1001"]
    (standin / "scancel_fails").unlink()
    slurm.cancel(["1000", "1001"])
    wait_for(lambda: not any(_alive(pid) for pid in job_pids(standin)), 30, "jobs ended")


@pytest.mark.slow
def test_teardown_is_one_scancel_and_ctrl_c_ends_only_the_wait(tmp_path: Path, standin: Path, monkeypatch, capsys):
    fleet = Fleet(spec(replicas=3), tmp_path / "fleet", "m")
    fleet.start()
    calls_before = len(slurm_standin.calls(standin, "sacct"))

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(slurm.time, "sleep", interrupted)
    monkeypatch.setattr(slurm, "job_states", lambda ids: {j: slurm.JobState("COMPLETING") for j in ids})
    fleet.stop()
    assert slurm_standin.calls(standin, "scancel") == ["1000 1001 1002"]
    assert "not waiting for slurm job(s) 1000, 1001, 1002 to end (scancel was sent)" in capsys.readouterr().err
    assert len(slurm_standin.calls(standin, "sacct")) == calls_before
    wait_for(lambda: not any(_alive(pid) for pid in job_pids(standin)), 30, "jobs ended")


@pytest.mark.slow
def test_a_crashed_server_is_a_failed_job(tmp_path: Path, standin: Path):
    """Item 9: the job raises when its server exits non-zero, so SLURM says FAILED (it said COMPLETED)."""
    crash = spec(replicas=1, command="{python} -c 'import sys; sys.exit(3)'")
    with pytest.raises(RuntimeError, match=r"model.launch: replica 0: slurm job 1000 is FAILED; log: .*1000_0_log.out"):
        with Fleet(crash, tmp_path / "fleet", "m"):
            pass
    assert job_states(["1000"])["1000"].state == "FAILED"
    log = (tmp_path / "fleet" / "slurm" / "1000_0_log.out").read_text()
    assert "the server exited with code 3" in log


@pytest.mark.slow
def test_setup_selects_the_python_the_job_runs(tmp_path: Path, standin: Path):
    """Item 8: with setup lines, the job runs `python` from the environment they prepare (here a folder whose
    python leaves a mark and runs this interpreter), not the harness's own path."""
    env_bin = tmp_path / "other-env" / "bin"
    env_bin.mkdir(parents=True)
    marker = tmp_path / "other-env-used"
    (env_bin / "python").write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{sys.executable}" "$@"\n')
    (env_bin / "python").chmod(0o755)
    setup = {"setup": [f"export PATH={env_bin}:$PATH"]}
    fleet = Fleet(spec(replicas=1, slurm=setup), tmp_path / "fleet", "m")
    with fleet:
        assert (0, "healthy") in events(fleet)
    sbatch = (standin / "1000.sbatch").read_text()
    assert "python -u -m submitit.core._submit" in sbatch and sys.executable not in sbatch.split("srun", 1)[1]
    assert "#SBATCH --cpus-per-task=8" in sbatch and "#SBATCH --mem=64GB" in sbatch
    assert marker.exists()


def test_the_replica_state_query_is_batched(monkeypatch: pytest.MonkeyPatch):
    """One sacct for many jobs; the stand-in's calls are not needed to see the command line."""
    seen: list[list[str]] = []

    def run(argv):
        seen.append(argv)
        import subprocess

        return subprocess.CompletedProcess(argv, 0, "7|RUNNING|gpu-01\n8|PENDING|None assigned\n", "")

    monkeypatch.setattr(slurm, "_run", run)
    states = job_states(["8", "7", "9"])
    assert len(seen) == 1 and seen[0][-2:] == ["-j", "7,8,9"]
    assert states["7"] == slurm.JobState("RUNNING", "gpu-01") and states["8"].queued and states["8"].node is None
    assert states["9"].state == "UNKNOWN"  # not listed yet: counted as queued, not as ended
