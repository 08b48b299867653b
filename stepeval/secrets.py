"""Secrets never reach manifests, records, logs or the console: redaction by key name AND by value.

By name: ``redact(obj)`` replaces the value of every secret-named key (``api_key``, ``hf_token``...).
By value: every secret seen once (a secret-named override, a URL's password, a credential query
parameter) is registered, and ``scrub(text)`` removes it from any string, wherever it is echoed;
URLs in a text lose their userinfo password and credential query values even if never registered.
``install(argv)`` does all of it for a process: registers what the command line carries, scrubs
stdout/stderr (Hydra writes its own error lines there) and every log record.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import sys
import threading
from typing import Any, TextIO
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

# a key whose name ends in one of these holds a secret (max_tokens, tokens_per_minute, tokenizer do not)
SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|authori[sz]ation|credentials?|bearer)$", re.IGNORECASE)
# a URL query parameter that carries a credential (?api_key=, ?key=, ?sig=, ?code= for Azure functions)
CREDENTIAL_PARAM = re.compile(
    r"^(.*[_-])?(api[_-]?key|apikey|key|token|secret|password|passwd|pwd|auth|authori[sz]ation|credentials?|sig|signature|code)$",
    re.IGNORECASE,
)
REDACTED = "<redacted>"
URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
# name: value / name=value pairs inside an override (model.endpoints=[{base_url: ..., api_key: sk-...}])
INLINE = re.compile(r"([A-Za-z0-9_.+~-]+)\s*[:=]\s*('([^']*)'|\"([^\"]*)\"|[^,\s}\]'\"]+)")
MIN_SECRET_LEN = 4  # shorter values would blank out ordinary text; nobody's key is 3 characters
PLACEHOLDERS = {"empty", "none", "null", "dummy", "sk-no-key-required"}  # what local servers accept: not secrets

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: Any) -> None:
    """Remember ``value`` (and its URL-encoded forms) so ``scrub`` removes it from every text."""
    global _pattern
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_SECRET_LEN or value.lower() in PLACEHOLDERS:
        return
    forms = {value, quote(value, safe=""), quote_plus(value)}
    with _lock:
        if forms <= _values:
            return
        _values.update(forms)
        ordered = sorted(_values, key=len, reverse=True)  # longest first: a key that contains another is removed whole
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def clear_secrets() -> None:
    """Forget every registered value (tests)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def safe_url(url: str) -> str:
    """``url`` fit to print: no userinfo password, credential query values replaced by ``<redacted>``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = []
        for piece in query.split("&"):
            name = piece.split("=", 1)[0]
            pairs.append(f"{name}={REDACTED}" if "=" in piece and CREDENTIAL_PARAM.match(name) else piece)
        query = "&".join(pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: its userinfo password (or bare user token) and credential query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    if parts.password:
        found.append(parts.password)
    elif parts.username and "@" in parts.netloc:
        found.append(parts.username)  # http://TOKEN@host: the user part is the credential
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=False) if CREDENTIAL_PARAM.match(k)]
    if parts.username and parts.password:
        found.append(base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode())  # the Basic header
    return found


def secrets_in_config(config: Any) -> list[str]:
    """Every secret value in a plain config: values of secret-named keys, credentials inside URLs."""
    found: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            if SECRET_KEY.search(key) and value:
                found.append(value)
            for url in URL.findall(value):
                found.extend(url_secrets(url))

    walk(config)
    return found


def secrets_in_argv(argv: list[str]) -> list[str]:
    """Secret values on a command line: ``key=value`` overrides with a secret-named key, URL credentials."""
    found: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and SECRET_KEY.search(key.lstrip("+~").strip()):
            found.append(value.strip().strip("'\""))
        for match in INLINE.finditer(arg):  # secret-named keys inside a list or dict value
            if SECRET_KEY.search(match.group(1)):
                found.append(next(g for g in (match.group(3), match.group(4), match.group(2)) if g is not None))
        for url in URL.findall(arg):
            found.extend(url_secrets(url.strip("'\",]}")))
    return found


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced and every URL made safe (see ``safe_url``)."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if "://" in text:
        text = URL.sub(lambda m: safe_url(m.group(0)), text)
    return text


def redact(value: Any) -> Any:
    """A copy for manifests and logs: secret-named keys' values replaced, every string scrubbed."""
    if isinstance(value, dict):
        return {k: (REDACTED if SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    if isinstance(value, str):
        return scrub(value)
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line fit to record: secret-named overrides' values and URL credentials replaced."""
    out = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        out.append(f"{key}={REDACTED}" if sep and SECRET_KEY.search(key.lstrip("+~").strip()) else scrub(arg))
    return out


class ScrubbingStream(io.TextIOBase):
    """A text stream that scrubs what is written before passing it on (stdout/stderr)."""

    def __init__(self, inner: TextIO):
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ScrubFilter(logging.Filter):
    """Scrubs a record's message (formatted with its arguments) and its exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub_record(record)
        return True


def _scrub_record(record: logging.LogRecord) -> None:
    if getattr(record, "_scrubbed", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed log call: leave it to the handler to report
        return
    record.msg, record.args = scrub(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    record._scrubbed = True  # type: ignore[attr-defined]


_installed = False


def install_log_scrubber() -> None:
    """Scrub every log record, whichever logger and handler it goes through (Hydra reconfigures
    handlers at job start, and a filter on the root logger does not see records propagated to it,
    so the scrub happens where records are made); also adds a ``ScrubFilter`` to the root logger."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        _scrub_record(record)
        return record

    logging.setLogRecordFactory(factory)
    logging.getLogger().addFilter(ScrubFilter())
    _installed = True


def install(argv: list[str] | None = None) -> None:
    """For a command's process: register the command line's secrets, scrub stdout/stderr and logs."""
    for value in secrets_in_argv(list(argv or [])):
        register_secret(value)
    install_log_scrubber()
    if not isinstance(sys.stdout, ScrubbingStream):
        sys.stdout = ScrubbingStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, ScrubbingStream):
        sys.stderr = ScrubbingStream(sys.stderr)  # type: ignore[assignment]
