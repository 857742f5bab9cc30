"""How the trainers, the labeler and the demo get Ray: join the cluster that is there, else start a
private local one, and shut down only what was started here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["ray_session"]


@contextlib.contextmanager
def ray_session(
    num_cpus: int | None = None, *, address: str | None = None, log_to_driver: bool = True
) -> Iterator[None]:
    """Run the body with Ray initialised.

    A Ray the caller initialised is used as it is. Otherwise `address`, RAY_ADDRESS (set by `ray job
    submit`) or the cluster `ray start` left on this machine is joined, with its own resources and
    auth settings: sizing it (`num_cpus`) is an error in Ray, and turning auth off would lock this
    process out of a cluster that uses it. Only when there is none does a private local Ray start,
    with `num_cpus` and without token auth (nothing else connects to it); the dashboard stays on,
    since Ray Train's controller asks the state API it serves whether its actors are alive.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address or "auto", log_to_driver=log_to_driver)
    except ConnectionError:
        if address:
            raise
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus, log_to_driver=log_to_driver)
    try:
        yield
    finally:
        ray.shutdown()
