"""``stepeval rate <run>``: a local listening page where people rate replies on the judge's rubrics.

A rater hears the user's turn and the reply, reads the transcripts the judge read (and the earlier
conversation), and answers the same rubric questions, never seeing the judge's verdict. Every click is
saved at once in ``<run>/ratings.jsonl`` (rater, time, rubric sha256; the latest rating of a rater for an
item and rubric counts), so a closed tab loses nothing and several raters can rate the same items.
Items are ordered category by category in turn, so a short session covers every category, and the
order is the same for every rater (their ratings overlap, which agreement needs).

``stepeval rate <run> --agreement`` prints judge-human and human-human agreement without serving.
``stepeval rate --pairs <arena out>`` is the A/B mode for an arena's pairs (``ratings_ab``).
"""

from __future__ import annotations

import argparse
import hmac
import itertools
import json
import re
import secrets
import sys
import threading
import webbrowser
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from stepeval import audio as audio_io
from stepeval.applicability import Applicability
from stepeval.judging import rubric as rubric_mod
from stepeval.judging.rubric import Rubric
from stepeval.reporting.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from stepeval.store import RecordLog, load_manifest
from stepeval.validation import agreement
from stepeval.validation.items import parse_input
from stepeval.validation.runner import read_lines

FILE = "ratings.jsonl"
PAGE = Path(__file__).resolve().parent / "templates" / "rate.html"
PLAYABLE = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".flac": "audio/flac", ".webm": "audio/webm"}
DEFAULT_RUBRICS = ("factuality.v1", "relevance.v1", "chat_score.v1", "instruction_following.v1")
MAX_RATER = 64


def question(rubric: Rubric) -> str:
    """The rubric's task sentence ("decide whether the reply is RELEVANT ..."), else its metric name."""
    match = re.search(r"Your task:\s*(.*?)(?:\n\s*\n|$)", rubric.prompt, re.DOTALL)
    return " ".join(match.group(1).split()) if match else rubric.metric


def rubrics_of(run_dir: Path, names: list[str] | None = None) -> list[Rubric]:
    """The run's judge rubrics (as listed in its manifest), else ``names``, else the four text rubrics."""
    manifest = load_manifest(run_dir)
    judge = (manifest.get("config") or {}).get("judge") or {}
    listed = names or [r["name"] for r in ((manifest.get("judge") or {}).get("rubrics") or {}).values()] or list(DEFAULT_RUBRICS)
    return rubric_mod.load_all(rubric_mod.rubrics_dir(judge.get("rubrics_dir")), listed)


@dataclass
class RateItem:
    index: int
    conversation_id: str
    turn: int
    category: str
    language: str | None
    context: list[dict]  # earlier turns as text
    user_text: str | None
    reply_text: str | None
    metrics: list[str]
    user_audio: Path | None = None
    reply_audio: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.conversation_id}#{self.turn}"

    def public(self) -> dict:
        """What the page gets: texts and audio links, no verdict, no file path."""
        return {
            "index": self.index,
            "id": self.id,
            "conversation_id": self.conversation_id,
            "turn": self.turn,
            "category": self.category,
            "language": self.language,
            "context": self.context,
            "user_text": self.user_text,
            "reply_text": self.reply_text,
            "metrics": self.metrics,
            "user_audio": f"/audio/{self.index}/user" if self.user_audio else None,
            "reply_audio": f"/audio/{self.index}/reply" if self.reply_audio else None,
            "notes": self.notes,
        }


def _judge_views(run_dir: Path) -> dict:
    """(conversation, turn) -> (context, reply) as a text judge read it, from any text judge log."""
    views: dict = {}
    for path in sorted((Path(run_dir) / "records").glob("judge-*.jsonl")):
        for key, record in RecordLog(path).load().items():
            if key in views or not record.get("input") or record.get("reads") == "audio":
                continue
            try:
                views[key] = parse_input(record["input"])
            except (ValueError, KeyError):
                continue
    return views


def order(units: list[tuple[str, str, int]], seed: int) -> list[tuple[str, int]]:
    """(category, conversation, turn) -> keys taken one category after another (each shuffled by ``seed``),
    so the first k items cover min(k, categories) categories; every rater gets the same order."""
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[tuple[str, int]]] = {}
    for category, cid, turn in sorted(units):
        by_category.setdefault(category, []).append((cid, turn))
    queues = []
    for category in sorted(by_category):
        keys = by_category[category]
        queues.append([keys[i] for i in rng.permutation(len(keys))])
    return [k for group in itertools.zip_longest(*queues) for k in group if k is not None]


def load_items(run_dir: Path, rubrics: list[Rubric], seed: int = DEFAULT_SEED, dataset: dict | None = None) -> list[RateItem]:
    """The run's replied turns, in rating order, with what a rater hears and reads."""
    from stepeval.reporting.report import dataset_conversations

    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    replays = {k: r for k, r in RecordLog(run_dir / "records" / "replay.jsonl").load().items() if r.get("status") == "ok"}
    if not replays:
        raise ValueError(f"{run_dir}/records/replay.jsonl: no replied turn to rate")
    asr = RecordLog(run_dir / "records" / "asr.jsonl").load()
    views = _judge_views(run_dir)
    conversations, note = dataset if dataset is not None else dataset_conversations(manifest)
    applicability = Applicability.from_run(run_dir)
    units = [(str(r.get("category") or "unknown"), cid, turn) for (cid, turn), r in replays.items()]
    out = []
    for index, key in enumerate(order(units, seed)):
        replay = replays[key]
        conv = conversations.get(key[0])
        user = next((t for t in conv.turns if t.index == key[1]), None) if conv else None
        category = str(replay.get("category") or "unknown")
        notes = [note] if note else []
        if key in views:
            context, reply_text = views[key]
            earlier = [{"role": t.role, "text": t.text} for t in context[:-1]]
            user_text = context[-1].text if context else None
        else:
            heard = asr.get(key) or {}
            reply_text = heard.get("text") if heard.get("status") == "ok" else replay.get("text")
            earlier, user_text = [], user.text if user else None
            notes.append("no text-judge record for this turn: transcripts from the dataset and ASR/text channel")
        out.append(
            RateItem(
                index=index,
                conversation_id=key[0],
                turn=key[1],
                category=category,
                language=replay.get("language"),
                context=earlier,
                user_text=user_text,
                reply_text=reply_text,
                metrics=[r.metric for r in rubrics if applicability.applies(r.metric, category)],
                user_audio=user.audio_path if user and user.audio_path else None,
                reply_audio=run_dir / replay["audio"] if replay.get("audio") else None,
                notes=notes,
            )
        )
    return out


# --- storage -----------------------------------------------------------------------------


class Store:
    """``<run>/ratings.jsonl``: one line per click, durable before the page hears "saved"."""

    def __init__(self, run_dir: Path, items: list[RateItem], rubrics: list[Rubric], seed: int):
        self.path = Path(run_dir) / FILE
        self.items = {i.id: i for i in items}
        self.rubrics = {r.metric: r for r in rubrics}
        self.seed = seed
        self.log = RecordLog(self.path)
        self.lock = threading.Lock()

    def save(self, payload: dict) -> dict:
        rater = str(payload.get("rater") or "").strip()
        if not rater or len(rater) > MAX_RATER:
            raise ValueError(f"rater: a name of 1 to {MAX_RATER} characters is needed")
        item = self.items.get(str(payload.get("item")))
        if item is None:
            raise ValueError(f"item {payload.get('item')!r} is not an item of this run")
        rubric = self.rubrics.get(str(payload.get("metric")))
        if rubric is None or rubric.metric not in item.metrics:
            raise ValueError(f"metric {payload.get('metric')!r} is not rated for item {item.id}")
        grade = payload.get("grade")
        if grade not in rubric.allowed:
            raise ValueError(f"grade {grade!r} for {rubric.metric}: expected one of {list(rubric.allowed)}")
        record = {
            "conversation_id": item.conversation_id,
            "turn": item.turn,
            "category": item.category,
            "item": item.id,
            "rater": rater,
            "metric": rubric.metric,
            "grade": grade,
            "value": rubric.value(grade),
            "rubric": rubric.name,
            "rubric_sha256": rubric.sha256,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "order_seed": self.seed,
        }
        with self.lock:
            self.log.append(record)
        return record

    def of(self, rater: str) -> dict:
        """item id -> {metric: grade}: the rater's latest ratings."""
        out: dict = {}
        for r in latest(self.path.parent):
            if r["rater"] == rater:
                out.setdefault(r["item"], {})[r["metric"]] = r["grade"]
        return out


def latest(run_dir: Path) -> list[dict]:
    """Each rater's last rating of each item and metric, in file order."""
    last: dict = {}
    for record in read_lines(Path(run_dir) / FILE):
        last[(record["rater"], record["conversation_id"], int(record["turn"]), record["metric"])] = record
    return list(last.values())


# --- agreement ---------------------------------------------------------------------------


def run_judge_values(run_dir: Path, rubrics: list[Rubric]) -> dict[str, dict]:
    """metric -> {(conversation, turn): value} of the run's own judge records (scored items only)."""
    out: dict[str, dict] = {}
    for r in rubrics:
        records = RecordLog(Path(run_dir) / "records" / f"judge-{r.metric}.jsonl").load()
        out[r.metric] = {
            k: rec["metrics"].get(r.metric)
            for k, rec in records.items()
            if (rec.get("judge") or {}).get("rubric_sha256") == r.sha256
        }
    return out


def agreement_entries(
    run_dir: Path,
    judge_values: dict[str, dict],
    rubrics: list[Rubric],
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> list[dict]:
    """Judge vs each rater, rater vs rater, and Krippendorff's alpha over all raters (people, then people
    and the judge) where three or more rate. Ratings of another rubric version are left out."""
    ratings = latest(run_dir)
    out = []
    for rubric in rubrics:
        mine = [r for r in ratings if r["metric"] == rubric.metric and r["rubric_sha256"] == rubric.sha256]
        raters = sorted({r["rater"] for r in mine})
        by_rater = {
            name: {(r["conversation_id"], int(r["turn"])): r["value"] for r in mine if r["rater"] == name} for name in raters
        }
        judge = judge_values.get(rubric.metric, {})
        for name in raters:
            out.append(agreement.entry("judge-human", rubric, ["judge", name], judge, by_rater[name], seed, resamples))
        for a, b in itertools.combinations(raters, 2):
            out.append(agreement.entry("human-human", rubric, [a, b], by_rater[a], by_rater[b], seed, resamples))
        for kind, names, columns in (
            ("humans", raters, [by_rater[n] for n in raters]),
            ("judge-and-humans", ["judge", *raters], [judge, *(by_rater[n] for n in raters)]),
        ):
            if len(names) >= 3:
                out.append(agreement.many_entry(kind, rubric, names, columns, seed, resamples))
    return out


# --- the page ----------------------------------------------------------------------------


TOKEN_HEADER = "X-Stepeval-Token"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def foreign(headers: Message, server_address: tuple) -> str | None:
    """Why a request is not from the page this server served, or None.

    The Host must name this server where it listens on a loopback address (a rebound DNS name does not);
    a browser's Origin must be the page's own (another web page's form or fetch is refused)."""
    host = headers.get("Host") or ""
    name, _, port = host.rpartition(":") if host.rpartition(":")[2].isdigit() else (host, "", "")
    listening = server_address[:2]
    if str(listening[0]) in LOOPBACK and (name.strip("[]") not in LOOPBACK or port != str(listening[1])):
        return f"Host {host!r} is not this server"
    origin = headers.get("Origin")
    if origin is not None and origin != f"http://{host}":
        return f"Origin {origin!r} is not this page's"
    return None


def unposted(headers: Message, token: str) -> str | None:
    """Why a rating post does not carry this server's token (only a page it served has it), or None."""
    if hmac.compare_digest((headers.get(TOKEN_HEADER) or "").encode(), token.encode()):
        return None
    return f"no valid {TOKEN_HEADER}: ratings are taken only from the page this server serves"


def page(run_name: str, rubrics: list[Rubric], rater: str | None, token: str = "") -> str:
    """The rating page, with this server's token (sent back with every rating) in its config."""
    questions = [
        {"metric": r.metric, "question": question(r), "allowed": list(r.allowed), "scale": r.scale, "prompt": r.prompt}
        for r in rubrics
    ]
    config = {"run": run_name, "questions": questions, "rater": rater or "", "token": token}
    return with_config(PAGE, config)


def with_config(template: Path, config: dict) -> str:
    """A page template with its config embedded as JSON that no ``</script>`` or ``&`` inside can break out of."""
    data = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return template.read_text(encoding="utf-8").replace("/*CONFIG*/null", data)


class PageHandler(BaseHTTPRequestHandler):
    """What both rating pages' servers share: quiet logs, uncached replies, JSON answers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value, ensure_ascii=False).encode("utf-8"), "application/json")


def make_server(run_dir: Path, host: str = "127.0.0.1", port: int = 0, rater: str | None = None, seed: int = DEFAULT_SEED,
                rubric_names: list[str] | None = None) -> ThreadingHTTPServer:  # fmt: skip
    """The page's HTTP server (not started): GET /, /api/items, /api/ratings?rater=, /audio/<i>/<side>; POST /api/ratings."""
    run_dir = Path(run_dir)
    rubrics = rubrics_of(run_dir, rubric_names)
    items = load_items(run_dir, rubrics, seed)
    store = Store(run_dir, items, rubrics, seed)
    token = secrets.token_urlsafe(32)  # per server: only a page this server served can post a rating
    html = page(str(load_manifest(run_dir).get("run_name") or run_dir.name), rubrics, rater, token).encode("utf-8")
    public = json.dumps([i.public() for i in items], ensure_ascii=False).encode("utf-8")

    class Handler(PageHandler):
        def _foreign(self) -> str | None:
            return foreign(self.headers, self.server.server_address)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            refused = self._foreign()
            if refused:
                return self._json(403, {"error": refused})
            url = urlparse(self.path)
            if url.path == "/":
                return self._send(200, html, "text/html; charset=utf-8")
            if url.path == "/api/items":
                return self._send(200, public, "application/json")
            if url.path == "/api/ratings":
                rater = (parse_qs(url.query).get("rater") or [""])[0]
                return self._json(200, store.of(rater))
            match = re.fullmatch(r"/audio/(\d+)/(user|reply)", url.path)
            if match and int(match.group(1)) < len(items):
                item = items[int(match.group(1))]
                path = item.user_audio if match.group(2) == "user" else item.reply_audio
                if path is not None and path.is_file():
                    mime = PLAYABLE.get(path.suffix.lower())
                    if mime:
                        return self._send(200, path.read_bytes(), mime)
                    samples, rate = audio_io.read(path)
                    return self._send(200, audio_io.encode_wav(samples, rate), "audio/wav")
            return self._json(404, {"error": f"not found: {url.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/api/ratings":
                return self._json(404, {"error": "not found"})
            refused = self._foreign() or unposted(self.headers, token)
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepeval rate", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, nargs="?", help="the run folder (results/<run>)")
    p.add_argument("--pairs", type=Path, help="A/B mode: an arena's --out folder (its pairs.json), instead of a run")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.add_argument("--rater", help="the rater's name, filled in on the page")
    p.add_argument("--rubrics", nargs="+", help="rubrics to rate (default: the run's judge rubrics)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the item order (same for every rater)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--agreement", action="store_true", help="print agreement from the saved ratings and exit")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if (args.run is None) == (args.pairs is None):
        print("stepeval rate: error: give a run folder, or --pairs <arena out folder> (not both)", file=sys.stderr)
        return 2
    if args.pairs is not None:
        return main_ab(args)
    try:
        if args.agreement:
            rubrics = rubrics_of(args.run, args.rubrics)
            entries = agreement_entries(args.run, run_judge_values(args.run, rubrics), rubrics, args.seed)
            print(json.dumps(entries, indent=2, ensure_ascii=False) if entries else f"no ratings in {args.run / FILE}")
            return 0
        server = make_server(args.run, args.host, args.port, args.rater, args.seed, args.rubrics)
    except (ValueError, OSError) as err:
        print(f"stepeval rate: error: {err}", file=sys.stderr)
        return 2
    return serve(server, f"rating page for {args.run}", args.run / FILE, args.open)


def main_ab(args: argparse.Namespace) -> int:
    """``--pairs``: the A/B page for an arena's judged pairs (``ratings_ab``), or its agreement."""
    from stepeval.arena import human
    from stepeval.validation import ratings_ab

    try:
        if args.agreement:
            section = human.agreement_section(args.pairs, args.seed)
            print(json.dumps(section, indent=2, ensure_ascii=False) if section else f"no ratings in {args.pairs / human.RATINGS}")
            return 0
        server = ratings_ab.make_server(args.pairs, args.host, args.port, args.rater)
    except (ValueError, OSError) as err:
        print(f"stepeval rate: error: {err}", file=sys.stderr)
        return 2
    return serve(server, f"A/B rating page for {args.pairs}", args.pairs / human.RATINGS, args.open)


def serve(server: ThreadingHTTPServer, what: str, saved: Path, browse: bool) -> int:
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/"
    print(f"{what} at {url} (ratings saved to {saved}); Ctrl-C to stop", flush=True)
    if browse:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
