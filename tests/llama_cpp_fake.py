"""A stand-in for llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``): one
model, one slot, its default ``interrupt_requests=True``. The real server cannot run here (it needs a
GGUF model and a native build), so this one copies, on a real HTTP socket, what decides the judge's fate:

- the two locks of ``get_llama_proxy`` (llama_cpp/server/app.py): a request waiting for the model
  holds the *outer* lock while it waits for the *inner* one, which the running request holds;
- the stream publisher (``get_event_publisher``): after each chunk it sends, with ``interrupt_requests``
  on, it checks whether the outer lock is held (another request waits) and if so sends ``data: [DONE]``
  and ends the stream. The reply is cut: every chunk so far has ``finish_reason: null``;
- the chunks as ``llama_chat_format`` makes them: a role-only first delta, one delta per token, a last
  empty delta with ``finish_reason: "stop"``, framed by sse-starlette (``data: ...\\r\\n\\r\\n``) in a
  chunked body; a request that is not streamed is generated to its end and answered whole.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-judge"


class LlamaCppPythonServer:
    def __init__(
        self,
        tokens: int = 6,
        token_s: float = 0.03,
        interrupt_requests: bool = True,
        content: str = '{"rationale": "r", "verdict": "yes"}',
    ):
        self.tokens, self.token_s, self.interrupt_requests, self.content = tokens, token_s, interrupt_requests, content
        self.outer = threading.Lock()
        self.inner = threading.Lock()
        self._count = threading.Lock()
        self.stats = {"requests": 0, "finished": 0, "interrupted": 0, "client_gone": 0}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                models = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "me", "permissions": []}]}
                self._json(models)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server._add("requests")
                server.outer.acquire()  # get_llama_proxy: wait for the model holding the outer lock
                server.inner.acquire()
                server.outer.release()
                try:
                    if body.get("stream"):
                        server.stream(self)
                    else:
                        server.whole(self)
                finally:
                    server.inner.release()

            def _json(self, data: dict) -> None:
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _add(self, key: str) -> None:
        with self._count:
            self.stats[key] += 1

    def pieces(self) -> list[str]:
        size = -(-len(self.content) // self.tokens)
        return [self.content[i : i + size] for i in range(0, len(self.content), size)]

    @staticmethod
    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {
            "id": "chatcmpl-5f0a7b2c",
            "model": MODEL,
            "created": 1741570283,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(data: str) -> None:
            event = f"data: {data}\r\n\r\n".encode()
            handler.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            handler.wfile.flush()

        def events():
            yield self.chunk({"role": "assistant"})
            for piece in self.pieces():
                time.sleep(self.token_s)
                yield self.chunk({"content": piece})
            yield self.chunk({}, finish="stop")

        try:
            for event in events():
                send(json.dumps(event))
                if self.interrupt_requests and self.outer.locked():  # another request waits: end this one
                    send("[DONE]")
                    handler.wfile.write(b"0\r\n\r\n")
                    self._add("interrupted")
                    return
            send("[DONE]")
            handler.wfile.write(b"0\r\n\r\n")
            self._add("finished")
        except OSError:
            self._add("client_gone")

    def whole(self, handler) -> None:
        time.sleep(self.token_s * self.tokens)
        completion = {
            "id": "chatcmpl-5f0a7b2c",
            "object": "chat.completion",
            "created": 1741570283,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.content}, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": self.tokens, "total_tokens": 100 + self.tokens},
        }
        try:
            handler._json(completion)
            self._add("finished")
        except OSError:
            self._add("client_gone")

    def __enter__(self) -> LlamaCppPythonServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
