"""A real HTTP server on 127.0.0.1 for tests, with scripted replies and a log of requests.

Used wherever the real peer cannot run here (an OpenAI-compatible model or judge endpoint):
tests script the exact bytes the real service sends (status, headers, JSON body, delays,
streamed lines) and check what the harness sent.

    with FakeServer() as server:
        server.script("/v1/chat/completions", Scripted(status=429, headers={"Retry-After": "0"}))
        server.script("/v1/chat/completions", Scripted(json={...}))
        server.fallback = lambda request: Scripted(json={...})   # for any unscripted request
        ... base_url = server.url + "/v1" ...
        server.requests  # [Request(method, path, headers, body, json)]
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""  # the raw query string, without "?"

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Scripted:
    """One reply. ``json`` is serialised; ``body`` is sent as is; ``lines`` are streamed one by one
    (``line_delay`` apart); ``delay`` sleeps before answering; ``drop`` closes the connection unanswered;
    ``cut`` closes it mid-body (streamed lines without the final chunk, half of a body of announced length)."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    lines: list[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    line_delay: float = 0.0
    drop: bool = False
    cut: bool = False
    content_type: str = "application/json"


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self.fallback: Callable[[Request], Scripted] | None = None
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, path: str, *replies: Scripted) -> None:
        with self._lock:
            self._scripts[path].extend(replies)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, request: Request) -> Scripted:
        with self._lock:
            self.requests.append(request)
            queue = self._scripts.get(request.path)
            if queue:
                return queue.popleft()
        if self.fallback is not None:
            return self.fallback(request)
        return Scripted(status=404, json={"error": {"message": f"no scripted reply for {request.path}"}})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                request = Request(self.command, path, dict(self.headers.items()), body, query)
                reply = server._next(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.lines is not None:
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for line in reply.lines:
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                        if reply.line_delay:
                            time.sleep(reply.line_delay)
                    if reply.cut:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(b"0\r\n\r\n")
                    return
                data = reply.body if reply.body is not None else json.dumps(reply.json).encode()
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if reply.cut:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)

            do_GET = do_POST = _serve

        return Handler
