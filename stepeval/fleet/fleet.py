"""Start a model's replicas, wait for health, watch them while the run goes, stop them whatever happens.

Teardown runs on a normal exit, on an error, on Ctrl-C and on SIGTERM (turned into ``SystemExit(143)`` while the
fleet is up). A replica that dies mid-run is restarted (``max_restarts`` per replica) by the monitor thread; its
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

from stepeval.config import EndpointSchema
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
        else:
            folder = Path(self.spec.slurm.folder) if self.spec.slurm.folder else self.folder / "slurm"
            self.replicas = [SlurmReplica(self.spec, i, folder, self.name) for i in range(self.spec.replicas)]
        for replica in self.replicas:
            replica.start()
            self._event(replica.index, "started")
        self.write_record()
        self.wait_healthy(self.replicas, time.monotonic() + self.spec.startup_timeout_s)
        self.write_record()
        self._monitor = threading.Thread(target=self._watch, name="fleet-monitor", daemon=True)
        self._monitor.start()

    def wait_healthy(self, replicas: list[Any], deadline: float) -> None:
        """Until every replica answers ``health_path`` with 200; fails at once if one exits, or at the deadline."""
        waiting = list(replicas)
        while waiting:
            if self._stopping.is_set():
                raise RuntimeError("fleet stopped while replicas were starting")
            for replica in list(waiting):
                if replica.where == "slurm" and not replica.started():
                    if not replica.alive():
                        raise RuntimeError(f"model.launch: {replica.failure()}")
                    continue
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
                time.sleep(0.2 if self.spec.where == "local" else 2.0)

    def _watch(self) -> None:
        """Monitor thread: restart a replica that died (not while stopping), up to ``max_restarts`` each."""
        restarts: dict[int, int] = {}
        while not self._stopping.wait(self.spec.monitor_interval_s):
            for replica in self.replicas:
                if self._stopping.is_set() or replica.index in self.given_up:
                    continue
                try:
                    if replica.alive():
                        continue
                    self._event(replica.index, "died", detail=replica.failure().splitlines()[0])
                    if restarts.get(replica.index, 0) >= self.spec.max_restarts:
                        self.given_up.add(replica.index)
                        self._event(replica.index, "given up", detail=f"max_restarts={self.spec.max_restarts} reached")
                        continue
                    restarts[replica.index] = restarts.get(replica.index, 0) + 1
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        replica.stop(self.spec.stop_timeout_s)  # leftovers of the old process group
                        replica.start()
                    self._event(replica.index, "restarted", attempt=restarts[replica.index])
                    self.wait_healthy([replica], time.monotonic() + self.spec.startup_timeout_s)
                except Exception as err:  # a restart that fails: the other replicas carry the run
                    if not self._stopping.is_set():
                        self._event(replica.index, "restart failed", detail=f"{type(err).__name__}: {err}")
                        self.given_up.add(replica.index)
                finally:
                    self.write_record()

    def stop(self) -> None:
        """Every replica stopped and reaped (local) or cancelled (slurm); safe to call twice."""
        if self.stopped_at is not None:
            return
        self._stopping.set()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a second Ctrl-C does not cut teardown
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
            for replica in self.replicas:
                try:
                    replica.stop(self.spec.stop_timeout_s)
                    self._event(replica.index, "stopped")
                except Exception as err:  # keep stopping the others
                    print(f"stepeval fleet: replica {replica.index} did not stop cleanly: {err}", file=sys.stderr)

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
        return [
            {"base_url": f"{r.base_url}{self.spec.api_path}", "api_key": None, "concurrency": self.spec.concurrency}
            for r in self.replicas
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


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside: SIGTERM raises ``SystemExit(143)`` in the main thread (so ``finally`` blocks and teardown run);
    a second SIGTERM during teardown is ignored. Outside the main thread, nothing changes."""
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

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        fired = True
        signal.signal(signal.SIGTERM, previous)


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
