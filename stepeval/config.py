"""Configuration: Hydra schemas that validate every group, and helpers to instantiate safely.

Each group's YAML starts from a registered schema (``defaults: [schema, _self_]``), so a
misspelt key or a value of the wrong type fails at composition with the key's full name.
``_target_`` sections are checked against the target's signature before anything runs.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from stepeval.secrets import REDACTED, SECRET_KEY, redact  # noqa: F401  (re-exported: redaction lives in stepeval.secrets)

CONF_DIR_ENV = "STEPEVAL_CONF"  # extra config folders (os.pathsep-separated) that extend the packaged ones
CONF_PACKAGE = "stepeval.conf"  # the packaged configs; Hydra composes from pkg://stepeval.conf


class History(str, Enum):
    audio = "audio"
    transcript = "transcript"


class Source(str, Enum):
    hub = "hub"
    local = "local"
    packaged = "packaged"  # a small set shipped in stepeval/data/ (repo_id names it)
    sample = "sample"


class Layout(str, Enum):
    auto = "auto"
    conversation = "conversation"
    turn = "turn"


@dataclass
class ColumnsSchema:
    layout: Layout = Layout.auto
    conversation_id: str | None = None
    turns: str | None = None
    turn_index: str | None = None
    audio: str | None = None
    text: str | None = None
    category: str | None = None
    language: str | None = None


@dataclass
class DatasetSchema:
    name: str = MISSING
    benchmark: str | None = None  # which published benchmark this is (stepeval360: the paper's reference rows apply)
    source: Source = Source.hub
    repo_id: str | None = None
    revision: str | None = None
    split: str | None = None  # hub/packaged: which split (null: the only one)
    local_dir: str | None = None
    cache_dir: str | None = None
    columns: ColumnsSchema = field(default_factory=ColumnsSchema)


@dataclass
class EndpointSchema:
    base_url: str = MISSING
    api_key: str | None = None
    concurrency: int | None = None  # requests in flight to this replica (default: model.concurrency or concurrency)


@dataclass
class SlurmLaunchSchema:
    """Where a ``where: slurm`` fleet's jobs go (submitit's SlurmExecutor parameters)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 720  # each replica job's time limit
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines before the command (module load, source a venv)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch option
    folder: str | None = None  # submitit's job folder (shared filesystem); null: <run folder>/fleet/slurm


@dataclass
class LaunchSchema:
    """How the harness starts a model's servers itself (docs/cluster.md) instead of being told where they are.

    ``command`` is a string or a list; ``{port}``, ``{host}``, ``{gpus}`` (count), ``{replica}``, ``{python}`` and
    ``{stepeval}`` (``{python} -m stepeval.cli``) are filled in per replica."""

    command: Any = MISSING
    where: str = "local"  # local (subprocesses on this node) | slurm (one job per replica)
    replicas: int = 1
    gpus_per_replica: int = 0
    gpus: list[int] | None = None  # local: the GPU ids to share out; null: CUDA_VISIBLE_DEVICES, else nvidia-smi
    host: str | None = None  # address the server binds ({host}); null: 127.0.0.1 locally, 0.0.0.0 on slurm
    base_port: int | None = None  # replica i listens on base_port + i; null: a free port each
    health_path: str = "/health"
    api_path: str = "/v1"
    concurrency: int | None = None  # requests in flight per replica (default: model.concurrency or concurrency)
    startup_timeout_s: float = 900.0  # load + health (and queue wait on slurm)
    stop_timeout_s: float = 30.0  # SIGTERM, then SIGKILL
    max_restarts: int = 3  # per replica, when one dies mid-run
    monitor_interval_s: float | None = None  # null: 1 s locally, 15 s on slurm
    env: dict[str, str] = field(default_factory=dict)
    slurm: SlurmLaunchSchema = field(default_factory=SlurmLaunchSchema)


@dataclass
class ModelSchema:
    name: str = MISSING
    # an in-process backend: {_target_: stepeval.backends..., **kwargs}
    backend: Any = None
    system_prompt: str | None = None
    concurrency: int | None = None
    # the wire client (docs/wire.md): set base_url (one endpoint) or endpoints (replicas) instead of backend
    base_url: str | None = None
    api_key: str | None = None
    endpoints: list[EndpointSchema] = field(default_factory=list)
    wire_model: str | None = None  # the model name sent; default: name
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, seed, ...
    modalities: list[str] = field(default_factory=lambda: ["text", "audio"])
    voice: str | None = None  # e.g. alloy (OpenAI); not sent when null
    audio_format: str = "wav"
    stream: bool = False
    # auto/fast: aiohttp (streamed or not), byte-identical bodies, less CPU per turn; sdk: the openai SDK
    # (docs/performance.md). A transport key: not in the run name.
    http: str = "auto"
    timeout_s: float = 300.0
    max_retries: int = 4
    send_metadata: bool = True  # metadata {conversation_id, turn}; OpenAI accepts it only with store=true
    extra_body: dict[str, Any] = field(default_factory=dict)
    # the harness starts the servers itself (docs/cluster.md) and fills endpoints; null: they are already up
    launch: LaunchSchema | None = None
    # latency (docs/latency.md): the hardware serving the model (recorded with every timing; a server's own report
    # is used when null); load: turns as concurrency allows; serial: warmup_turns first, then one turn at a time
    # per endpoint. Transport keys: not in the run name.
    hardware: str | None = None
    latency_mode: str = "load"
    warmup_turns: int = 2


@dataclass
class AsrSchema:
    name: str = MISSING
    # {_target_: stepeval.asr.engines.WhisperASR, **kwargs}; null means ASR is not run
    engine: Any = None


@dataclass
class JudgeSchema:
    """LLM / audio judges (docs/judging.md). ``metrics`` lists rubric files (``factuality.v1``...);
    an empty list (judge=none) runs no judge."""

    name: str = MISSING
    model: str | None = None
    base_url: str | None = None  # null: api.openai.com
    api_key: str | None = None
    audio_model: str | None = None  # the listening judge for audio rubrics; null: model
    audio_base_url: str | None = None  # null: base_url
    metrics: list[str] = field(default_factory=list)
    rubrics_dir: str | None = None  # null: the packaged stepeval/judging/rubrics
    reads: str = "asr"  # what the text judge reads of a reply: asr | text | text_then_asr
    audio_user: str = "both"  # how the listening judge gets the user's request: audio | transcript | both
    temperature: float = 0.0
    seed: int | None = 0
    samples: int = 1  # >1: mean (scales) / majority (yes/no) of samples with seed, seed+1, ...
    structured_output: bool = False  # response_format json_schema (endpoints that support it)
    max_tokens: int = 512
    timeout_s: float = 60.0  # from when the server starts on a request (its first streamed chunk) to the reply's end
    queue_timeout_s: float = 600.0  # from sending to the server starting on it
    max_waiting: int | None = 1  # requests sent but not yet started by the server (docs/judging.md); null: no limit
    stream: bool = True  # streamed replies: tell queueing from generating, and stop abandoned generations
    concurrency: int = 4
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0
    price_input_per_mtok: float | None = None  # USD per 1M tokens, for the cost estimate
    price_output_per_mtok: float | None = None
    price_audio_input_per_mtok: float | None = None


@dataclass
class MetricRuleSchema:
    applies_to: list[str] = field(default_factory=lambda: ["all"])  # category names, or [all]
    higher_is_better: bool | None = None  # null: descriptive (no better direction)
    description: str = ""


@dataclass
class SignalsSchema:
    dnsmos: bool = True
    speaker: bool = True
    pitch: bool = True
    utmos: bool = False  # weights come from torch.hub (GitHub): off where that is not reachable
    extra: list[Any] = field(default_factory=list)  # signal plugins: [{_target_: my.module.MyMetric, ...}]


@dataclass
class MetricsSchema:
    """Which metrics apply to which categories, their direction (conf/metrics/, docs/scoring-signals.md),
    and which model-based objective signals run."""

    name: str = "all"
    signals: SignalsSchema = field(default_factory=SignalsSchema)
    rules: dict[str, MetricRuleSchema] = field(default_factory=dict)
    category_aliases: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class WorkersSchema:
    """How the stages share the machine (stepeval.threads, docs/performance.md); no result depends on it."""

    overlap: bool = True  # transcribe, score and judge each reply while replay goes on; false: one stage after another
    asr: int | None = None  # transcriptions at once (null: from the cores; the engine's num_workers wins)
    asr_threads: int | None = None  # CTranslate2 threads per transcription (null: from the cores; cpu_threads wins)
    scoring: int | None = None  # conversations scored at once (null: from the cores)
    scoring_threads: int | None = None  # torch / ONNX Runtime threads per scorer (null: 1)


@dataclass
class RunSchema:
    dataset: DatasetSchema = MISSING
    model: ModelSchema = MISSING
    asr: AsrSchema = MISSING
    judge: JudgeSchema = MISSING
    metrics: MetricsSchema = field(default_factory=MetricsSchema)
    run_name: str | None = None
    results_dir: str = "results"
    seed: int = 0
    history: History = History.audio
    concurrency: int = 8
    limit: int | None = None
    progress: bool = True
    allow_failures: bool = False  # exit 0 although records failed or a metric could not run
    workers: WorkersSchema = field(default_factory=WorkersSchema)


def register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunSchema)
    store.store(group="dataset", name="schema", node=DatasetSchema)
    store.store(group="model", name="schema", node=ModelSchema)
    store.store(group="asr", name="schema", node=AsrSchema)
    store.store(group="judge", name="schema", node=JudgeSchema)
    store.store(group="metrics", name="schema", node=MetricsSchema)


def conf_dir() -> Path:
    """The packaged configs (``stepeval/conf``, Hydra's ``pkg://stepeval.conf``): what every run composes from.

    Nothing in the working folder is looked at: a user's own folder only ever extends these (``user_conf_dirs``).
    """
    return Path(__file__).resolve().parent / "conf"


def user_conf_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders that add config options to the packaged ones: ``$STEPEVAL_CONF`` (``os.pathsep``-separated), then ``extra``.

    Hydra searches them after the package, so a file named like a packaged one would be ignored without a word:
    that, a missing folder, or a ``config.yaml`` (the packaged one is always the primary config) is an error naming it.
    """
    import os

    raw = [p for p in os.environ.get(CONF_DIR_ENV, "").split(os.pathsep) if p.strip()]
    dirs: list[Path] = []
    packaged = {(g, o) for g, options in _options_in(conf_dir()).items() for o in options}
    for entry in [*raw, *extra]:
        folder = Path(entry).expanduser().resolve()
        where = f"{CONF_DIR_ENV}={entry}" if entry in raw else str(entry)
        if not folder.is_dir():
            raise ValueError(f"config folder {where} does not exist")
        if (folder / "config.yaml").exists():
            raise ValueError(
                f"{folder / 'config.yaml'}: a user config folder adds options to the groups (e.g. model/my_model.yaml); "
                "the packaged config.yaml stays the primary config: remove it and set top-level keys on the command line"
            )
        for group, options in _options_in(folder).items():
            for option in options:
                if (group, option) in packaged:
                    raise ValueError(
                        f"{folder / group / option}.yaml has the name of the packaged option {group}={option} and would be "
                        f"ignored: rename it (e.g. {group}/my_{option}.yaml)"
                    )
        if folder not in dirs:
            dirs.append(folder)
    return dirs


def search_path_override(dirs: Sequence[Path | str]) -> list[str]:
    """The Hydra override that appends ``dirs`` (folders or ``pkg://`` / ``file://`` entries) to the config search path."""
    if not dirs:
        return []
    entries = []
    for entry in dirs:
        text = str(entry) if "://" in str(entry) else f"file://{Path(entry).resolve()}"
        if "'" in text or "\\" in text:
            raise ValueError(f"config folder {entry}: a path with a quote or backslash cannot be put on Hydra's search path")
        entries.append(f"'{text}'")
    return [f"hydra.searchpath=[{','.join(entries)}]"]


def _options_in(root: Path) -> dict[str, list[str]]:
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(root.iterdir())
        if group.is_dir() and not group.name.startswith(("_", ".")) and group.name != "hydra"
    }


def group_options(root: Path | None = None, extra_dirs: Sequence[Path] = ()) -> dict[str, list[str]]:
    """Options per config group: the packaged ones (or ``root``'s), plus those of user folders."""
    merged: dict[str, set[str]] = {}
    for folder in [root or conf_dir(), *extra_dirs]:
        for group, options in _options_in(Path(folder)).items():
            merged.setdefault(group, set()).update(options)
    return {group: sorted(options) for group, options in sorted(merged.items())}


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The run config exactly as ``stepeval run`` composes it: packaged configs, ``$STEPEVAL_CONF``, schemas, overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*search_path_override(user_conf_dirs()), *overrides])


def check_target(node: Any, where: str) -> None:
    """Fail with the config path if ``_target_`` does not exist or gets arguments it does not take."""
    if not isinstance(node, (dict, DictConfig)) or "_target_" not in node:
        raise ValueError(f"{where} must be a mapping with a _target_ (a class path)")
    target = str(node["_target_"])
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{where}._target_={target!r} cannot be imported: {err}") from err
    params = inspect.signature(obj).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    given = {str(k) for k in node if not str(k).startswith("_")}
    unknown = given - set(params)
    if unknown:
        raise ValueError(f"{where}: {target} takes no argument(s) {sorted(unknown)}; it accepts {sorted(params)}")
    required = {n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if required - given:
        raise ValueError(f"{where}: {target} needs {sorted(required - given)}")


def to_container(cfg: DictConfig) -> dict:
    """Resolved plain dict; enums as their values."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
