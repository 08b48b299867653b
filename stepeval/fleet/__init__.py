"""Model servers the harness starts itself: a fleet of replicas, local or on SLURM (docs/cluster.md).

``up(cfg)`` brings the fleet a model config's ``launch`` asks for up around a run and fills its endpoints.
"""

from stepeval.fleet.fleet import Fleet, up

__all__ = ["Fleet", "up"]
