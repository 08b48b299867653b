"""How many CPU threads each kind of work may use, decided in one place.

ASR (CTranslate2), the scorers (torch for speaker embeddings and UTMOS, ONNX Runtime for DNSMOS) and
the replay event loop share the machine's cores, and with overlapping stages they run at the same
time. Left to their defaults, torch and ONNX Runtime each start one spinning thread per core: on two
cores a speaker embedding took 151 ms at low load and 3.3 s under load with torch's default, 38 ms
and 0.23 s with one thread. So every library is told its share here: CTranslate2 through
``WhisperModel(cpu_threads, num_workers)``, torch through ``torch.set_num_threads``, ONNX Runtime
through ``SessionOptions`` (intra/inter-op threads, no spinning). None of this changes a result.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace


def available_cores() -> int:
    """The cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Plan:
    """Workers (calls in flight) and threads per worker, for ASR and for scoring."""

    cores: int
    asr_workers: int
    asr_threads: int
    scoring_workers: int
    scoring_threads: int

    def describe(self) -> str:
        return (
            f"{self.cores} cores: ASR {self.asr_workers} x {self.asr_threads} thread(s), "
            f"scoring {self.scoring_workers} x {self.scoring_threads} thread(s)"
        )


def plan(
    cores: int | None = None,
    asr_on_gpu: bool = False,
    overlap: bool = True,
    asr_workers: int | None = None,
    asr_threads: int | None = None,
    scoring_workers: int | None = None,
    scoring_threads: int | None = None,
) -> Plan:
    """Split the cores between ASR and scoring; explicit values (the ``workers`` config) win.

    Scorers get one thread each (their models are small: more threads cost more than they save). CPU
    ASR gets every core, as workers of up to 4 threads (CTranslate2 scales poorly beyond that for one
    clip); when overlapped, the scorers (one process per 4 cores, ``stages.flow``) share the cores with
    it. That oversubscribes by a quarter, on purpose: ASR is about three times the scorers' work, and a
    strict split (ASR 1 thread, scorers 1, on 2 cores) left a core idle most of the time (the end-to-end
    benchmark took 234 s against 136 s with ASR on both cores). No library spins: ONNX Runtime is told
    not to, and torch runs one thread per scorer. GPU ASR needs a CPU thread per worker
    and runs 4 workers; the scorers get the rest.
    """
    cores = cores or available_cores()
    if asr_on_gpu:
        a_workers, a_threads = 4, 1
        s_workers = max(1, cores - 1)
    else:
        a_workers = max(1, cores // 4)
        a_threads = max(1, cores // a_workers)
        s_workers = max(1, cores // 4) if overlap else cores
    return Plan(
        cores=cores,
        asr_workers=asr_workers or a_workers,
        asr_threads=asr_threads or a_threads,
        scoring_workers=scoring_workers or s_workers,
        scoring_threads=scoring_threads or 1,
    )


_current = plan(overlap=True)


def configure(new: Plan) -> Plan:
    """Make ``new`` the plan that loaders read; applies it to torch now if torch is already imported."""
    global _current
    _current = new
    if "torch" in sys.modules:
        set_torch_threads()
    return _current


def current() -> Plan:
    return _current


def with_changes(**changes: int) -> Plan:
    return configure(replace(_current, **changes))


def set_torch_threads() -> None:
    """torch's intra-op pool is per process: one setting for every torch scorer."""
    import torch

    n = _current.scoring_threads
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def onnx_session_options():
    """ONNX Runtime options for a scorer session: its thread share, no busy-waiting between runs, and no
    memory arena (DNSMOS's arena kept ~180 MB of peak RSS for inputs of a few hundred kB; same outputs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.intra_op_num_threads = _current.scoring_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
