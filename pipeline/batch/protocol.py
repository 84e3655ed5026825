"""What crosses to an executor and comes back: small frozen records, the same for every executor.

A request names its work; a worker answers with a result or a Failure. ``retryable`` says whether
another attempt (on another worker) could help: a lost worker or a transient error could, a bad
input or setting could not, so those fail at once with their one-line reason.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageRequest:
    item_id: str
    filename: str  # the source's name (for messages and its format); the bytes travel in ``data``
    data: bytes
    output_suffix: str


@dataclass(frozen=True)
class ChunkRequest:
    """Consecutive frames of one shot's chain (uint8 N x H x W x 3), in time order.

    The first chunk of a segment carries ``key_steps`` (pipeline.core.temporal.KeyStep) to compute
    its key frame exactly as every segment sharing it does; a later chunk carries ``previous``,
    the stylized and the source frame before it in chain order. ``reverse`` runs the chain
    backward in time.
    """

    item_id: str
    segment: int
    frames: np.ndarray
    mode: str
    reverse: bool = False
    key_steps: tuple[Any, ...] | None = None
    previous: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class Worker:
    """Who did the work (recorded in the ledger)."""

    name: str
    node: str
    pid: int


@dataclass(frozen=True)
class ImageResult:
    data: bytes  # the encoded output file
    seconds: float
    optim_seconds: float
    evaluations: int
    size: tuple[int, int]
    note: str
    worker: Worker
    intermediates: tuple[tuple[int, bytes], ...] = ()  # (iteration, encoded image), --save-every
    thumb: bytes | None = None  # the report's JPEG: source | result (pipeline.batch.thumbs.pair)


@dataclass(frozen=True)
class ChunkResult:
    frames: tuple[bytes, ...]  # one PNG per frame, in the request's order
    seconds: float
    optim_seconds: float
    worker: Worker
    thumb: bytes | None = None  # the chunk's last frame in time, source | result, for the live report


@dataclass(frozen=True)
class Failure:
    reason: str
    retryable: bool
    worker: Worker | None = None


Request = ImageRequest | ChunkRequest
Result = ImageResult | ChunkResult


@dataclass
class Task:
    """One piece of work: ``request()`` builds its Request at submit time (payloads stay bounded)."""

    key: tuple
    request: Callable[[], Request]
    label: str
    attempts: int = 0
    extra: dict = field(default_factory=dict)
    groupable: bool = False  # a small independent item the Ray executor may send with others in one call


# The steps every executor takes the same way around a worker call.
def begin(task: Task, on_failure: Callable[[Task, str], None],
          retry: Callable[[Task, str], None]) -> Request | None:
    """Counts an attempt and builds the task's request; an input the driver cannot read fails the
    task, and a transient failure (its decoder killed from outside) is tried again."""
    from pipeline.errors import NstError, TransientError

    task.attempts += 1
    try:
        return task.request()
    except NstError as exc:
        on_failure(task, getattr(exc, "reason", None) or exc.message)
    except TransientError as exc:
        retry(task, getattr(exc, "reason", None) or str(exc))
    return None


def error_line(exc: BaseException) -> str:
    """An unexpected error as one line: its type and the first line of its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def retry_or_fail(task: Task, reason: str, queue: deque[Task], max_attempts: int,
                  on_retry: Callable[[Task, str], None] | None, on_failure: Callable[[Task, str], None]) -> None:
    """Another attempt, first in ``queue``, while attempts are left; else the task fails with the reason."""
    if task.attempts < max_attempts:
        if on_retry is not None:
            on_retry(task, reason)
        queue.appendleft(task)
    else:
        on_failure(task, f"{reason} (gave up after {task.attempts} attempts)")
