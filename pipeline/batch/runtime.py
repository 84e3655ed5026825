"""The Ray runtime a run uses: join a cluster, or start an embedded local one and stop it after."""
from __future__ import annotations

import logging
import os
from typing import Any

import ray

from pipeline.errors import NstError

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"


def start_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
              quiet: bool = True) -> bool:
    """Joins ``address`` (or RAY_ADDRESS), else starts an embedded local runtime; True if it started one.

    The embedded runtime runs without the dashboard, and every port it opens (GCS, raylet,
    object manager, agents, workers) listens on 127.0.0.1 only: on Linux Ray replaces a loopback
    node address with the machine's reachable one unless its "single-machine" mode is chosen,
    which is what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 does (Ray's default on macOS/Windows).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {"namespace": "nst", "log_to_driver": not quiet, "configure_logging": False}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise NstError(f"cannot join the Ray cluster at {address}: {exc}") from exc
        return False
    bind_loopback_only()
    # Ray turns token authentication on for a new local runtime (kept) and says so on every run.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, dashboard_host=LOCAL_HOST,
             _node_ip_address=LOCAL_HOST, **common)
    return True


def bind_loopback_only() -> None:
    """Makes an embedded runtime resolve its node address to 127.0.0.1 (and so bind there).

    The constant is read when Ray is imported, so it is set both in the environment (for the
    processes Ray spawns) and on the already-imported module (for this one).
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def stop_ray(started: bool) -> None:
    if started and ray.is_initialized():
        ray.shutdown()


