"""A driver killed with SIGKILL takes its embedded Ray runtime with it, and the next run starts clean."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.batch import reaper

REPO = Path(__file__).resolve().parents[1]
GONE_WITHIN = 10.0  # s from the driver's SIGKILL to the last process of its runtime
# A driver as `nst run` starts its runtime: start_ray, one task so that a worker exists, then wait.
DRIVER = """
import sys, time, ray
from pipeline.batch import runtime
runtime.start_ray(num_cpus=1)
ray.get(ray.remote(lambda: 0).remote())
print(runtime._embedded.root, runtime._embedded.watchdog.pid, flush=True)
time.sleep(600)
"""
# Processes of a local head that must not outlive the driver (names as /proc shows them).
EXPECTED = {"gcs_server", "raylet", "ray::DashboardA", "ray::RuntimeEnv"}

Proc = tuple[int, int, str]  # pid, start time, name: one process, even after its pid is reused


@pytest.fixture
def base() -> Iterator[Path]:
    """A short private temp dir (Ray's socket paths are bounded) standing in for /tmp."""
    path = Path(tempfile.mkdtemp(prefix="nst-t", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, name) of every live process."""
    table = {}
    for name in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{name}/stat").read_text() if name.isdigit() else ""
        except OSError:
            continue
        if stat:
            fields = stat[stat.rindex(")") + 2:].split()
            table[int(name)] = (int(fields[1]), stat[stat.index("(") + 1:stat.rindex(")")])
    return table


def descendants(root: int) -> set[Proc]:
    table = proc_table()
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, name) in table.items():
            if ppid == parent and (started := reaper.start_time(pid)) is not None:
                found.add((pid, started, name))
                todo.append(pid)
    return found


def alive(procs: set[Proc]) -> set[Proc]:
    return {p for p in procs if reaper.start_time(p[0]) == p[1]}


def start_driver(base: Path) -> tuple[subprocess.Popen, Path, int, set[Proc]]:
    """A driver with a running runtime: its process, runtime dir, watchdog pid and Ray processes."""
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": str(base)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = driver.stdout.readline().split()
    assert line, "the driver did not start Ray"
    root, watchdog = Path(line[0]), int(line[1])
    deadline = time.monotonic() + 30
    procs: set[Proc] = set()
    while time.monotonic() < deadline:  # the raylet starts its agents after start_ray returns
        procs = {p for p in descendants(driver.pid) if p[0] != watchdog}
        if EXPECTED <= {p[2] for p in procs} and any(p[2].startswith("ray::IDLE") for p in procs):
            break
        time.sleep(0.2)
    assert EXPECTED <= {p[2] for p in procs}, procs
    assert root.parent == base and root.is_dir()
    return driver, root, watchdog, procs


def kill(driver: subprocess.Popen, procs: set[Proc], watchdog: int) -> None:
    """Ends what a test left: the driver, then, once its watchdog had its chance to clean up (it
    would remove its directory while the test removes the base), any runtime process."""
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + reaper.KILL_TIMEOUT + 5
    while reaper.start_time(watchdog) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, _, _ in alive(procs):
        os.kill(pid, signal.SIGKILL)


def wait_gone(procs: set[Proc], bound: float) -> float:
    """Seconds until none of ``procs`` lives (a zombie counts as gone), at most ``bound``."""
    start = time.monotonic()
    while alive(procs) and time.monotonic() - start < bound:
        time.sleep(0.02)
    return time.monotonic() - start


def test_sigkilled_driver_takes_every_runtime_process_with_it(base: Path) -> None:
    driver, root, watchdog, procs = start_driver(base)
    try:
        driver.kill()  # SIGKILL: nothing runs in the driver, no finally, no atexit
        driver.wait()
        took = wait_gone(procs, GONE_WITHIN)
        assert not alive(procs), f"still running {took:.1f} s after the driver's SIGKILL: {alive(procs)}"
        print(f"runtime gone {took:.2f} s after the driver's SIGKILL ({len(procs)} processes)")
        deadline = time.monotonic() + 5
        # Then the watchdog removes the runtime's directory and exits.
        while (root.exists() or reaper.start_time(watchdog) is not None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not root.exists()
        assert reaper.start_time(watchdog) is None
    finally:
        kill(driver, procs, watchdog)


def test_the_next_run_ends_what_a_run_killed_with_its_watchdog_left_and_starts_clean(base: Path) -> None:
    """If the watchdog dies too, Ray's agents outlive the raylet by a minute; the next run's start
    ends them and removes the dead run's directory, and leaves live runs' runtimes alone."""
    first, first_root, first_watchdog, first_procs = start_driver(base)
    os.kill(first_watchdog, signal.SIGKILL)
    first.kill()
    first.wait()
    second = second_watchdog = None
    second_procs: set[Proc] = set()
    try:
        assert first_root.is_dir()  # nobody removed it
        time.sleep(1)  # the raylet is gone (Ray's parent-death signal); its agents are not
        print(f"left by the run: {sorted(p[2] for p in alive(first_procs))}")
        second, second_root, second_watchdog, second_procs = start_driver(base)
        assert not alive(first_procs), alive(first_procs)  # ended before the new runtime started
        assert not first_root.exists()
        assert second_root != first_root
        assert list(base.iterdir()) == [second_root]
    finally:
        kill(first, first_procs, first_watchdog)
        if second is not None and second_watchdog is not None:
            kill(second, second_procs, second_watchdog)
