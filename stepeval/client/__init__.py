"""Reaching models: responders (in-process or over the wire) and the multi-turn replay engine."""
