"""Start a model's replicas, wait for health, watch them while the run goes, stop them whatever happens.

Teardown runs on a normal exit, on an error, on Ctrl-C, on SIGTERM and on SIGHUP (turned into ``SystemExit(143)``
and ``SystemExit(129)`` while the fleet is up). A replica that dies mid-run is restarted (``max_restarts`` per
replica) by the monitor thread; its
in-flight turns fail over to the other replicas through the wire client's retries meanwhile. What was launched
where goes to ``<run>/fleet/fleet.json`` and to the manifest's ``fleet`` entry; each replica's log to
``<run>/fleet/``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from omegaconf import DictConfig, OmegaConf, open_dict

from stepeval.client.endpoints import move_endpoint
from stepeval.config import EndpointSchema
from stepeval.fleet import slurm
from stepeval.fleet.local import LocalReplica, free_port
from stepeval.fleet.slurm import SlurmReplica
from stepeval.fleet.spec import LaunchSpec


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class Fleet:
    """The replicas of one model; a context manager: ``__enter__`` starts them and waits, ``__exit__`` stops them."""

    def __init__(self, spec: LaunchSpec, folder: Path, name: str):
        self.spec, self.folder, self.name = spec, Path(folder), name
        self.replicas: list[Any] = []
        self.events: list[dict] = []
        self.given_up: set[int] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self.started_at: str | None = None
        self.stopped_at: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.started_at = _now()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per health poll
        if self.spec.where == "local":
            groups = self.spec.gpu_groups()
            for i, gpus in enumerate(groups):
                port = self.spec.base_port + i if self.spec.base_port else free_port()
                self.replicas.append(LocalReplica(self.spec, i, gpus, port, self.folder / f"replica-{i}.log"))
            for replica in self.replicas:
                replica.start()
                self._event(replica.index, "started")
            self.write_record()
            self.wait_healthy(self.replicas, time.monotonic() + self.spec.startup_timeout_s)
        else:
            folder = Path(self.spec.slurm.folder) if self.spec.slurm.folder else self.folder / "slurm"
            self.replicas = [SlurmReplica(self.spec, i, folder, self.name) for i in range(self.spec.replicas)]
            for replica in self.replicas:
                replica.start()  # a submission: the job queues first
                self._event(replica.index, "submitted", job_id=replica.job_id)
            self.write_record()
            self.wait_slurm(self.replicas, at_start=True)
        self.write_record()
        self._monitor = threading.Thread(target=self._watch, name="fleet-monitor", daemon=True)
        self._monitor.start()

    def wait_healthy(self, replicas: list[Any], deadline: float) -> None:
        """Local replicas: until each answers ``health_path`` with 200; fails at once if one exits, or at the deadline."""
        if replicas and replicas[0].where == "slurm":
            self.wait_slurm(replicas)
            return
        waiting = list(replicas)
        while waiting:
            if self._stopping.is_set():
                raise RuntimeError("fleet stopped while replicas were starting")
            for replica in list(waiting):
                if healthy(f"{replica.base_url}{self.spec.health_path}"):
                    waiting.remove(replica)
                    self._event(replica.index, "healthy", base_url=replica.base_url)
                elif not replica.alive():
                    raise RuntimeError(f"model.launch: {replica.failure()}")
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"replica {r.index} ({r.log})" for r in waiting)
                raise RuntimeError(
                    f"model.launch: not healthy within startup_timeout_s={self.spec.startup_timeout_s:g}: {names}; "
                    "raise model.launch.startup_timeout_s or read the logs"
                )
            if waiting:
                time.sleep(0.2)

    def wait_slurm(self, replicas: list[SlurmReplica], at_start: bool = False) -> None:
        """SLURM jobs through their two phases, each with its own deadline: queued (``slurm.queue_timeout_s`` from
        submission) and starting (``startup_timeout_s`` from the job running until health answers).

        A job still queued at its deadline is cancelled and given up while another replica can carry the run; a job
        that ends, or runs but is not healthy in time, fails the start (its log exists by then)."""
        spec = self.spec
        poll = min(2.0, spec.monitor_interval_s)
        queue_deadline = time.monotonic() + spec.slurm.queue_timeout_s
        running_since: dict[int, float] = {}
        said_queued: dict[int, float] = {}
        waiting = list(replicas)
        while waiting:
            if self._stopping.is_set():
                raise RuntimeError("fleet stopped while replicas were starting")
            slurm.refresh(waiting)
            now = time.monotonic()
            for replica in list(waiting):
                job = f"job {replica.job_id}"
                if not replica.alive():
                    raise RuntimeError(f"model.launch: {replica.failure()}")
                if replica.queued() and not replica.started():
                    if now > queue_deadline:
                        waiting.remove(replica)
                        self._give_up_queued(replica, waiting, at_start)
                    elif now - said_queued.get(replica.index, -1e9) >= 60:  # a line a minute: why nothing happens
                        said_queued[replica.index] = now
                        reason = f", {replica.last.reason}" if replica.last.reason else ""
                        print(f"stepeval fleet: replica {replica.index}: {job} queued ({replica.last.state}{reason})", flush=True)
                    continue
                if replica.index not in running_since:
                    running_since[replica.index] = now
                    self._event(replica.index, "running", job_id=replica.job_id, node=replica.node)
                if replica.started() and healthy(f"{replica.base_url}{spec.health_path}"):
                    waiting.remove(replica)
                    self._event(replica.index, "healthy", base_url=replica.base_url, node=replica.node)
                elif now - running_since[replica.index] > spec.startup_timeout_s:
                    raise RuntimeError(
                        f"model.launch: replica {replica.index} ({job}, running on {replica.node or '?'}) not healthy "
                        f"within startup_timeout_s={spec.startup_timeout_s:g} of starting; log: {replica.log}; raise "
                        "model.launch.startup_timeout_s or read the log"
                    )
            if waiting:
                time.sleep(poll)

    def _give_up_queued(self, replica: SlurmReplica, waiting: list[Any], at_start: bool) -> None:
        state = replica.last.state + (f" ({replica.last.reason})" if replica.last.reason else "")
        others = [r for r in self.replicas if r is not replica and r.index not in self.given_up]
        carried = [r for r in others if r not in waiting or not r.queued()] if at_start else others
        detail = f"job {replica.job_id} still {state} after slurm.queue_timeout_s={self.spec.slurm.queue_timeout_s:g}"
        try:
            slurm.stop_all([replica], self.spec.stop_timeout_s)
        except RuntimeError as err:
            detail += f"; {err}"
        if not carried:
            raise RuntimeError(
                f"model.launch: {detail} and no other replica can carry the run (queued jobs were never started); "
                "raise model.launch.slurm.queue_timeout_s, or pick a partition/qos with free GPUs"
            )
        self.given_up.add(replica.index)
        self._event(replica.index, "given up", detail=f"{detail}; cancelled, the other replicas carry the run")

    def _watch(self) -> None:
        """Monitor thread: restart a replica that died (not while stopping), up to ``max_restarts`` each; on SLURM
        also note jobs that went back to the queue (requeued) and follow a job that came back elsewhere."""
        restarts: dict[int, int] = {}
        requeued: set[int] = set()
        while not self._stopping.wait(self.spec.monitor_interval_s):
            active = [r for r in self.replicas if r.index not in self.given_up]
            if self.spec.where == "slurm":
                try:
                    slurm.refresh(active)  # one sacct (or squeue) for every replica
                except RuntimeError as err:
                    print(f"stepeval fleet: {err}", file=sys.stderr)
                    continue
            for replica in active:
                if self._stopping.is_set():
                    continue
                try:
                    if replica.alive():
                        if replica.where == "slurm":
                            self._follow(replica, requeued)
                        continue
                    self._event(replica.index, "died", detail=replica.failure().splitlines()[0])
                    if restarts.get(replica.index, 0) >= self.spec.max_restarts:
                        self.given_up.add(replica.index)
                        self._event(replica.index, "given up", detail=f"max_restarts={self.spec.max_restarts} reached")
                        continue
                    restarts[replica.index] = restarts.get(replica.index, 0) + 1
                    before = replica.base_url if getattr(replica, "host", True) else None
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        replica.stop(self.spec.stop_timeout_s)  # leftovers of the old process group / job
                        replica.start()
                    job_id = getattr(replica, "job_id", None)
                    self._event(replica.index, "restarted", attempt=restarts[replica.index], job_id=job_id)
                    self.wait_healthy([replica], time.monotonic() + self.spec.startup_timeout_s)
                    if before is not None and replica.base_url != before:
                        self._move(replica, before)
                except Exception as err:  # a restart that fails: the other replicas carry the run
                    if not self._stopping.is_set():
                        self._event(replica.index, "restart failed", detail=f"{type(err).__name__}: {err}")
                        self.given_up.add(replica.index)
                finally:
                    self.write_record()

    def _follow(self, replica: SlurmReplica, requeued: set[int]) -> None:
        """A live SLURM job that is queued again was requeued (preempted, node failure); one that wrote a new
        address serves there now: the wire client's endpoint moves with it."""
        if replica.queued():
            if replica.index not in requeued:
                requeued.add(replica.index)
                self._event(replica.index, "requeued", job_id=replica.job_id, detail=f"job {replica.job_id} {replica.state()}")
            return
        before = replica.base_url if replica.host else None
        if replica.moved() is not None and before is not None:
            self._move(replica, before)
        if replica.index in requeued and replica.read_address() is not None and replica.restart > 0:
            requeued.discard(replica.index)
            self._event(replica.index, "running again", node=replica.node, base_url=replica.base_url)

    def _move(self, replica: Any, before: str) -> None:
        api = self.spec.api_path
        move_endpoint(f"{before}{api}", f"{replica.base_url}{api}")
        self._event(replica.index, "moved", detail=f"{before} -> {replica.base_url}", base_url=replica.base_url)

    def stop(self) -> None:
        """Every replica stopped and reaped (local) or cancelled (slurm); safe to call twice.

        Local replicas all get SIGTERM first, then are waited for together (a second Ctrl-C does not cut that short:
        it is bounded by ``stop_timeout_s``). SLURM jobs get one ``scancel``; a Ctrl-C while waiting for SLURM to
        confirm ends the wait, not the cancel."""
        if self.stopped_at is not None:
            return
        self._stopping.set()
        main = threading.current_thread() is threading.main_thread()
        local = self.spec.where == "local"
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main and local else None
        try:
            self._stop_all()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.stopped_at = _now()
        self.write_record()

    def _stop_all(self) -> None:
        with self._lock:
            if self._monitor is not None and self._monitor is not threading.current_thread():
                self._monitor.join(timeout=1)
            if self.spec.where == "slurm":
                self._stop_slurm()
                return
            for replica in self.replicas:
                replica.terminate()  # all at once: the waits below overlap
            for replica in self.replicas:
                try:
                    replica.stop(self.spec.stop_timeout_s)
                    self._event(replica.index, "stopped")
                except Exception as err:  # keep stopping the others
                    print(f"stepeval fleet: replica {replica.index} did not stop cleanly: {err}", file=sys.stderr)

    def _stop_slurm(self) -> None:
        submitted = [r for r in self.replicas if r.job is not None]
        try:
            left = slurm.stop_all(submitted, self.spec.stop_timeout_s)
        except RuntimeError as err:  # scancel refused: the jobs may run on, holding their GPUs
            for replica in submitted:
                self._event(replica.index, "stop failed", detail=str(err), job_id=replica.job_id)
            jobs = ", ".join(str(r.job_id) for r in submitted)
            print(f"stepeval fleet: {err}; the jobs may still run: {jobs}", file=sys.stderr)
            return
        for replica in submitted:
            if replica.job_id in left:
                detail = f"job {replica.job_id} still {replica.state()} {self.spec.stop_timeout_s:g} s after scancel"
                self._event(replica.index, "stop failed", detail=detail, job_id=replica.job_id)
                print(f"stepeval fleet: replica {replica.index}: {detail}", file=sys.stderr)
            else:
                self._event(replica.index, "stopped", job_id=replica.job_id, state=replica.state())

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what the run sees

    def endpoints(self) -> list[dict]:
        """One per replica that is serving (a replica given up while queued has none)."""
        return [
            {
                "base_url": f"{r.base_url}{self.spec.api_path}",
                "api_key": None,
                "concurrency": self.spec.concurrency,
                "name": f"{self.name} replica {r.index}",
            }
            for r in self.replicas
            if r.index not in self.given_up
        ]

    def _event(self, replica: int, event: str, **details: Any) -> None:
        entry = {"at": _now(), "replica": replica, "event": event, **details}
        self.events.append(entry)
        detail = f" ({details['detail']})" if "detail" in details else ""
        print(f"stepeval fleet: replica {replica} {event}{detail}", flush=True)

    def describe(self) -> dict:
        return {
            "model": self.name,
            "where": self.spec.where,
            "command": self.spec.command,
            "replicas": [r.describe() for r in self.replicas],
            "gpus_per_replica": self.spec.gpus_per_replica,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "events": list(self.events),
        }

    def write_record(self, run_dir: Path | None = None) -> None:
        """``fleet.json`` in the fleet folder; with ``run_dir``, also the manifest's ``fleet`` entry."""
        record = self.describe()
        _write_json(self.folder / "fleet.json", record)
        if run_dir is not None:
            manifest_path = Path(run_dir) / "manifest.json"
            manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
            manifest["fleet"] = record
            _write_json(manifest_path, manifest)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# SIGTERM (kill, a scheduler) and SIGHUP (the ssh session or terminal dropped): both would leave the replicas running
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside: SIGTERM raises ``SystemExit(143)`` (SIGHUP ``SystemExit(129)``) in the main thread, so ``finally``
    blocks and teardown run; a second signal during teardown is ignored. Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_SIGNALS}
    try:
        yield
    finally:
        fired = True
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


def run_dir_for(cfg: DictConfig) -> Path:
    """The run folder ``stepeval run`` will use for ``cfg`` (read-only use of the pipeline's naming)."""
    from stepeval.pipeline import run_name_for

    return Path(cfg.results_dir) / run_name_for(cfg)


@contextlib.contextmanager
def up(cfg: DictConfig) -> Iterator[DictConfig]:
    """Yields ``cfg`` unchanged when ``model.launch`` is not set; else brings the fleet up and yields a copy whose
    ``model.endpoints`` are the replicas (and ``model.launch`` null, so replicas never change the run's name)."""
    launch = cfg.model.get("launch")
    if launch is None:
        yield cfg
        return
    if cfg.model.get("base_url") or cfg.model.get("endpoints"):
        raise ValueError("model.launch and model.base_url/model.endpoints are both set: the fleet fills the endpoints; drop one")
    spec = LaunchSpec.from_config(OmegaConf.to_container(launch, resolve=True))  # type: ignore[arg-type]
    filled = copy.deepcopy(cfg)
    with open_dict(filled):
        filled.model.launch = None
        filled.model.endpoints = [EndpointSchema(base_url="http://pending/v1")]
    run_dir = run_dir_for(filled)
    fleet = Fleet(spec, run_dir / "fleet", str(cfg.model.name))
    print(f"stepeval fleet: starting {spec.replicas} replica(s) of {cfg.model.name} ({spec.where}); logs in {fleet.folder}")
    with sigterm_exits(), fleet:
        with open_dict(filled):
            filled.model.endpoints = [EndpointSchema(**e) for e in fleet.endpoints()]
        fleet.write_record(run_dir)
        try:
            yield filled
        finally:
            fleet.stop()
            fleet.write_record(run_dir)
