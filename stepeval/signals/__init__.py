"""Objective audio signals of a reply, no LLM involved: duration, silence, flags, DNSMOS/UTMOS quality,
speaker consistency, speaking rate, pitch, reply language and text/speech agreement.

Public surface: ``scoring`` (``score_conversation``, ``SignalOptions``, ``identity``, ``METRICS``); the
model wrappers (``dnsmos``, ``utmos``, ``speaker``, ``prosody``) load their weights lazily.
"""
