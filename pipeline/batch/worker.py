"""The work itself, the same in every executor: a Worker holds one Stylizer (VGG-19 loaded once)
and the run's styles, and answers requests with results or failures (pipeline.batch.protocol).

TensorFlow is imported when a Worker is made, not when this module is: the Ray executor sets
the thread counts of a worker process first.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.batch.protocol import ChunkRequest, ChunkResult, Failure, ImageRequest, ImageResult, Request, Result
from pipeline.batch.protocol import Worker as Who
from pipeline.config import Config
from pipeline.core.arrays import MIN_SIDE
from pipeline.errors import NstError

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, name: str, config: Config, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                 init: np.ndarray | None = None, node: str | None = None,
                 masks: Sequence[np.ndarray | None] | None = None) -> None:
        from pipeline.core.stylizer import Stylizer

        self.name = name
        self.config = config
        self.styles = [np.asarray(s, np.float32) for s in styles]
        self.style_weights = list(style_weights)
        self.init = init
        self.masks = list(masks) if masks is not None and any(m is not None for m in masks) else None
        started = time.perf_counter()
        self.stylizer = Stylizer(config)
        self.stylizer.default_masks = self.masks  # every frame of a video uses them too
        self.load_seconds = time.perf_counter() - started
        self.who = Who(name, node or socket.gethostname(), os.getpid())

    def handle(self, request: Request) -> Result | Failure:
        """Deterministic problems come back as a Failure that no retry can fix; anything else
        raised here is unexpected, and the executor retries it."""
        try:
            if isinstance(request, ImageRequest):
                return self._image(request)
            if isinstance(request, ChunkRequest):
                return self._chunk(request)
        except NstError as exc:  # a property of the input or the settings: retrying elsewhere cannot help
            return Failure(getattr(exc, "reason", None) or exc.message, retryable=False, worker=self.who)
        raise TypeError(f"unknown request {type(request).__name__}")

    def _image(self, request: ImageRequest) -> ImageResult | Failure:
        """Source bytes in, encoded output bytes out; the worker writes nothing but its input's temp copy."""
        from pipeline.batch.imagejob import ImageJob, stylize_to_bytes

        started = time.perf_counter()
        scale_seconds: dict[int, float] = {}

        def on_iterate(it: Any) -> None:  # the optimiser's own clock, per scale (overhead accounting)
            scale_seconds[it.scale] = it.elapsed

        with tempfile.TemporaryDirectory(prefix="nst-") as tmp:
            source = Path(tmp) / f"in{Path(request.filename).suffix}"
            try:
                source.write_bytes(request.data)
            except OSError as exc:  # this worker's disk; another worker may have room
                return Failure(f"cannot write a temporary copy in {tmp} ({exc.strerror or exc})", retryable=True,
                               worker=self.who)
            try:
                payload, outcome = stylize_to_bytes(
                    self.stylizer, ImageJob(source, Path(tmp) / f"out{request.output_suffix}"), self.styles,
                    self.style_weights, self.config, init=self.init, callback=on_iterate, masks=self.masks)
            except NstError as exc:
                reason = getattr(exc, "reason", None) or exc.message.replace(str(source), request.filename)
                return Failure(reason, retryable=False, worker=self.who)
        from pipeline.batch.thumbs import pair

        return ImageResult(payload, time.perf_counter() - started, sum(scale_seconds.values()), outcome.evaluations,
                           tuple(outcome.size), outcome.reason, self.who, tuple(outcome.intermediates),
                           pair(request.data, payload))

    def _chunk(self, request: ChunkRequest) -> ChunkResult | Failure:
        """Optical flow and the temporal loss are symmetric in time, so a backward chain is as
        coherent as a forward one."""
        from pipeline.batch.segments import encode_png
        from pipeline.core.chain import key_frame, stylize_sequence

        frames = request.frames
        if len(frames) and min(frames.shape[1:3]) < MIN_SIDE:
            h, w = frames.shape[1:3]
            return Failure(f"too small: frames are {w}x{h} at image.size {self.config.image.size}; VGG needs at "
                           f"least {MIN_SIDE} px on the short side", retryable=False, worker=self.who)
        started = time.perf_counter()
        optim = [0.0]

        def on_result(result: Any) -> None:
            optim[0] += result.seconds

        order = [f.astype(np.float32) for f in frames]
        if request.reverse:
            order = order[::-1]
        key = prev_s = prev_c = None
        if request.previous is not None:
            prev_s, prev_c = (np.asarray(a, np.float32) for a in request.previous)
        elif request.key_steps and request.mode != "off":
            key = key_frame(self.stylizer, request.key_steps, self.styles, self.style_weights, self.config,
                            request.mode, callback=on_result)
        out = stylize_sequence(self.stylizer, order, self.styles, self.style_weights, self.config,
                               mode=request.mode, previous_stylized=prev_s, previous_content=prev_c,
                               callback=lambda _index, result: on_result(result), first_stylized=key)
        if request.reverse:
            out = out[::-1]
        from pipeline.batch.thumbs import pair

        last = 0 if request.reverse else -1  # the frame furthest along the chain
        thumb = pair(frames[last], out[last]) if len(out) else None
        return ChunkResult(tuple(encode_png(frame) for frame in out), time.perf_counter() - started, optim[0],
                           self.who, thumb)

    def describe(self) -> dict:
        from pipeline.core.tfsetup import tf

        return {"name": self.name, "pid": os.getpid(), "node": self.who.node, "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "tf_devices": [d.name for d in tf.config.list_logical_devices()],
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "load_seconds": self.load_seconds}
