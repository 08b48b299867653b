"""Which responder a model config asks for: the wire client when it names endpoints, else its in-process backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from stepeval.client.responder import InProcess
from stepeval.config import check_target, to_container
from stepeval.secrets import register_secret, scrub

if TYPE_CHECKING:  # the wire client (and the openai SDK under it) is imported only for a model with endpoints,
    # so an in-process run, or a rerun that reuses every reply, starts without it (docs/performance.md)
    from stepeval.client.endpoints import Endpoint
    from stepeval.client.wire import WireClient

# model keys that say where and how patiently to ask, not what is asked: kept out of the run name,
# so adding a replica, rotating a key or raising a timeout resumes the same run
TRANSPORT_KEYS = ("concurrency", "endpoints", "base_url", "api_key", "timeout_s", "max_retries", "stream", "launch", "http")
TRANSPORT_KEYS += ("hardware", "latency_mode", "warmup_turns")  # how latency is measured: never what is answered
LATENCY_MODES = ("load", "serial")


def uses_wire(model: DictConfig) -> bool:
    return bool(model.get("base_url") or model.get("endpoints"))


# keys only the wire client reads: left out of an in-process model's run name, which stays what it was
WIRE_KEYS = ("wire_model", "sampling", "modalities", "voice", "audio_format", "send_metadata", "extra_body")


def model_identity(model: dict) -> dict:
    """The model config minus transport keys (for the run name)."""
    drop = TRANSPORT_KEYS if model.get("base_url") or model.get("endpoints") else TRANSPORT_KEYS + WIRE_KEYS
    return {k: v for k, v in model.items() if k not in drop}


def latency_mode(model: Any) -> str:
    mode = str(model.get("latency_mode") or "load")
    if mode not in LATENCY_MODES:
        raise ValueError(f"model.latency_mode={mode!r}: use load (turns as concurrency allows) or serial (docs/latency.md)")
    return mode


def latency_protocol(model: Any) -> dict:
    """What every replay record's ``latency`` carries from the config: the declared hardware and the mode."""
    mode = latency_mode(model)
    out = {"hardware": model.get("hardware"), "mode": mode}
    if mode == "serial":
        out["warmup_turns"] = int(model.get("warmup_turns") or 0)
    return out


def endpoints_from(model: dict, default_limit: int) -> list[Endpoint]:
    from stepeval.client.endpoints import Endpoint

    listed = list(model.get("endpoints") or [])
    if model.get("base_url"):
        listed.insert(0, {"base_url": model["base_url"], "api_key": model.get("api_key"), "concurrency": None})
    out = []
    for i, item in enumerate(listed):
        where = "model.base_url" if model.get("base_url") and i == 0 else f"model.endpoints[{i - bool(model.get('base_url'))}]"
        url = str(item.get("base_url") or "")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}.base_url={scrub(url)!r}: need an http(s) URL such as http://127.0.0.1:8000/v1")
        limit = item.get("concurrency") if item.get("concurrency") is not None else default_limit  # 0 is refused
        if latency_mode(model) == "serial":
            limit = 1  # one turn at a time per replica: the latency a model card quotes
        if limit < 1:
            raise ValueError(f"{where}.concurrency must be >= 1, got {limit}")
        key = item.get("api_key") if item.get("api_key") is not None else model.get("api_key")
        register_secret(key)
        endpoint = Endpoint(i, url.rstrip("/"), key, int(limit), _timeout_s(model))
        endpoint.name = item.get("name")
        out.append(endpoint)
    return out


def _timeout_s(model: dict) -> float:
    """``model.timeout_s``: null is the default; 0 is not turned into it (``config.check_bounds`` refuses it)."""
    value = model.get("timeout_s")
    return 300.0 if value is None else float(value)


def wire_client(model: dict, default_limit: int) -> WireClient:
    from stepeval.client.wire import WireClient, WireSettings

    sampling = dict(model.get("sampling") or {})
    settings = WireSettings(
        wire_model=str(model.get("wire_model") or model["name"]),
        sampling=sampling,
        modalities=list(model.get("modalities") or ["text", "audio"]),
        voice=model.get("voice"),
        audio_format=str(model.get("audio_format") or "wav"),
        stream=bool(model.get("stream")),
        timeout_s=_timeout_s(model),
        max_retries=int(model["max_retries"] if model.get("max_retries") is not None else 4),
        send_metadata=bool(model.get("send_metadata", True)),
        extra_body=dict(model.get("extra_body") or {}),
        warmup_turns=int(model.get("warmup_turns") or 0) if latency_mode(model) == "serial" else 0,
    )
    http = str(model.get("http") or "auto")
    if http not in ("auto", "sdk", "fast"):
        raise ValueError(f"model.http={http!r}: use auto, sdk (the openai SDK) or fast (aiohttp, docs/performance.md)")
    if http in ("auto", "fast"):  # the lean path, streamed or not: it also times the connection itself
        from stepeval.client.fast_http import FastWireClient

        return FastWireClient(endpoints_from(model, default_limit), settings)
    return WireClient(endpoints_from(model, default_limit), settings)


def check_endpoints(client: WireClient, timeout_s: float = 10.0) -> None:
    """Fail before any turn if an endpoint cannot be reached, rejects the key or has no ``/models``
    (a wrong path); warn when it does not list the model (``stepeval serve`` answers any name)."""
    from stepeval.transport import check_models

    for endpoint in client.pool.endpoints:
        check_models(
            endpoint.url,
            endpoint.api_key,
            endpoint.where,
            model=client.settings.wire_model,
            strict_model=False,
            timeout_s=timeout_s,
            fix_key="set model.api_key or the environment variable the model config reads it from",
            fix_model="Set model.wire_model to the name the server serves.",
        )


def build_responder(cfg: DictConfig) -> Any:
    """The responder for ``cfg.model``: wire client for endpoints, else the in-process backend."""
    model = cfg.model
    workers = model.concurrency or cfg.concurrency
    if latency_mode(model) == "serial":
        workers = 1  # in-process: one turn at a time (the warm-up is the wire client's)
    if uses_wire(model):
        client = wire_client(to_container(model), workers)
        check_endpoints(client)
        return client
    if model.backend is None:
        raise ValueError(f"model={model.name}: no endpoints (model.base_url / model.endpoints) and no backend (model.backend)")
    check_target(model.backend, "model.backend")
    backend = instantiate(model.backend)
    backend.check()
    return InProcess(backend, workers=workers, hardware=model.get("hardware"))
