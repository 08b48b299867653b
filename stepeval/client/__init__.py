"""Reaching models: responders (in-process or over the wire) and the history each turn is sent with."""
