"""``stepeval rate --pairs <arena out>``: the rating page's A/B mode, for the arena's judged pairs.

A rater reads the user's turns and hears the request, then reads and hears two replies to that turn, labelled A and
B, and answers "A", "B" or "tie", never seeing the systems' names or the judge's verdict. Which system is shown as A
is drawn per rater and pair (from a hash of both: a reload shows the same order, two raters see different orders),
and the server, not the page, maps the answer back to a winner (x, y or tie). Every click is saved at once in
``<out>/ratings-ab.jsonl`` with the rater, time, the system shown as A and the rubric's name and sha256; a rater's
latest rating of a pair counts. Same protections as the rating page: a per-server token, and the Host/Origin checks.

``stepeval rate --pairs <out> --agreement`` prints judge-human and human-human agreement (``arena.human``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from stepeval import audio as audio_io
from stepeval.arena import human
from stepeval.judging import rubric as rubric_mod
from stepeval.store import RecordLog
from stepeval.validation import ratings

PAGE = Path(__file__).resolve().parent / "templates" / "rate_ab.html"
CHOICES = ("A", "B", "tie")


def shown_first(rater: str, pair: str) -> str:
    """Which system of the pair ("x" or "y") this rater sees as reply A: fixed per (rater, pair), even over both."""
    return "x" if hashlib.sha256(f"{rater}\x00{pair}".encode()).digest()[0] % 2 == 0 else "y"


def winner(choice: str, first: str) -> str:
    """The rater's answer about positions, as a verdict about systems: x, y or tie."""
    if choice == "tie":
        return "tie"
    second = "y" if first == "x" else "x"
    return first if choice == "A" else second


def _rubric_text(data: dict) -> tuple[str, str]:
    """(question, full rubric) for the page; the packaged rubric only where its sha256 is the pairs' one."""
    fallback = "Which reply would a user of a voice assistant prefer? The order of the replies must not matter."
    try:
        rubric = rubric_mod.load(rubric_mod.rubrics_dir(None), str(data.get("rubric")))
    except (ValueError, OSError, KeyError):
        return fallback, ""
    if rubric.sha256 != data.get("rubric_sha256"):
        return fallback, ""
    return " ".join(rubric.prompt.split("\n\n")[0].split()), rubric.prompt


class Store:
    """``<out>/ratings-ab.jsonl``: one line per click, durable before the page hears "saved"."""

    def __init__(self, folder: Path, data: dict):
        self.path = Path(folder) / human.RATINGS
        self.pairs = {p["id"]: p for p in data["pairs"]}
        self.log = RecordLog(self.path)
        self.lock = threading.Lock()

    def save(self, payload: dict) -> dict:
        rater = str(payload.get("rater") or "").strip()
        if not rater or len(rater) > ratings.MAX_RATER:
            raise ValueError(f"rater: a name of 1 to {ratings.MAX_RATER} characters is needed")
        pair = self.pairs.get(str(payload.get("pair")))
        if pair is None:
            raise ValueError(f"pair {payload.get('pair')!r} is not a pair of {self.path.parent / human.PAIRS}")
        choice = payload.get("choice")
        if choice not in CHOICES:
            raise ValueError(f"choice {choice!r}: expected one of {list(CHOICES)}")
        first = shown_first(rater, pair["id"])
        won = winner(choice, first)
        record = {
            "rater": rater,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pair": pair["id"],
            "conversation_id": pair["conversation_id"],
            "turn": pair["turn"],
            "x": pair["x"],
            "y": pair["y"],
            "shown_as_a": first,
            "system_shown_as_a": pair[first],
            "choice": choice,
            "winner": won,
            "winner_system": None if won == "tie" else pair[won],
            "rubric": pair["rubric"],
            "rubric_sha256": pair["rubric_sha256"],
        }
        with self.lock:
            self.log.append(record)
        return record

    def of(self, rater: str) -> dict[str, str]:
        """pair id -> the rater's latest answer ("A", "B", "tie"), as the rater saw it."""
        return {r["pair"]: r["choice"] for r in human.latest(self.path.parent) if r["rater"] == rater}


def public(index: int, pair: dict, rater: str) -> dict:
    """A pair as this rater sees it: A and B in the rater's order, no system name, no verdict, no file path."""
    first = shown_first(rater, pair["id"])
    second = "y" if first == "x" else "x"
    sides = {
        label: {"text": pair[f"{side}_text"], "audio": f"/audio/{index}/{side}" if pair.get(f"{side}_audio") else None}
        for label, side in (("a", first), ("b", second))
    }
    return {
        "index": index,
        "id": pair["id"],
        "conversation_id": pair["conversation_id"],
        "turn": pair["turn"],
        "category": pair["category"],
        "user_turns": pair["user_turns"],
        "user_audio": f"/audio/{index}/user" if pair.get("user_audio") else None,
        **sides,
    }


def make_server(folder: Path, host: str = "127.0.0.1", port: int = 0, rater: str | None = None) -> ThreadingHTTPServer:
    """The A/B page's HTTP server (not started): GET /, /api/pairs?rater=, /api/ratings?rater=, /audio/<i>/<x|y|user>;
    POST /api/ratings."""
    folder = Path(folder)
    data = human.load_pairs(folder)
    pairs = data["pairs"]
    store = Store(folder, data)
    token = secrets.token_urlsafe(32)  # per server: only a page this server served can post a rating
    question, prompt = _rubric_text(data)
    config = {"run": folder.name, "rubric": data.get("rubric"), "question": question, "prompt": prompt}
    config |= {"rater": rater or "", "token": token, "pairs": len(pairs)}
    html = ratings.with_config(PAGE, config).encode("utf-8")

    class Handler(ratings.PageHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            refused = ratings.foreign(self.headers, self.server.server_address)
            if refused:
                return self._json(403, {"error": refused})
            url = urlparse(self.path)
            who = (parse_qs(url.query).get("rater") or [""])[0].strip()
            if url.path == "/":
                return self._send(200, html, "text/html; charset=utf-8")
            if url.path == "/api/pairs":
                if not who:
                    return self._json(400, {"error": "rater: a name is needed (the order of A and B is the rater's)"})
                return self._json(200, [public(n, p, who) for n, p in enumerate(pairs)])
            if url.path == "/api/ratings":
                return self._json(200, store.of(who))
            match = re.fullmatch(r"/audio/(\d+)/(x|y|user)", url.path)
            if match and int(match.group(1)) < len(pairs):
                name = pairs[int(match.group(1))].get(f"{match.group(2)}_audio")
                path = Path(name) if name else None
                if path is not None and path.is_file():
                    mime = ratings.PLAYABLE.get(path.suffix.lower())
                    if mime:
                        return self._send(200, path.read_bytes(), mime)
                    samples, rate = audio_io.read(path)
                    return self._send(200, audio_io.encode_wav(samples, rate), "audio/wav")
            return self._json(404, {"error": f"not found: {url.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/api/ratings":
                return self._json(404, {"error": "not found"})
            refused = ratings.foreign(self.headers, self.server.server_address) or ratings.unposted(self.headers, token)
            if refused:
                self.close_connection = True  # the body is not read
                return self._json(403, {"error": refused})
            try:
                length = int(self.headers.get("Content-Length") or 0)
                saved = store.save(json.loads(self.rfile.read(length) or b"{}"))
            except (ValueError, json.JSONDecodeError) as err:
                return self._json(400, {"error": str(err)})
            return self._json(200, {"saved": saved})

    return ThreadingHTTPServer((host, port), Handler)
