"""Placeholder: value-based redaction lands with the transport work."""

from __future__ import annotations


def scrub(text: str) -> str:
    return text
