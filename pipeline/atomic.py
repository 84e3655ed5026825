"""Atomic writes: a temp file beside the target, fsynced, given the usual mode, then renamed.

A reader (or a rerun after a crash) sees the old file or the whole new one, never a half file.
"""
from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Bytes in one path component on ext4, XFS, btrfs and ZFS (APFS and NTFS count 255 characters, never
# fewer than 255 bytes of UTF-8). A name the file system took can still be too long once a temp
# file's marks or an output's suffix are added to it.
NAME_MAX = 255


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """``name`` if it takes at most ``limit`` bytes, else its stem cut short (whole characters) and
    marked with a print of the whole name, so that two long names sharing a beginning stay apart;
    the extension is kept."""
    if len(os.fsencode(name)) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        stem, ext = name, ""
    tail = f"~{hashlib.sha1(os.fsencode(name)).hexdigest()[:8]}" + (f".{ext}" if ext else "")
    room = limit - len(os.fsencode(tail))
    cut = stem
    while cut and len(os.fsencode(cut)) > room:
        cut = cut[:-max(1, (len(os.fsencode(cut)) - room) // 4)]
    return cut + tail


def temp_prefix(name: str, added: int) -> str:
    """The start of a hidden temp name beside the file ``name`` (".name."), short enough that the
    ``added`` bytes that follow it keep the whole within NAME_MAX."""
    return f".{fit_name(name, NAME_MAX - 2 - added)}."


RANDOM_CHARS = 8  # what mkstemp puts between prefix and suffix


def temp_beside(path: Path, suffix: str) -> Path:
    """A new empty hidden file beside ``path``, ".NAME.XXXXXXXX<suffix>" (its name within NAME_MAX)."""
    prefix = temp_prefix(path.name, RANDOM_CHARS + len(os.fsencode(suffix)))
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    return Path(name)


def stale_temps(path: Path, suffix: str) -> list[Path]:
    """The files ``temp_beside(path, suffix)`` made that are still there: a process killed before
    it renamed or removed them left them."""
    prefix = temp_prefix(path.name, RANDOM_CHARS + len(os.fsencode(suffix)))
    return [p for p in path.parent.glob(glob.escape(prefix) + "*" + glob.escape(suffix))
            if len(p.name) == len(prefix) + RANDOM_CHARS + len(suffix)]


@contextmanager
def atomic_target(path: Path, suffix: str = ".part") -> Iterator[Path]:
    """Yields a temp path beside ``path``; when the block succeeds it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; outputs read like any new file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(payload)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
