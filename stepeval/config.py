"""Configuration: Hydra schemas that validate every group, and helpers to instantiate safely.

Each group's YAML starts from a registered schema (``defaults: [schema, _self_]``), so a
misspelt key or a value of the wrong type fails at composition with the key's full name.
``_target_`` sections are checked against the target's signature before anything runs.
"""

from __future__ import annotations

import importlib
import inspect
import shlex
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
    role: str | None = None  # the field/column telling user turns (replayed) from the others
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
    allow_outside_paths: bool = False  # audio references may open files outside the dataset's folder


@dataclass
class EndpointSchema:
    base_url: str = MISSING
    api_key: str | None = None
    concurrency: int | None = None  # requests in flight to this replica (default: model.concurrency or concurrency)
    name: str | None = None  # what replay records call it (served_by); null: "endpoint <i>"


@dataclass
class SlurmLaunchSchema:
    """Where a ``where: slurm`` fleet's jobs go (submitit's SlurmExecutor parameters)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 720  # each replica job's time limit
    cpus_per_task: int | None = None  # null: 8 per GPU of the replica (at least 8)
    mem_gb: int | None = None  # null: 64 per GPU of the replica (at least 64)
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines before the command (module load, source a venv)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch option
    folder: str | None = None  # submitit's job folder (shared filesystem); null: <run folder>/fleet/slurm
    python: str | None = None  # interpreter on the node; null: `python` after setup lines, else the harness's own
    pin_restarts: bool = False  # resubmit a dead replica to its node (SLURM's node name); false: anywhere
    queue_timeout_s: float = 3600.0  # how long a replica job may stay queued (PENDING) before the fleet gives up on it


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
    startup_timeout_s: float = 900.0  # load + health (slurm: once running; queueing has slurm.queue_timeout_s)
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
    circuit_failures: int | None = 5  # judge requests in a row that cannot connect: the judge stops; null: never
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
class InputSchema:
    """What happens to the user's audio before it is sent (conf/input/, stepeval.conditions, docs/robustness.md)."""

    name: str = "clean"
    kind: str = "clean"  # clean | text | noise | reverb | far_field | telephone | codec | packet_loss | clipping | ...
    params: dict[str, Any] = field(default_factory=dict)  # the kind's parameters (defaults in stepeval.conditions.KINDS)


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
    input: InputSchema = field(default_factory=InputSchema)
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
    store.store(group="input", name="schema", node=InputSchema)


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
    extra = user_conf_dirs()
    check_overrides(overrides, group_options(extra_dirs=extra))
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*search_path_override(extra), *overrides])


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


# --- checks of a composed config that the schema's types cannot make -------------------------------------------

# key -> (lowest allowed value, whether that value itself is allowed); null is left to its default (the schema says
# which keys may be null). Below the bound a value makes no sense, and 0 was read as "the default" where code wrote
# ``value or default`` (model.timeout_s=0 became 300 s).
BOUNDS: dict[str, tuple[float, bool]] = {
    "limit": (1, True),
    "concurrency": (1, True),
    "model.concurrency": (1, True),
    "model.timeout_s": (0, False),
    "model.max_retries": (0, True),
    "model.launch.replicas": (1, True),
    "model.launch.gpus_per_replica": (0, True),
    "model.launch.concurrency": (1, True),
    "model.launch.startup_timeout_s": (0, False),
    "model.launch.stop_timeout_s": (0, False),
    "model.launch.max_restarts": (0, True),
    "model.launch.monitor_interval_s": (0, False),
    "judge.timeout_s": (0, False),
    "judge.queue_timeout_s": (0, False),
    "judge.concurrency": (1, True),
    "judge.samples": (1, True),
    "judge.max_tokens": (1, True),
    "judge.max_waiting": (1, True),
    "judge.max_retries": (0, True),
    "judge.backoff_base_s": (0, True),
    "judge.backoff_max_s": (0, True),
    "judge.retry_after_max_s": (0, True),
    "judge.requests_per_minute": (0, False),
    "judge.tokens_per_minute": (0, False),
    "workers.asr": (1, True),
    "workers.asr_threads": (1, True),
    "workers.scoring": (1, True),
    "workers.scoring_threads": (1, True),
}
_MEANING = {  # the same words as stepeval.pipeline.check_run_keys, which checks these where no Hydra app runs
    "limit": "must be a positive number of conversations, or null for all of them",
    "concurrency": "must be >= 1 (conversations in flight)",
    "model.concurrency": "must be >= 1, or null for the top-level concurrency",
}


def check_bounds(cfg: DictConfig) -> None:
    """Refuse numbers that would be read as "use the default" (0 as ``value or default``) or make no sense
    (a negative timeout), naming the key: ``model.timeout_s=0`` used to become 300 s silently."""
    for key, (low, inclusive) in BOUNDS.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value < low or (value == low and not inclusive):
            meaning = _MEANING.get(key) or (f"must be >= {low}" if inclusive else f"must be > {low}")
            raise ValueError(f"{key}={value}: {meaning}")
    for i, endpoint in enumerate(OmegaConf.select(cfg, "model.endpoints", default=None) or []):
        limit = endpoint.get("concurrency") if isinstance(endpoint, (dict, DictConfig)) else None
        if limit is not None and limit < 1:
            raise ValueError(f"model.endpoints[{i}].concurrency={limit}: must be >= 1, or null for the model's")


def check_known_keys(cfg: DictConfig, schema: type | None = None) -> None:
    """A key the schema does not know is an error naming it and the closest known key.

    ``+key=value`` (which Hydra itself suggests for a misspelt key) adds keys past the schema's struct mode:
    ``+modle=parrot`` would otherwise run the default model without a word."""
    import dataclasses
    import difflib

    def walk(node: Any, schema: type, where: str) -> None:
        if not isinstance(node, DictConfig) or not dataclasses.is_dataclass(schema):
            return
        fields = {f.name: f for f in dataclasses.fields(schema)}
        for key in node.keys():
            name = str(key)
            path = f"{where}{name}"
            if name not in fields:
                close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
                hint = f" (did you mean {where}{close[0]}?)" if close else ""
                scope = f"the {where[:-1]} config" if where else "the run config"
                raise ValueError(f"{path}: not a key of {scope}{hint}; known keys: {', '.join(sorted(fields))}")
            sub = _dataclass_of(fields[name].type)
            if sub is not None:
                walk(node._get_node(name), sub, f"{path}.")

    walk(cfg, schema or RunSchema, "")


def _dataclass_of(annotation: Any) -> type | None:
    """The schema class a field holds (``X``, ``X | None``, or their string forms under postponed annotations)."""
    import dataclasses

    if isinstance(annotation, str):
        name = annotation.replace("| None", "").replace("None |", "").strip()
        annotation = globals().get(name)
    return annotation if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else None


def check_config(cfg: DictConfig) -> None:
    """Everything about a composed run config that fails before any work: unknown keys, out-of-range numbers."""
    check_known_keys(cfg)
    check_bounds(cfg)


# --- command-line overrides, checked before Hydra sees them -----------------------------------------------------

SCHEMA_OPTION = "schema"  # each group's registered schema: what its options start from, never an option itself


def check_overrides(args: Sequence[str], options: dict[str, list[str]], complete: bool = True) -> None:
    """Each override on its own through Hydra's parser, and each group choice against ``options`` (``complete``:
    they are all the options there are; else only the schema is refused).

    Hydra's own messages name neither the override that failed to parse (``mismatched input '=' expecting
    <EOF>``) nor leave out the schemas it registers as group options (``asr=schema`` composes, then fails
    after replay)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        try:
            (override,) = parser.parse_overrides([arg])
        except OverrideParseException as err:
            raise ValueError(_unparsable(arg, err)) from None
        group = override.key_or_group
        if group not in options or override.package is not None or override.is_delete():
            continue
        if override.is_sweep_override():
            from hydra.core.override_parser.types import ChoiceSweep, Glob

            value = override.value()
            if isinstance(value, Glob) and SCHEMA_OPTION in value.filter([*options[group], SCHEMA_OPTION]):  # Hydra's list
                raise ValueError(
                    f"{arg}: the glob takes in '{SCHEMA_OPTION}', which is no option; leave it out: "
                    f"{group}='glob({','.join(value.include)},exclude=[{','.join([*value.exclude, SCHEMA_OPTION])}])'"
                )
            if not isinstance(value, ChoiceSweep):
                continue  # range, or a glob without the schema: Hydra expands them against the options itself
            chosen = [str(v) for v in override.sweep_string_iterator()]
        elif isinstance(override.value(), str):
            chosen = [override.value()]
        else:
            continue
        shown = [o for o in options[group] if o != SCHEMA_OPTION]
        for choice in chosen:
            if choice == SCHEMA_OPTION:
                raise ValueError(
                    f"{group}={choice}: '{choice}' is what every {group} option starts from, not an option; "
                    f"pick one of: {', '.join(shown)}"
                )
            if complete and choice not in shown:
                raise ValueError(
                    f"{group}={choice}: Could not find '{group}/{choice}'; the options of {group} are: {', '.join(shown)}"
                )


def _unparsable(arg: str, err: Exception) -> str:
    """Which argument Hydra could not parse, why, and the same argument quoted so that it parses."""
    key, sep, value = arg.partition("=")
    why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__  # then a link to the grammar
    if not sep:
        return f"cannot parse the argument {arg!r} as an override ({why}); overrides are key=value"
    quoted = shlex.quote(f"{key}='{value}'" if '"' in value else f'{key}="{value}"')  # Hydra's quotes in the shell's
    return (
        f"cannot parse the override {arg!r} ({why}): a value with characters such as = , [ ] {{ }} ( ) or spaces "
        f"must be quoted for Hydra, inside the shell's quotes, e.g. {quoted}"
    )
