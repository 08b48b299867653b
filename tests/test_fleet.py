"""Fleets the harness starts itself (`model.launch`): real `stepeval serve parrot` replicas as subprocesses.

`stepeval run` launches them, waits for health, evaluates through them and stops them; a replica killed mid-run
is restarted while the others carry its turns (one that restarts slowly gets no turn while down); a run killed with
SIGTERM or SIGHUP leaves no replica behind (checked by PID). A sweep whose jobs fail at setup keeps its table
(basic and submitit_local launchers).
The SLURM path runs through submitit's real SlurmExecutor against a local stand-in for sbatch/srun/sacct/scancel
(tests/slurm_standin.py). A multirun goes through Hydra's submitit_local launcher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepeval.data import loader, sources
from stepeval.fleet.spec import LaunchSpec
from stepeval.store import RecordLog
from tests import slurm_standin
from tests.run_helpers import only_run, run_command

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TURNS = sum(len(c.turns) for c in loader.load(sources.bundled_sample()).conversations)


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def fleet_record(results: Path) -> dict | None:
    found = list(results.glob("*/fleet/fleet.json"))
    if not found:
        return None
    try:
        return json.loads(found[0].read_text())
    except json.JSONDecodeError:  # caught mid-replace
        return None


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the run exited early with {process.returncode}: {process.stdout.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def all_pids(record: dict) -> list[int]:
    return [pid for replica in record["replicas"] for pid in replica.get("pids", [])]


@pytest.fixture
def started():
    """Processes a test starts; every one (and its group) is killed at teardown, whatever happened."""
    processes: list[subprocess.Popen] = []
    pids: list[int] = []
    yield processes, pids
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    for pid in pids:
        if alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def launch(results: Path, *overrides: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        run_command(results, "dataset=sample", "asr=none", *overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


PARROT = "{stepeval} serve parrot model.backend.delay_s=%s --host {host} --port {port} --max-concurrent 2"


# ---------------------------------------------------------------- the launch section


def test_launch_spec_checks_fields_and_shares_out_gpus():
    spec = LaunchSpec.from_config({"command": "vllm serve m --port {port} -tp {gpus}", "replicas": 4, "gpus_per_replica": 2})
    assert spec.gpus is None and spec.host == "127.0.0.1" and spec.monitor_interval_s == 1.0
    spec.gpus = [0, 1, 2, 3, 4, 5, 6, 7]
    assert spec.gpu_groups() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert spec.argv(2, 8123) == ["vllm", "serve", "m", "--port", "8123", "-tp", "2"]
    spec.gpus = [0, 1, 2]
    with pytest.raises(ValueError, match=r"4 replica\(s\) x 2 GPU\(s\) need 8 GPUs, and this node offers 3"):
        spec.gpu_groups()
    slurm = LaunchSpec.from_config({"command": ["x"], "where": "slurm"})
    assert slurm.host == "0.0.0.0" and slurm.monitor_interval_s == 15.0
    with pytest.raises(ValueError, match=r"model.launch.where='k8s': use local or slurm"):
        LaunchSpec.from_config({"command": "x", "where": "k8s"})
    with pytest.raises(ValueError, match=r"model.launch.replicas must be >= 1"):
        LaunchSpec.from_config({"command": "x", "replicas": 0})
    with pytest.raises(ValueError, match=r"unknown placeholder .*'prot'"):
        LaunchSpec.from_config({"command": "serve --port {prot}"})
    with pytest.raises(ValueError, match=r"model.launch.command must be a non-empty string or list"):
        LaunchSpec.from_config({"command": ""})


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    spec = LaunchSpec.from_config({"command": "x", "replicas": 2, "gpus_per_replica": 1})
    assert spec.gpu_groups() == [[3], [5]]


def test_launch_and_endpoints_together_is_refused(tmp_path: Path):
    from tests.run_helpers import stepeval_run

    done = stepeval_run(tmp_path, "model=parrot_fleet", "model.base_url=http://127.0.0.1:9/v1", "dataset=sample", "asr=none")
    assert done.returncode == 1
    assert "model.launch and model.base_url/model.endpoints are both set" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_replica_that_cannot_start_fails_the_run_with_its_log(tmp_path: Path):
    from tests.run_helpers import stepeval_run

    command = "model.launch.command='{stepeval} serve no_such_model --port {port}'"
    done = stepeval_run(tmp_path, "model=parrot_fleet", command, "model.launch.replicas=1", "dataset=sample", "asr=none")
    assert done.returncode == 1
    assert "model.launch: replica 0 exited with code 1; last lines of " in done.stderr
    log = next(tmp_path.glob("*/fleet/replica-0.log"))
    assert str(log) in done.stderr and "no_such_model" in log.read_text()
    assert not list(tmp_path.rglob("replay.jsonl"))


# ---------------------------------------------------------------- local fleets, end to end


@pytest.mark.slow
def test_local_fleet_is_launched_used_and_torn_down(tmp_path: Path, started):
    processes, pids = started
    run = launch(tmp_path, "model=parrot_fleet", "limit=4")
    processes.append(run)
    out, _ = run.communicate(timeout=240)
    assert run.returncode == 0, out
    run_dir = only_run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    fleet = manifest["fleet"]
    pids += all_pids(fleet)
    assert manifest["status"] == "complete"
    assert fleet["where"] == "local" and len(fleet["replicas"]) == 2
    urls = {r["base_url"] for r in fleet["replicas"]}
    assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") and u.endswith("/v1") for u in urls)
    events = [(e["replica"], e["event"]) for e in fleet["events"]]
    for i in (0, 1):
        assert events.index((i, "started")) < events.index((i, "healthy")) < events.index((i, "stopped"))
    # the run spoke to the replicas it launched, both of them, through the wire client
    replays = RecordLog(run_dir / "records" / "replay.jsonl").load()
    assert replays and all(r["status"] == "ok" for r in replays.values())
    assert {r["extra"]["endpoint"] for r in replays.values()} == {0, 1}
    assert manifest["config"]["model"]["launch"] is None  # replicas are transport: the run's name ignores them
    for replica in fleet["replicas"]:
        log = Path(replica["log"]).read_text()
        assert Path(replica["log"]).parent == run_dir / "fleet"
        assert "stepeval serve: parrot" in log and f"--port {replica['base_url'].rsplit(':', 1)[1][:-3]}" in log
    assert not [pid for pid in all_pids(fleet) if alive(pid)]


@pytest.mark.slow
def test_a_replica_killed_mid_run_is_restarted_and_no_turn_is_lost(tmp_path: Path, started):
    processes, pids = started
    run = launch(tmp_path, "model=parrot_fleet", f"model.launch.command='{PARROT % 0.5}'")
    processes.append(run)
    record = wait_for(
        lambda: (r := fleet_record(tmp_path)) and sum(e["event"] == "healthy" for e in r["events"]) == 2 and r,
        120,
        "two healthy replicas",
        run,
    )
    pids += all_pids(record)
    run_dir = next(tmp_path.glob("*/fleet")).parent
    wait_for(lambda: (run_dir / "records" / "replay.jsonl").exists(), 60, "the first replies", run)
    victim = record["replicas"][0]["pids"][0]
    os.killpg(victim, signal.SIGKILL)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    fleet = json.loads((run_dir / "manifest.json").read_text())["fleet"]
    pids += all_pids(fleet)
    events = [(e["replica"], e["event"]) for e in fleet["events"]]
    died = events.index((0, "died"))
    assert events[died + 1 :].index((0, "restarted")) < events[died + 1 :].index((0, "healthy"))
    assert len(fleet["replicas"][0]["pids"]) == 2 and fleet["replicas"][0]["pids"][0] == victim
    replays = RecordLog(run_dir / "records" / "replay.jsonl").load()
    assert len(replays) == SAMPLE_TURNS and all(r["status"] == "ok" for r in replays.values())
    retried = [r for r in replays.values() if r["extra"].get("retries")]
    assert all(retry["endpoint"] == 0 for r in retried for retry in r["extra"]["retries"])
    assert not [pid for pid in all_pids(fleet) if alive(pid)]


@pytest.mark.slow
def test_sigterm_to_the_run_stops_every_replica(tmp_path: Path, started):
    processes, pids = started
    run = launch(tmp_path, "model=parrot_fleet", f"model.launch.command='{PARROT % 5}'")
    processes.append(run)
    record = wait_for(
        lambda: (r := fleet_record(tmp_path)) and sum(e["event"] == "healthy" for e in r["events"]) == 2 and r,
        120,
        "two healthy replicas",
        run,
    )
    pids += all_pids(record)
    assert all(alive(pid) for pid in all_pids(record))
    time.sleep(1.0)  # turns in flight
    run.send_signal(signal.SIGTERM)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 143, out
    assert not [pid for pid in all_pids(record) if alive(pid)]
    final = fleet_record(tmp_path)
    assert {(e["replica"], e["event"]) for e in final["events"]} >= {(0, "stopped"), (1, "stopped")}
    assert final["stopped_at"] is not None


# ---------------------------------------------------------------- SLURM through submitit, against a local stand-in


@pytest.mark.slow
def test_slurm_fleet_through_submitit_and_a_local_slurm_standin(tmp_path: Path, started):
    processes, pids = started
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    slurm_standin.install(bin_dir)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STANDIN_SLURM_DIR": str(state),
        "STEPEVAL_FLEET_ADVERTISE_HOST": "127.0.0.1",
    }
    results = tmp_path / "results"
    run = launch(
        results,
        "model=parrot_fleet",
        "model.launch.where=slurm",
        "model.launch.gpus_per_replica=1",
        "model.launch.slurm.partition=gpu",
        "model.launch.slurm.time_min=90",
        # setup chooses the environment the job's `python` comes from (here the one running the tests)
        f"model.launch.slurm.setup=['export STEPEVAL_STANDIN_SETUP=1','export PATH={Path(sys.executable).parent}:$PATH']",
        "model.launch.monitor_interval_s=1",
        "limit=3",
        env=env,
    )
    processes.append(run)
    try:
        out, _ = run.communicate(timeout=300)
    finally:
        for pid_file in state.glob("*.pid"):
            pids.append(int(pid_file.read_text()))
    assert run.returncode == 0, out
    run_dir = only_run(results)
    fleet = json.loads((run_dir / "manifest.json").read_text())["fleet"]
    assert fleet["where"] == "slurm"
    job_ids = [r["job_ids"][0] for r in fleet["replicas"]]
    assert sorted(job_ids) == ["1000", "1001"]
    for job_id in job_ids:
        sbatch = (state / f"{job_id}.sbatch").read_text()  # the file submitit wrote, as sbatch received it
        assert "#SBATCH --partition=gpu" in sbatch and "#SBATCH --gpus-per-node=1" in sbatch
        assert "#SBATCH --time=90" in sbatch and "#SBATCH --job-name=stepeval-parrot_fleet-r" in sbatch
        assert "export STEPEVAL_STANDIN_SETUP=1" in sbatch and "srun --unbuffered" in sbatch
        assert "python -u -m submitit.core._submit" in sbatch  # the setup's python, not this process's path
        assert (state / f"{job_id}.cancelled").exists()  # scancel'd at the end of the run
    replays = RecordLog(run_dir / "records" / "replay.jsonl").load()
    assert replays and all(r["status"] == "ok" for r in replays.values())
    assert {r["extra"]["endpoint"] for r in replays.values()} == {0, 1}
    urls = {r["index"]: r["base_url"] for r in fleet["replicas"]}
    assert {r["served_by"] for r in replays.values()} == {f"parrot_fleet replica {i} at {urls[i]}" for i in (0, 1)}
    assert [e["event"] for e in fleet["events"] if e["replica"] == 0][:3] == ["submitted", "running", "healthy"]
    for replica in fleet["replicas"]:
        log = Path(replica["log"])
        assert log.is_relative_to(run_dir) and "stepeval serve: parrot" in log.read_text()
    assert not [pid for pid in pids if alive(pid)]


# ---------------------------------------------------------------- multirun through Hydra's submitit launcher


@pytest.mark.slow
def test_multirun_through_submitit_local_writes_the_comparison_when_the_last_job_ends(tmp_path: Path):
    done = subprocess.run(
        [
            *run_command(tmp_path, "--multirun", "model=silence,parrot_fleet", "dataset=sample", "asr=none", "limit=2"),
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep = tmp_path / "sweeps"
    table = (sweep / "comparison.md").read_text()
    header = table.splitlines()[0]
    assert header == "| metric | silence | parrot_fleet |"
    assert "duration_s" in table
    # each model ran as its own submitit job (its own process, its own log), the fleet inside its job
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2
    assert any("stepeval fleet: replica 1 healthy" in log.read_text() for log in logs)
    runs = {p.name.split("-")[1] for p in tmp_path.iterdir() if p.is_dir() and p.name != "sweeps"}
    assert runs == {"silence", "parrot_fleet"}


@pytest.mark.slow
def test_a_submitit_job_with_failed_records_makes_the_sweep_exit_1_after_its_table(tmp_path: Path):
    """The jobs run in other processes: their failures come back through the sweep's notes, not the parent's memory."""
    broken = ["dataset=sample", "asr=none", "limit=1", "asr.engine={_target_:tests.broken_parts.NoNetworkASR}"]
    submitit = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]

    def sweep(results: Path, *extra: str) -> subprocess.CompletedProcess:
        command = [*run_command(results, "--multirun", "model=silence,parrot", *broken, *extra), *submitit]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)

    failed = sweep(tmp_path / "strict")
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "sweep job(s) #0, #1 ended with problems" in failed.stdout
    assert (tmp_path / "strict" / "sweeps" / "comparison.md").is_file()  # the table is written first
    accepted = sweep(tmp_path / "accepted", "allow_failures=true")
    assert accepted.returncode == 0, accepted.stdout[-3000:] + accepted.stderr[-3000:]
    assert "ended with problems" not in accepted.stdout


# ---------------------------------------------------------------- sweeps whose jobs fail


def _unreachable_models(conf: Path) -> None:
    """Two model options whose server is not there: their jobs fail at setup (the pre-flight check)."""
    (conf / "model").mkdir(parents=True)
    for name in ("down_a", "down_b"):
        (conf / "model" / f"{name}.yaml").write_text(
            f"defaults: [schema, _self_]\nname: {name}\nbase_url: http://127.0.0.1:9/v1\n"
        )


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_sweep_with_jobs_failing_at_setup_first_and_last_keeps_its_table(tmp_path: Path, launcher: str):
    """Every job's outcome reaches the table and the exit status; the jobs between still run; no job process outlives
    the command (submitit: each job's PID is its folder's name)."""
    conf = tmp_path / "conf"
    _unreachable_models(conf)
    command = run_command(
        tmp_path / "results", "--multirun", "--config-dir", str(conf), "model=down_a,silence,down_b", "dataset=sample"
    )
    command += ["asr=none", "limit=1", "allow_failures=true"]  # silence's own records are accepted: only setup fails
    if launcher == "submitit_local":
        command += ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "UncompletedJobError" not in done.stderr
    sweep = tmp_path / "results" / "sweeps"
    table = (sweep / "comparison.md").read_text()
    assert table.splitlines()[0] == "| metric | down_a | silence | down_b |"
    assert "| duration_s | failed | 2.000 (2/2) | failed |" in table
    for name in ("down_a", "down_b"):
        assert f"- `{name}`: FAILED, no run: endpoint 0 (http://127.0.0.1:9/v1) cannot be reached" in table
    assert "- `silence`: sample-silence-" in table
    assert "sweep job(s) #0, #2 ended with problems" in done.stdout
    assert len([p for p in (tmp_path / "results").iterdir() if p.name.startswith("sample-silence-")]) == 1
    if launcher == "submitit_local":
        pids = [int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
        assert len(pids) == 3
        assert not [pid for pid in pids if alive(pid)]


# ---------------------------------------------------------------- replicas that fail over, SIGHUP


@pytest.mark.slow
def test_a_replica_that_restarts_slowly_gets_no_turn_while_down(tmp_path: Path, started):
    """Replica 0 is killed mid-run and takes 8 s to come back: the turns it held fail over once, and no new turn is
    sent to it while it is down (before: every retry went to the dead replica, which fails fast and so looks idle)."""
    processes, pids = started
    serve = tmp_path / "serve.sh"
    marks = tmp_path / "marks"
    marks.mkdir()
    serve.write_text(
        "#!/bin/bash\n"  # a replica's second start (its restart) is slow
        f'if [ -e "{marks}/$1" ]; then sleep 8; fi\ntouch "{marks}/$1"\n'
        f'exec "{sys.executable}" -m stepeval.cli serve parrot model.backend.delay_s=0.3 --host 127.0.0.1 --port $2 '
        "--max-concurrent 2\n"
    )
    run = launch(tmp_path / "results", "model=parrot_fleet", f"model.launch.command='bash {serve} {{replica}} {{port}}'")
    processes.append(run)
    results = tmp_path / "results"
    record = wait_for(
        lambda: (r := fleet_record(results)) and sum(e["event"] == "healthy" for e in r["events"]) == 2 and r,
        120,
        "two healthy replicas",
        run,
    )
    pids += all_pids(record)
    run_dir = next(results.glob("*/fleet")).parent
    wait_for(lambda: (run_dir / "records" / "replay.jsonl").exists(), 60, "the first replies", run)
    os.killpg(record["replicas"][0]["pids"][0], signal.SIGKILL)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    fleet = json.loads((run_dir / "manifest.json").read_text())["fleet"]
    pids += all_pids(fleet)
    replays = RecordLog(run_dir / "records" / "replay.jsonl").load()
    assert len(replays) == SAMPLE_TURNS and all(r["status"] == "ok" for r in replays.values())
    failed_on_0 = [retry for r in replays.values() for retry in r["extra"]["retries"] if retry["endpoint"] == 0]
    assert failed_on_0, "the kill hit no turn in flight: the test proved nothing"
    assert len(failed_on_0) <= 2  # the turns in flight on it (concurrency 2); none sent while it was down
    assert all(r["extra"]["endpoint"] == 1 for r in replays.values() if r["extra"]["retries"])
    assert {r["served_by"].rsplit(" at ", 1)[0] for r in replays.values()} <= {"parrot_fleet replica 0", "parrot_fleet replica 1"}
    assert "does not serve model" not in out  # parrot_fleet names the model its replicas serve
    assert not [pid for pid in all_pids(fleet) if alive(pid)]


@pytest.mark.slow
def test_sighup_to_the_run_stops_every_replica_and_fails_the_manifest(tmp_path: Path, started):
    """A dropped ssh session: handled like SIGTERM (before: exit 129 with both replicas running, manifest 'running')."""
    processes, pids = started
    run = launch(tmp_path, "model=parrot_fleet", f"model.launch.command='{PARROT % 5}'")
    processes.append(run)
    record = wait_for(
        lambda: (r := fleet_record(tmp_path)) and sum(e["event"] == "healthy" for e in r["events"]) == 2 and r,
        120,
        "two healthy replicas",
        run,
    )
    pids += all_pids(record)
    run_dir = next(tmp_path.glob("*/fleet")).parent
    wait_for(lambda: json.loads((run_dir / "manifest.json").read_text()).get("status") == "running", 60, "the run", run)
    time.sleep(1.0)  # turns in flight
    run.send_signal(signal.SIGHUP)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 129, out
    assert not [pid for pid in all_pids(record) if alive(pid)]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "129" in manifest["error"]
    assert {(e["replica"], e["event"]) for e in manifest["fleet"]["events"]} >= {(0, "stopped"), (1, "stopped")}
