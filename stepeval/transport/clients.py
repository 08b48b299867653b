"""SDK clients built one way, and the pre-flight check every endpoint gets before the first item.

The check is ``GET <base>/models`` with the key: unreachable, a refused key (401/403), a wrong path
(404, or an answer that is not an OpenAI model list) and, where asked, a model the endpoint does not
serve, each fail with one line naming the endpoint, before any turn or judge item is spent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import httpx

from stepeval.secrets import scrub
from stepeval.transport.errors import EndpointNotFound, EndpointRefusesKey, EndpointUnreachable, UnknownModel
from stepeval.transport.urls import EndpointURL

if TYPE_CHECKING:
    import openai

LOCAL_PLACEHOLDER_KEY = "EMPTY"  # what vLLM and llama.cpp accept when they run without --api-key
log = logging.getLogger(__name__)


def quiet_http_logs() -> None:
    """httpx logs one INFO line per request (URL with its query included): it drowns the progress bar."""
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_client(url: EndpointURL, api_key: str | None, timeout: float | httpx.Timeout) -> openai.AsyncOpenAI:
    """An ``AsyncOpenAI`` with the SDK's retries off (ours are recorded), the URL's query as default
    query and its userinfo as Basic auth."""
    import openai  # here, not at the top: a run that talks to no endpoint never pays for the SDK's import

    kwargs: dict[str, Any] = {}
    if url.auth is not None:
        kwargs["auth"] = url.auth  # (user, password): Basic auth in whichever httpx the SDK runs on
    if url.base.startswith("http://"):
        kwargs["verify"] = False  # plain http: no TLS, so no certificate store to load (28 ms of blocked event loop)
    http = openai.DefaultAsyncHttpxClient(**kwargs) if kwargs else None
    return openai.AsyncOpenAI(
        base_url=url.base,
        api_key=api_key or LOCAL_PLACEHOLDER_KEY,  # local servers take any key; the SDK insists on one
        timeout=timeout,
        max_retries=0,
        default_query=url.query or None,
        http_client=http,
    )


def _request(url: EndpointURL, api_key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    auth = httpx.BasicAuth(*url.auth) if url.auth is not None else None
    return {"url": url.join("models"), "params": url.query, "headers": headers, "auth": auth}


def _served(response: httpx.Response, where: str, fix_key: str) -> list[str]:
    if response.status_code in (401, 403):
        raise EndpointRefusesKey(scrub(f"{where} refuses the api key (HTTP {response.status_code} from GET /models); {fix_key}"))
    if response.status_code == 404:
        raise EndpointNotFound(
            scrub(f"{where} has no /models (HTTP 404): the base URL is wrong; an OpenAI-compatible server's usually ends in /v1")
        )
    if response.status_code >= 400:
        raise EndpointNotFound(scrub(f"{where}: GET /models answered HTTP {response.status_code}: {response.text[:200]!r}"))
    try:
        data = response.json()
        return [str(m["id"]) for m in data["data"]]
    except (ValueError, KeyError, TypeError):
        raise EndpointNotFound(
            scrub(
                f"{where}: GET /models did not answer an OpenAI model list ({response.text[:120]!r}): is this the API's base URL?"
            )
        ) from None


def _check_model(served: list[str], model: str | None, where: str, strict: bool, fix_model: str) -> None:
    if model is None or not served or model in served:
        return
    shown = ", ".join(served[:10]) + (f" ... ({len(served)} in all)" if len(served) > 10 else "")
    message = scrub(f"{where} does not serve model {model!r}; it serves: {shown}. {fix_model}")
    if strict:
        raise UnknownModel(message)
    log.warning(message)


def check_models(
    url: EndpointURL,
    api_key: str | None,
    where: str,
    model: str | None = None,
    strict_model: bool = False,
    timeout_s: float = 10.0,
    fix_key: str = "set the api key",
    fix_model: str = "",
) -> list[str]:
    """The pre-flight check (blocking): the served model ids, or one of the ``EndpointError``s."""
    try:
        response = httpx.get(timeout=timeout_s, **_request(url, api_key))
    except httpx.HTTPError as err:
        raise EndpointUnreachable(scrub(f"{where} cannot be reached: {type(err).__name__}: {err}")) from None
    served = _served(response, where, fix_key)
    _check_model(served, model, where, strict_model, fix_model)
    return served


async def check_models_async(
    url: EndpointURL,
    api_key: str | None,
    where: str,
    model: str | None = None,
    strict_model: bool = True,
    timeout_s: float = 10.0,
    fix_key: str = "set the api key",
    fix_model: str = "",
) -> list[str]:
    """``check_models`` for code already inside an event loop."""
    verify = not url.base.startswith("http://")
    request = _request(url, api_key)
    auth = request.pop("auth")
    try:
        async with httpx.AsyncClient(timeout=timeout_s, verify=verify, auth=auth) as client:
            response = await client.get(**request)
    except httpx.HTTPError as err:
        raise EndpointUnreachable(scrub(f"{where} cannot be reached: {type(err).__name__}: {err}")) from None
    served = _served(response, where, fix_key)
    _check_model(served, model, where, strict_model, fix_model)
    return served
