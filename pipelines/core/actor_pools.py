"""Ray Data actor pools that follow the cluster instead of its size at start.

A pool sized once from ``ray.cluster_resources()`` never uses the nodes an
autoscaling cluster adds while the job runs. These pools start with the
actors the cluster holds now and let Ray Data's autoscaler add actors (and so
ask the cluster autoscaler for nodes) while input waits, up to an optional cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ray.data


def growing_pool(now: int, most: int | None = None) -> ray.data.ActorPoolStrategy:
    """A pool of one actor at least, ``now`` at start (the actors the cluster holds
    today) and ``most`` at most (None: no cap but the cluster's resources)."""
    import ray.data

    initial = max(1, now if most is None else min(now, most))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=most, initial_size=initial)
