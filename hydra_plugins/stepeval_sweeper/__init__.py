"""Hydra plugins shipped with stepeval (found by Hydra's scan of the ``hydra_plugins`` namespace package)."""
