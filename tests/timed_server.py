"""An OpenAI-compatible audio chat server on 127.0.0.1 with a known timeline, for latency tests.

Each reply follows ``Timeline``, measured from the moment the server has read the whole request:
the response head at ``first_byte``, then (streamed) the first text delta at ``first_text``, the first
audio delta at ``first_audio`` and one more every ``gap`` seconds, then the transcript, usage and
``[DONE]``; not streamed, the JSON body follows the head once the last chunk would have gone. The
reply audio opens with ``lead`` seconds of digital silence. Every send time is kept on this
process's ``time.perf_counter`` clock (the harness's clock, the test being in the same process).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tests.openai_audio import completion, tone

RATE = 24000


@dataclass
class Timeline:
    first_byte: float = 0.15
    first_text: float = 0.3
    first_audio: float = 0.45
    gap: float = 0.12
    chunks: int = 5
    lead: float = 0.51  # a multiple of the 30 ms frame: the measure's exact answer
    speech: float = 0.6
    text: str = "It is noon."
    transcript: str = "It is noon."

    @property
    def end(self) -> float:
        return self.first_audio + (self.chunks - 1) * self.gap

    def audio(self) -> np.ndarray:
        return np.concatenate([np.zeros(int(self.lead * RATE), np.float32), tone(self.speech, RATE, 330.0)])


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@dataclass
class Served:
    received: float  # the whole request read
    sent: dict[str, float] = field(default_factory=dict)  # event -> when it was written


class TimedServer:
    def __init__(self, timeline: Timeline, fmt: str = "pcm16"):
        self.timeline, self.fmt = timeline, fmt
        self.served: list[Served] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> TimedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def audio_bytes(self) -> bytes:
        """The reply audio in the asked format (wav: one file, cut into pieces when streamed)."""
        samples = self.timeline.audio()
        if self.fmt == "pcm16":
            return pcm16(samples)
        from stepeval import audio as audio_io

        return audio_io.encode_wav(samples, RATE)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # /v1/models, for the harness's pre-flight
                data = json.dumps({"object": "list", "data": [{"id": "timed", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                served = Served(time.perf_counter())
                with server._lock:
                    server.served.append(served)
                t = server.timeline

                def at(offset: float) -> None:
                    time.sleep(max(0.0, served.received + offset - time.perf_counter()))

                def write(data: bytes, event: str | None = None) -> None:
                    self.wfile.write(data)
                    self.wfile.flush()
                    if event:
                        served.sent.setdefault(event, time.perf_counter())

                audio = server.audio_bytes()
                at(t.first_byte)
                self.send_response(200)
                if body.get("stream"):
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    write(b"", "head")

                    def event(item: dict, name: str | None = None) -> None:
                        line = f"data: {json.dumps(item)}\n\n".encode()
                        write(f"{len(line):x}\r\n".encode() + line + b"\r\n", name)

                    def delta(d: dict, finish: str | None = None) -> dict:
                        return {
                            "id": "c1",
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
                        }

                    event(delta({"role": "assistant"}))
                    at(t.first_text)
                    event(delta({"content": t.text}), "text")
                    size = -(-len(audio) // t.chunks)
                    size += size % 2  # whole pcm16 samples in each piece
                    for n in range(t.chunks):
                        at(t.first_audio + n * t.gap)
                        piece = base64.b64encode(audio[n * size : (n + 1) * size]).decode()
                        event(delta({"audio": {"id": "audio_1", "data": piece}}), f"audio{n}")
                    event(delta({"audio": {"transcript": t.transcript}}, finish="stop"))
                    event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 9}})
                    line = b"data: [DONE]\n\n"
                    write(f"{len(line):x}\r\n".encode() + line + b"\r\n" + b"0\r\n\r\n", "end")
                    return
                data = json.dumps(completion(base64.b64encode(audio).decode(), t.transcript, t.text)).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                write(b"", "head")
                at(t.end)
                write(data, "end")

        return Handler
