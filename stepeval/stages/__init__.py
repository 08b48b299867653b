"""The run's stages over the run store: replay, reply ASR, user ASR, objective signals, judges.

Every stage is a ``Stage`` (``stages.base``) and runs through the one runner, which applies the single
reuse rule: a stored record is reused when its fingerprint matches and its status is final (not failed).
"""
