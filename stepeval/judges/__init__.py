"""Judges: ASR, objective audio signals, and (later) LLM judges; each writes its own records."""
