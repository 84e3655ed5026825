"""Ray side of a run: the runtime, the worker actors, and the driver loop that feeds them.

Each StylizeWorker loads VGG-19 once (in ``__init__``) and keeps the style Gram targets cached;
the style arrays travel once through the object store. Workers never touch the output folder:
they return encoded PNG bytes and the driver writes them, so nodes need no shared file system.
The driver keeps at most ``max_in_flight`` calls queued per worker (``ray.wait`` loop), retries
work lost with a dead worker on a fresh one, and fails deterministic input errors at once.

This module must not import TensorFlow at the top: a worker sets its thread counts first.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

from pipeline.batch import protocol
from pipeline.batch.protocol import Failure, Request, Result, Task
from pipeline.config import Config
from pipeline.errors import NstError

log = logging.getLogger(__name__)

WORKER_MEMORY_BYTES = 1_500_000_000  # VGG-19 + TF runtime + activations at 512 px, per worker


# ---------------------------------------------------------------- how many workers
@dataclass(frozen=True)
class WorkerPlan:
    count: int
    num_cpus: float  # reserved per actor in Ray's accounting
    num_gpus: float
    threads: int  # TensorFlow intra-op threads per worker
    reason: str


def plan_workers(resources: dict[str, float], workers: int = 0, gpus_per_worker: float | None = None) -> WorkerPlan:
    """One worker per GPU; on CPUs, enough workers x threads to use the cores without oversubscribing.

    Convolutions scale well to a few threads but not to many, and independent images scale
    perfectly, so CPU nodes get many narrow workers (1 thread up to 4 cores, then 2, then 4),
    capped by memory (about 1.5 GB per worker).
    """
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = float(resources.get("GPU", 0))
    memory = float(resources.get("memory", 0)) or float("inf")
    per_gpu = 1.0 if gpus_per_worker is None else gpus_per_worker
    if gpus > 0 and per_gpu > 0:
        count = workers or max(1, int(gpus // per_gpu))
        if count * per_gpu > gpus + 1e-9:
            raise NstError(f"{count} workers x {per_gpu:g} GPU need {count * per_gpu:g} GPUs; the cluster has "
                           f"{gpus:g} (lower --workers or --gpus-per-worker, or 0 for CPU workers)")
        threads = max(1, cpus // count)
        return WorkerPlan(count, min(1.0, cpus / count), per_gpu, threads,
                          f"{count} GPU worker(s), {per_gpu:g} GPU each")
    if workers:
        threads = max(1, cpus // workers)
        return WorkerPlan(workers, min(float(threads), cpus / workers), 0.0, threads,
                          f"{workers} CPU worker(s) as asked, {threads} thread(s) each on {cpus} cores")
    threads = 1 if cpus <= 4 else 2 if cpus <= 16 else 4
    count = max(1, cpus // threads)
    by_memory = max(1, int(memory // WORKER_MEMORY_BYTES)) if memory != float("inf") else count
    if by_memory < count:
        count = by_memory
        threads = max(1, cpus // count)
    return WorkerPlan(count, float(threads), 0.0, threads,
                      f"{count} CPU worker(s) x {threads} thread(s) on {cpus} cores")


# ---------------------------------------------------------------- the actor
def _node_label() -> str:
    context = ray.get_runtime_context()
    return f"{socket.gethostname()}/{context.get_node_id()[:8]}"


def _set_threads(threads: int) -> None:
    """Before TensorFlow is imported in this process: its pools are sized once, at start-up."""
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1" if threads <= 2 else "2"


@ray.remote(max_restarts=0)
class StylizeWorker:
    """A Ray actor around one pipeline.batch.worker.Worker (VGG-19 loaded once, styles cached)."""

    def __init__(self, name: str, config: Config, styles: list[np.ndarray], style_weights: list[float],
                 init: np.ndarray | None, threads: int, masks: list[np.ndarray | None] | None = None) -> None:
        _set_threads(threads)
        from pipeline.core.tfsetup import tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["TF_NUM_INTEROP_THREADS"]))
        except RuntimeError:  # the runtime was initialised already; the environment variables hold
            pass
        from pipeline.batch.worker import Worker

        self.worker = Worker(name, config, styles, style_weights, init, node=_node_label(), masks=masks)

    def describe(self) -> dict:
        return {**self.worker.describe(), "node_id": ray.get_runtime_context().get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def handle(self, request: Request) -> Result | Failure:
        return self.worker.handle(request)

    def handle_many(self, requests: list[Request]) -> list[Result | Failure]:
        """Several small requests in one call; an unexpected error fails only its own request (retryable)."""
        answers: list[Result | Failure] = []
        for request in requests:
            try:
                answers.append(self.worker.handle(request))
            except Exception as exc:  # noqa: BLE001 - reported per request, retried by the driver
                answers.append(Failure(protocol.error_line(exc), retryable=True, worker=self.worker.who))
        return answers


# ---------------------------------------------------------------- the driver loop
@dataclass
class WorkerSlot:
    name: str
    handle: Any
    info: dict
    generation: int = 0
    in_flight: int = 0
    alive: bool = True
    starting: Any = None  # describe() of a replacement still loading; the driver loop does not wait for it
    starting_since: float = 0.0


class WorkerPool:
    """Creates the actors, replaces dead ones, and runs tasks through them with bounded in-flight work."""

    def __init__(self, config: Config, plan: WorkerPlan, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                 init: np.ndarray | None = None, worker_options: Sequence[dict] | None = None,
                 masks: Sequence[np.ndarray | None] | None = None) -> None:
        self.config = config
        self.plan = plan
        self.styles_ref = ray.put([np.asarray(s, np.float32) for s in styles])  # once for every worker
        self.style_weights = list(style_weights)
        self.init_ref = ray.put(init) if init is not None else None
        self.masks_ref = ray.put(list(masks)) if masks is not None else None
        self.worker_options = list(worker_options or [])
        self.slots: list[WorkerSlot] = []
        self.replacements = 0
        self.queue: deque[Task] = deque()

    def _options(self, index: int) -> dict:
        options: dict[str, Any] = {"num_cpus": self.plan.num_cpus, "num_gpus": self.plan.num_gpus,
                                   "scheduling_strategy": "SPREAD"}
        if index < len(self.worker_options):
            options.update(self.worker_options[index])
        return options

    def _create(self, index: int, name: str) -> Any:
        return StylizeWorker.options(**self._options(index)).remote(
            name, self.config, self.styles_ref, self.style_weights, self.init_ref, self.plan.threads, self.masks_ref)

    def start(self, timeout: float | None = None, attempts: int = 3) -> list[dict]:
        """Starts every worker and waits until each has loaded VGG-19; returns what each reports.

        A worker that dies while starting (killed, out of memory on a busy node) is started again,
        up to ``attempts`` times; the run goes on with the workers that came up, and fails only
        when none did.
        """
        pending = [(i, f"worker-{i}") for i in range(self.plan.count)]
        started: dict[int, WorkerSlot] = {}
        last_error = ""
        for _ in range(attempts):
            handles = [(i, name, self._create(i, name)) for i, name in pending]
            refs = [h.describe.remote() for _, _, h in handles]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
            if not ready and not started:
                raise NstError(f"the Ray workers did not start within {timeout:.0f} s; the cluster may lack "
                               f"{self.plan.num_cpus:g} CPU / {self.plan.num_gpus:g} GPU per worker "
                               f"(`nst info` shows what it has)")
            if not ready:  # the retried workers did not come up in time: go on with those that did
                for _, _, handle in handles:
                    with contextlib.suppress(Exception):  # best effort
                        ray.kill(handle, no_restart=True)
                break
            pending = []
            for (i, name, handle), ref in zip(handles, refs):
                try:
                    started[i] = WorkerSlot(name, handle, ray.get(ref, timeout=0 if ref in ready else 1))
                except (RayActorError, GetTimeoutError, WorkerCrashedError) as exc:
                    last_error = str(exc).splitlines()[0]
                    log.warning("%s did not start (%s); trying again", name, last_error)
                    with contextlib.suppress(Exception):  # it is dead already
                        ray.kill(handle, no_restart=True)
                    pending.append((i, name))
            if not pending:
                break
        if not started:
            raise NstError(f"no Ray worker could load the model after {attempts} tries: {last_error}")
        self.slots = [started[i] for i in sorted(started)]
        for slot in self.slots:
            log.info("%s on %s pid %s, CUDA_VISIBLE_DEVICES=%s, %s intra-op threads", slot.name, slot.info["node"],
                     slot.info["pid"], slot.info["cuda_visible_devices"], slot.info["intra_op_threads"])
        return [s.info for s in self.slots]

    def replace(self, slot: WorkerSlot) -> None:
        """A fresh actor in the dead one's place; it loads VGG-19 while the others keep working."""
        index = self.slots.index(slot)
        with contextlib.suppress(Exception):  # it is dead already
            ray.kill(slot.handle, no_restart=True)
        self.replacements += 1
        slot.generation += 1
        base = slot.name.split("~")[0]
        slot.name = f"{base}~{slot.generation}"
        slot.handle = self._create(index, slot.name)
        slot.in_flight = 0
        slot.alive = False
        slot.starting = slot.handle.describe.remote()
        slot.starting_since = time.monotonic()

    def _check_starting(self, ready: Sequence[Any], start_timeout: float) -> None:
        """Replacements that finished loading join the pool; one that died or hung is given up."""
        for slot in self.slots:
            if slot.starting is None:
                continue
            if slot.starting in ready:
                try:
                    slot.info = ray.get(slot.starting)
                    slot.alive = True
                    log.warning("replaced a dead worker with %s (pid %s)", slot.name, slot.info["pid"])
                except (RayActorError, WorkerCrashedError) as exc:
                    log.error("could not replace a dead worker: %s", str(exc).splitlines()[0])
                slot.starting = None
            elif time.monotonic() - slot.starting_since > start_timeout:
                log.error("could not replace a dead worker: %s did not load within %.0f s", slot.name, start_timeout)
                slot.starting = None

    def push(self, task: Task) -> None:
        """Queues a follow-up task (e.g. the next chunk of a video segment) ahead of new work."""
        self.queue.appendleft(task)

    def shutdown(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(Exception):  # best effort at the end
                ray.kill(slot.handle, no_restart=True)
        self.slots = []

    def run(self, tasks: Iterable[Task], on_submit: Callable[[Task, WorkerSlot], None],
            on_result: Callable[[Task, Result], None], on_failure: Callable[[Task, str], None],
            on_retry: Callable[[Task, str], None] | None = None, max_attempts: int = 3,
            max_in_flight: int = 2, poll: float = 0.5, on_idle: Callable[[], None] | None = None,
            start_timeout: float = 600.0) -> None:
        """Feeds every task to the workers; each ends in exactly one on_result or on_failure call.

        A worker that dies (process killed, node lost) takes its queued calls with it; those
        tasks go back to the front of the queue, up to ``max_attempts`` tries each, and the worker
        is replaced. A worker that reports a deterministic input error fails the task at once.
        """
        queue: deque[Task] = deque(tasks)
        self.queue = queue  # push() adds follow-up tasks while this runs
        in_flight: dict[Any, tuple[list[Task], WorkerSlot, int]] = {}
        group = Grouping()

        def retry_or_fail(task: Task, reason: str) -> None:
            protocol.retry_or_fail(task, reason, queue, max_attempts, on_retry, on_failure)

        while queue or in_flight:
            live = [s for s in self.slots if s.alive]
            starting = [s.starting for s in self.slots if s.starting is not None]
            if not live and not in_flight and not starting:
                while queue:
                    on_failure(queue.popleft(), "no Ray worker is left alive")
                break
            while queue:
                free = [s for s in live if s.in_flight < max_in_flight]
                if not free:
                    break
                slot = min(free, key=lambda s: s.in_flight)
                batch: list[tuple[Task, Request]] = []
                while queue and len(batch) < group.size and (not batch or queue[0].groupable):
                    task = queue.popleft()
                    request = protocol.begin(task, on_failure, retry_or_fail)
                    if request is not None:
                        on_submit(task, slot)
                        batch.append((task, request))
                    if not task.groupable:
                        break
                if not batch:
                    continue
                if len(batch) == 1:
                    ref = slot.handle.handle.remote(batch[0][1])
                else:
                    ref = slot.handle.handle_many.remote([request for _, request in batch])
                in_flight[ref] = ([task for task, _ in batch], slot, slot.generation)
                slot.in_flight += 1
            if not in_flight and not starting:
                continue
            ready, _ = ray.wait(list(in_flight) + starting, num_returns=1, timeout=poll)
            if not ready and on_idle is not None:
                on_idle()
            self._check_starting(ready, start_timeout)
            for ref in (r for r in ready if r in in_flight):
                batch_tasks, slot, generation = in_flight.pop(ref)
                if slot.generation == generation:
                    slot.in_flight -= 1
                try:
                    answer = ray.get(ref)
                except (RayActorError, WorkerCrashedError, ObjectLostError) as exc:
                    reason = f"worker {slot.name if slot.generation == generation else 'replaced'} died " \
                             f"({type(exc).__name__})"
                    log.warning("%s: %s", batch_tasks[0].label, reason)
                    if slot.generation == generation:  # first news of this death: replace the actor
                        self.replace(slot)
                    for task in batch_tasks:
                        retry_or_fail(task, reason)
                    continue
                except RayTaskError as exc:  # an unexpected exception inside the worker
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    for task in batch_tasks:
                        retry_or_fail(task, protocol.error_line(cause))
                    continue
                for task, result in zip(batch_tasks, answer if isinstance(answer, list) else [answer]):
                    if not isinstance(result, Failure):
                        group.observe(task, result)
                        on_result(task, result)
                    elif result.retryable:
                        retry_or_fail(task, result.reason)
                    else:
                        on_failure(task, result.reason)


class Grouping:
    """How many small items (photos) go to a worker in one call.

    Each Ray call costs the driver about a millisecond of CPU whatever it carries; a photo that takes
    a second on a GPU hides that, a thumbnail-sized one does not. Calls are grouped so that each holds
    about CALL_SECONDS of work, judged from the photos finished so far (one at a time until then); a
    worker lost mid-call costs at most that much work per call it held.
    """

    CALL_SECONDS = 2.0
    MOST = 16

    def __init__(self) -> None:
        self.size = 1
        self.seconds = 0.0
        self.count = 0

    def observe(self, task: Task, result: Result) -> None:
        if not task.groupable:
            return
        self.seconds += result.seconds
        self.count += 1
        mean = self.seconds / self.count
        self.size = max(1, min(self.MOST, int(self.CALL_SECONDS / max(mean, 1e-3))))
