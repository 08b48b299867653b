"""The packaged Hydra configs (``pkg://stepeval.conf``): ``config.yaml`` and one folder per config group.

A package, so that Hydra finds the configs by module name wherever stepeval is installed.
"""
