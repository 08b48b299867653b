"""Chat-format turn entries: who speaks (a role field) and what a message's content holds.

OpenAI-style messages carry ``content`` as a string or a list of parts (``{"type": "text", "text"}``,
``{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}``, or an audio file
reference such as ``{"type": "audio", "audio": "clip.wav"}`` / ``{"type": "audio_url", "audio_url": {"url"}}``);
ShareGPT entries carry ``from``/``value``. Only user turns are replayed; the others are the reference.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

USER_ROLES = {"user", "human", "speaker", "client", "usr", "q", "question", "query", "customer", "用户", "提问者"}
AUDIO_PART_TYPES = ("input_audio", "audio", "audio_url", "audio_file")
_FORMATS = {"wav", "flac", "mp3", "ogg", "opus", "m4a", "webm", "aac"}


def is_user(role: Any) -> bool:
    return str(role if role is not None else "").strip().lower() in USER_ROLES


def as_parts(value: Any) -> Any:
    """``datasets``' JSON loader turns content that is a string in some messages and parts in others into JSON text:
    read such text back into its parts; any other value is returned as it is."""
    if isinstance(value, str) and value.startswith("[{") and value.endswith("}]"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if _part_list(parsed) else value
    return value


def _part_list(value: Any) -> bool:
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
        return False
    return all(isinstance(p, dict) and p.get("type") is not None for p in value)


def is_parts(value: Any) -> bool:
    """A list of content parts (every entry a dict with a ``type``), or such a list as JSON text."""
    return _part_list(as_parts(value))


def _decode_b64(data: str, fmt: str | None, decode: bool = True) -> dict | None:
    if isinstance(data, str) and data.startswith("data:"):  # a data: URL
        head, _, data = data.partition(",")
        fmt = fmt or head.split("/", 1)[-1].split(";", 1)[0]
    if not decode:  # detection only needs to know it is inline audio, not its bytes
        suffix = str(fmt or "wav").lower()
        return {"bytes": None, "path": f"input_audio.{suffix if suffix in _FORMATS else 'wav'}"} if data else None
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    suffix = str(fmt or "wav").lower()
    return {"bytes": raw, "path": f"input_audio.{suffix if suffix in _FORMATS else 'wav'}"}


def _part_audio(part: dict, decode: bool = True) -> Any:
    kind = str(part.get("type"))
    body = part.get(kind)
    if kind == "input_audio" and isinstance(body, dict):
        if body.get("data") is not None:
            return _decode_b64(body["data"], body.get("format"), decode)
        body = body.get("url") or body.get("path")
    if isinstance(body, dict):  # {"url": ...} or a datasets Audio struct {"bytes", "path"}
        if "bytes" in body or "path" in body:
            return body if body.get("bytes") is not None else body.get("path")
        body = body.get("url")
    if isinstance(body, str) and body.startswith("data:"):
        return _decode_b64(body, None, decode)
    if isinstance(body, str) and body.startswith("file://"):
        return body[len("file://") :]
    return body


def audio_parts(parts: Any, decode: bool = True) -> list[Any]:
    """The audio references of a content-part list (base64 data decoded to ``{"bytes", "path"}`` when ``decode``)."""
    parts = as_parts(parts)
    if not _part_list(parts):
        return []
    return [_part_audio(p, decode) for p in parts if str(p.get("type")) in AUDIO_PART_TYPES]


def text_of_parts(parts: Any) -> str | None:
    parts = as_parts(parts)
    texts = [str(p.get("text")) for p in parts if p.get("type") == "text" and p.get("text")] if _part_list(parts) else []
    return "\n".join(texts) or None


def audio_of(value: Any, decode: bool = True) -> Any:
    """What a content value holds as audio: its single audio part for a part list, else the value itself.

    ``decode=False`` (detection) leaves base64 data undecoded: ``{"bytes": None, "path": "input_audio.<format>"}``.
    """
    if is_parts(value):
        found = audio_parts(value, decode)
        return found[0] if len(found) == 1 else (found or None)
    return value


def text_of(value: Any) -> Any:
    """What a content value holds as text: its text parts for a part list, else the value itself."""
    return text_of_parts(value) if is_parts(value) else value


def parse_role(spec: str | None) -> tuple[str | None, frozenset[str] | None]:
    """``role`` as configured: ``FIELD`` (user values: USER_ROLES) or ``FIELD:VALUE[|VALUE...]`` naming the user values."""
    if spec is None:
        return None, None
    field, sep, values = str(spec).partition(":")
    users = frozenset(v.strip().lower() for v in values.split("|") if v.strip()) if sep else None
    return field.strip(), users or None


def role_is_user(value: Any, users: frozenset[str] | None) -> bool:
    text = str(value if value is not None else "").strip().lower()
    return text in (users if users is not None else USER_ROLES)


def user_test(spec: str | None):
    """(field, predicate on the field's value) for a configured ``role``."""
    field, users = parse_role(spec)
    return field, (lambda value: role_is_user(value, users))
