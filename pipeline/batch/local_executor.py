"""The in-process executor: one Worker in this process, tasks run one after another.

Same interface as the Ray executor's WorkerPool (start, run, push, shutdown), so the driver plans,
records and writes every command the same way; `nst image` and `nst video` pay no Ray start-up.
"""
from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.batch import protocol
from pipeline.batch.protocol import Failure, Result, Task
from pipeline.config import Config

log = logging.getLogger(__name__)


@dataclass
class LocalSlot:
    """What the driver's on_submit reads of a worker (as for a Ray worker slot)."""

    name: str
    info: dict = field(default_factory=dict)


class InProcessPool:
    def __init__(self, config: Config, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                 init: np.ndarray | None = None, masks: Sequence[np.ndarray | None] | None = None) -> None:
        self.config, self.styles, self.style_weights, self.init = config, styles, list(style_weights), init
        self.masks = masks
        self.worker: Any = None
        self.slot = LocalSlot("local", {"node": socket.gethostname(), "pid": os.getpid()})
        self.queue: deque[Task] = deque()
        self.replacements = 0  # nothing to replace: a crash here ends the run, which resumes on rerun

    def start(self, timeout: float | None = None) -> list[dict]:
        from pipeline.batch.worker import Worker

        self.worker = Worker("local", self.config, self.styles, self.style_weights, self.init,
                             node=self.slot.info["node"], masks=self.masks)
        self.slot.info = self.worker.describe()
        return [self.slot.info]

    def push(self, task: Task) -> None:
        """A follow-up task (the next chunk of a video segment) runs before new work."""
        self.queue.appendleft(task)

    def shutdown(self) -> None:
        self.worker = None

    def run(self, tasks: Iterable[Task], on_submit: Callable[[Task, LocalSlot], None],
            on_result: Callable[[Task, Result], None], on_failure: Callable[[Task, str], None],
            on_retry: Callable[[Task, str], None] | None = None, max_attempts: int = 3, max_in_flight: int = 1,
            poll: float = 0.0, on_idle: Callable[[], None] | None = None, start_timeout: float = 0.0) -> None:
        """Each task ends in exactly one on_result or on_failure; an unexpected error is retried
        up to ``max_attempts`` times (a Failure marked not retryable fails at once)."""
        self.queue = deque(tasks)
        while self.queue:
            task = self.queue.popleft()
            request = protocol.begin(task, on_failure, lambda again, reason: protocol.retry_or_fail(
                again, reason, self.queue, max_attempts, on_retry, on_failure))
            if request is None:
                continue
            on_submit(task, self.slot)
            try:
                result = self.worker.handle(request)
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:
                result = Failure(protocol.error_line(exc), retryable=True)
                log.debug("%s failed", task.label, exc_info=True)
            if not isinstance(result, Failure):
                on_result(task, result)
            elif result.retryable:
                protocol.retry_or_fail(task, result.reason, self.queue, max_attempts, on_retry, on_failure)
            else:
                on_failure(task, result.reason)
            if on_idle is not None:
                on_idle()
