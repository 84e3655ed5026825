"""Ends an embedded Ray runtime when the driver that started it ends, however it ends.

Ray makes its direct children (GCS, raylet, log monitor) die with the driver through the
parent-death signal, but the raylet's own children do not follow: the dashboard agent and the
runtime-env agent notice the raylet is gone, then try to report that to the dead GCS and wait
out a fixed 60 s timeout before exiting (about 210 MB between them); workers follow the raylet
a second or three later. No Ray setting shortens that wait, and the agents cannot be left out.
So a run gets a private Ray directory, and a watchdog started beside the driver (this file run as
a script, in its own session so that Ctrl-C or a kill of the driver's process group does not
reach it) waits for the driver to exit, then SIGKILLs every process of that runtime and removes
the directory. Its pidfd on the driver fires at the driver's exit, before the driver is reaped.

A process belongs to the runtime if it holds a file or its working directory inside the private
directory (every Ray process keeps its logs open there; agents overwrite their environment when
they set their process title, so the environment alone does not tell), or if it carries the
runtime's marker in its environment (what the raylet passes on to workers and their children).

Stdlib only: the watchdog runs as ``python -I -S reaper.py`` so it costs a few MB, not an import
of Ray or TensorFlow.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

MARKER_ENV = "NST_RAY_RUNTIME"  # its value is the runtime's private directory
DIR_PREFIX = "nst-ray-"
OWNER_FILE = "driver"  # "<pid> <start time>" of the driver that owns the directory
KILL_TIMEOUT = 10.0  # s: after this the watchdog gives up on a process that will not die
ORPHAN_GRACE = 60.0  # s: a directory without owner file younger than this may still be starting


def base_dir() -> Path:
    """Where Ray itself would put its temporary directory (RAY_TMPDIR, TMPDIR, /tmp)."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    # Ray's socket paths must fit in 107 bytes and add ~80 to the base (the runtime directory's
    # 17 characters and the session's socket paths).
    return Path(base) if len(base) <= 20 and os.path.isdir(base) else Path("/tmp")


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which ``pid`` started, None if it is gone: a pid plus its start time
    names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # exited, only waiting to be reaped
        return None
    return int(fields[19])


def new_runtime_dir(base: Path | None = None) -> Path:
    """A fresh private directory for one embedded runtime, after ending what dead drivers left behind."""
    base = base or base_dir()
    sweep(base)
    root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base)).resolve()
    (root / OWNER_FILE).write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
    return root


def owner_alive(root: Path) -> bool:
    try:
        pid, started = (root / OWNER_FILE).read_text().split()
    except (OSError, ValueError):  # no owner yet: alive while the directory is young
        try:
            return time.time() - root.stat().st_mtime < ORPHAN_GRACE
        except OSError:
            return False
    return str(start_time(int(pid))) == started


def sweep(base: Path) -> list[Path]:
    """Ends the runtimes of this user whose driver is dead (its watchdog was killed with it); the
    runtimes of live drivers, including other runs going on now, are left alone."""
    ended = []
    for root in base.glob(DIR_PREFIX + "*"):
        try:
            if root.stat().st_uid != os.getuid() or not root.is_dir() or owner_alive(root):
                continue
        except OSError:
            continue
        log.info("ending the leftovers of a dead run's Ray runtime in %s", root)
        end_runtime(root)
        ended.append(root)
    return ended


def _belongs(pid: int, root: str, marker: bytes) -> bool:
    """Whether ``pid`` holds a file or its working directory under ``root``, or carries its marker."""
    prefix = root + os.sep
    proc = f"/proc/{pid}"
    try:
        if os.readlink(f"{proc}/cwd").startswith(prefix):
            return True
        for fd in os.listdir(f"{proc}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                if os.readlink(f"{proc}/fd/{fd}").startswith(prefix):
                    return True
        with open(f"{proc}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:  # gone, a zombie, or another user's
        return False


def runtime_pids(root: Path, spare: Collection[int] = ()) -> Iterator[int]:
    """The live processes of the runtime in ``root``, except ``spare``."""
    marker = f"{MARKER_ENV}={root}".encode()
    own = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != own and int(name) not in spare and _belongs(int(name), str(root), marker):
            yield int(name)


def _kill(pid: int, root: Path) -> None:
    """SIGKILL ``pid`` if it still belongs to the runtime, through a pidfd where the kernel has them,
    so that a pid freed and reused since the scan is never hit."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        return
    try:
        if _belongs(pid, str(root), f"{MARKER_ENV}={root}".encode()):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def end_runtime(root: Path, spare: Collection[int] = ()) -> int:
    """SIGKILLs every process of the runtime in ``root`` (but ``spare``), removes the directory and
    returns how many processes it killed. Ray's processes keep nothing worth a graceful exit: the
    ledger and the outputs belong to the driver, and the runtime is private to the run."""
    killed: set[int] = set()
    deadline = time.monotonic() + KILL_TIMEOUT
    while time.monotonic() < deadline:
        pids = list(runtime_pids(root, spare))
        if not pids:
            break
        for pid in pids:
            _kill(pid, root)
        killed.update(pids)
        time.sleep(0.05)  # a killed process keeps its files until the kernel has torn it down
    shutil.rmtree(root, ignore_errors=True)
    return len(killed)


def start_watchdog(root: Path) -> subprocess.Popen:
    """Starts the watchdog of the runtime in ``root`` for this process; closing its stdin (see
    ``stop_watchdog``) or the death of this process makes it end the runtime."""
    return subprocess.Popen([sys.executable, "-I", "-S", __file__, str(os.getpid()), str(root)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True, start_new_session=True, cwd="/")


def stop_watchdog(watchdog: subprocess.Popen, timeout: float = KILL_TIMEOUT + 5) -> None:
    """Has the watchdog end the runtime now (after ``ray.shutdown``: whatever did not exit yet) and
    waits until it has."""
    if watchdog.stdin is not None:
        with contextlib.suppress(OSError):
            watchdog.stdin.close()
    try:
        watchdog.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("the Ray runtime watchdog (pid %d) is still cleaning up", watchdog.pid)


def _wait_for_exit(driver: int) -> None:
    """Returns when ``driver`` (this process's parent) has exited or closed our stdin."""
    watched = [sys.stdin.fileno()]
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(driver)
        watched.append(pidfd)
    # The driver started this process, so while it lives it is the parent; checked after opening
    # the pidfd so that the pidfd is known to name the driver and not a process that reused its pid.
    while os.getppid() == driver:
        # pidfd: readable once the driver exits, even before it is reaped; stdin: end of file
        # on close or on exit. Without pidfds the parent check every second is the fallback.
        ready, _, _ = select.select(watched, [], [], None if pidfd is not None else 1.0)
        if ready:
            return


def main(argv: list[str]) -> int:
    driver, root = int(argv[1]), Path(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runtime is ended by its driver's exit, not by a key
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _wait_for_exit(driver)
    end_runtime(root, spare={driver})  # after a clean stop the driver still holds its own Ray log
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
