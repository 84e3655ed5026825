"""The Ray runtime a run uses: join a cluster, or start an embedded local one and stop it after."""
from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from pipeline.batch import reaper
from pipeline.errors import NstError

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Embedded:
    """The runtime this process started: its private directory and the watchdog that ends it."""
    root: Path
    watchdog: subprocess.Popen


_embedded: Embedded | None = None


def start_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
              quiet: bool = True) -> bool:
    """Joins ``address`` (or RAY_ADDRESS), else starts an embedded local runtime; True if it started one.

    The embedded runtime runs without the dashboard, and every port it opens (GCS, raylet,
    object manager, agents, workers) listens on 127.0.0.1 only: on Linux Ray replaces a loopback
    node address with the machine's reachable one unless its "single-machine" mode is chosen,
    which is what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 does (Ray's default on macOS/Windows).

    It is private to the run and ends with the driver however the driver ends (see
    ``pipeline.batch.reaper``): its own temporary directory instead of the shared /tmp/ray
    (sessions, sockets, spilled objects, and the ray_current_cluster file through which
    ``ray.init()`` would otherwise join whatever cluster was last started on the machine, a
    test's included), ``address="local"`` so that nothing found there is joined either, and a
    watchdog process that kills what is left of it when the driver exits.
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
    _end_embedded()  # one started earlier in this process and shut down without stop_ray
    root = reaper.new_runtime_dir()
    watchdog = reaper.start_watchdog(root)
    # Set only while Ray starts its processes: the raylet passes it on to the workers, but what
    # the driver starts later (ffmpeg) must not look like part of the runtime.
    before = os.environ.get(reaper.MARKER_ENV)
    os.environ[reaper.MARKER_ENV] = str(root)
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 dashboard_host=LOCAL_HOST, _node_ip_address=LOCAL_HOST, _temp_dir=str(root), **common)
    except BaseException:
        reaper.stop_watchdog(watchdog)
        raise
    finally:
        if before is None:
            os.environ.pop(reaper.MARKER_ENV, None)
        else:
            os.environ[reaper.MARKER_ENV] = before
    global _embedded
    _embedded = Embedded(root, watchdog)
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
    """Shuts down the runtime if this process started it; an embedded one is then ended for good
    (the agents Ray leaves exiting, the private directory) before this returns."""
    if started and ray.is_initialized():
        ray.shutdown()
    if started:
        _end_embedded()


def _end_embedded() -> None:
    global _embedded
    if _embedded is not None and not ray.is_initialized():
        reaper.stop_watchdog(_embedded.watchdog)
        _embedded = None


