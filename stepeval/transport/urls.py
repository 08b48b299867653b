"""An endpoint URL with its credentials split off: what is sent where, and what may be printed.

``http://user:KEY@host/v1?api_key=KEY2`` is a valid way to give a gateway its credentials, but
pasted into the SDK as a base URL the query string ends up in the middle of every request path
(``/v1?api_key=KEY2/chat/completions``) and the whole URL, keys included, in every error message.
Here the query goes to the SDK's ``default_query`` (sent with every request, also ``/models``),
the userinfo to HTTP Basic auth, and only ``display`` (both hidden) is ever printed. The
credentials are registered with ``stepeval.secrets`` so they are scrubbed wherever they appear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from stepeval import secrets


@dataclass(frozen=True)
class EndpointURL:
    base: str  # scheme://host[:port]/path, no userinfo, no query, no trailing slash
    query: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = field(default=None, repr=False)
    display: str = ""  # the URL fit to print

    @classmethod
    def parse(cls, url: str, where: str = "base_url") -> EndpointURL:
        url = str(url or "").strip()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}={secrets.safe_url(url)!r}: need an http(s) URL such as http://127.0.0.1:8000/v1")
        try:
            parts = urlsplit(url)
            port = parts.port  # raises on a non-numeric port
        except ValueError as err:
            raise ValueError(f"{where}={secrets.safe_url(url)!r}: not a valid URL ({err})") from None
        for value in secrets.url_secrets(url):
            secrets.register_secret(value)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # IPv6
        netloc = f"{host}:{port}" if port is not None else host
        auth = None
        if parts.username is not None or parts.password is not None:
            auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return cls(base, query, auth, secrets.safe_url(url).rstrip("/"))

    def join(self, path: str) -> str:
        """``base`` + ``/path`` (no query: pass ``query`` as the request's params)."""
        return f"{self.base}/{path.lstrip('/')}"

    def __str__(self) -> str:
        return self.display
