"""The driver's per-item file writes: temp file then rename, in as few system calls as it can.

pipeline.atomic makes its temp file with mkstemp (mode 0600, so a chmod follows) and reopens it
to write and again to fsync: about 0.4 ms of CPU a file, a fifth of what the driver may spend on
a photo. Here the temp name is unique to this process (one driver per output folder, held by its
lock), the mode comes from the umask at creation, and one descriptor writes and syncs.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.atomic import current_umask, temp_prefix

_MODE = 0o666 & ~current_umask()  # what a new file gets (the driver does not change its umask)


def write_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    """``path`` appears whole or not at all; with ``sync`` its bytes are on disk before the rename
    (so a record the ledger makes afterwards never outlives them across a power cut)."""
    tail = f"{os.getpid()}.part"
    tmp = os.path.join(os.path.dirname(path), temp_prefix(os.path.basename(path), len(tail)) + tail)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _MODE)
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
