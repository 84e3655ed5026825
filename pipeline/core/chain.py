"""Frame-by-frame video stylization with temporal coherence (Ruder et al. 2016).

Modes (``video.temporal``):
- ``off``: every frame independent (content init, the first-frame budget, coarse-to-fine):
  the quality reference, and the flickering baseline.
- ``prev``: warm start from the previous stylized frame as it is, no temporal loss.
- ``flow``: warm start from the previous stylized frame carried along the optical flow of the
  input frames (``temporal.carry``: Lanczos, so the texture keeps its detail), and a temporal loss
  that keeps the pixels the flow vouches for near the carried frame.
A shot cut resets the chain: its first frame starts fresh.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.core.stylizer import Stylizer, color_mode
from pipeline.core.temporal import KeyStep, Motion, carry, follow_light, motion_between, with_motion
from pipeline.core.types import StylizeResult, TemporalTarget
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("off", "prev", "flow")


@dataclass(frozen=True)
class FramePlan:
    """How one frame was started (for reports and benchmarks)."""

    fresh: bool
    reliable: float  # fraction of pixels carried over by the flow (1.0 for prev, 0.0 when fresh)


def prefetched(items: Iterable[Any], ahead: int) -> Generator[Any, None, None]:
    """Yields ``items`` in order while a thread computes up to ``ahead`` of them in advance.

    Errors of the producer are re-raised here; closing the generator stops the thread.
    """
    slots: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            slots.put((done, exc))
            return
        slots.put((done, None))

    thread = threading.Thread(target=produce, name="flow-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get_nowait()
            thread.join(timeout=0.05)


def _carried(stylized: np.ndarray, content: np.ndarray, frame: np.ndarray, flow: np.ndarray, mask: np.ndarray,
             config: Config) -> np.ndarray:
    """The stylized frame of ``content`` carried along ``flow`` onto ``frame``; with the content's
    colours preserved, its brightness follows the content's change of light too."""
    warped = carry(stylized, flow)
    if color_mode(config.image.preserve_colors) != "off":
        warped = follow_light(warped, frame, content, flow, mask)
    return warped


def stylize_frame(stylizer: Stylizer, frame: np.ndarray, styles: Sequence[np.ndarray],
                  style_weights: Sequence[float], config: Config, mode: str = "flow",
                  previous_stylized: np.ndarray | None = None, previous_content: np.ndarray | None = None,
                  motion: Motion | None = None) -> tuple[StylizeResult, FramePlan]:
    """One frame: fresh when there is no previous frame (or mode off), else warm-started.

    ``motion`` (from previous_content to frame) may come precomputed; else it is computed here.
    """
    if mode not in MODES:
        raise ConfigError(f"--temporal {mode!r}: expected one of {', '.join(MODES)}")
    video = config.video
    if mode == "off" or previous_stylized is None:
        result = stylizer.stylize(frame, styles, style_weights, init="content",
                                  iterations=video.first_frame_iterations, multiscale=True)
        return result, FramePlan(True, 0.0)
    if mode == "prev" or previous_content is None:
        result = stylizer.stylize(frame, styles, style_weights, init=previous_stylized,
                                  iterations=video.later_frame_iterations, multiscale=False)
        return result, FramePlan(False, 1.0)
    # Flow on the input frames, from frame t into frame t-1: it carries t-1's pixels onto t's grid.
    if motion is None:
        motion = motion_between(previous_content, frame)
    mask = motion.mask
    warped = _carried(previous_stylized, previous_content, frame, motion.backward, mask, config)
    # Ruder et al.'s "prevWarped" start everywhere, disocclusions included: there the carried texture
    # is repainted by the optimisation, where the unstylized frame (tried before) was painted anew and
    # came out differently on every frame. With the Lanczos carry: 25.8x -> 47x less flicker than
    # independent frames on a slow shot (benchmarks/bench_video.py and README, Videos).
    result = stylizer.stylize(frame, styles, style_weights, init=warped.astype(np.float32),
                              temporal=TemporalTarget(warped, mask), temporal_weight=video.temporal_weight,
                              iterations=video.later_frame_iterations, multiscale=False)
    return result, FramePlan(False, float(mask.mean()))


def settle(stylizer: Stylizer, key: np.ndarray, key_stylized: np.ndarray, ahead: Sequence[np.ndarray],
           styles: Sequence[np.ndarray], style_weights: Sequence[float], config: Config, mode: str = "flow",
           callback: Callable[[StylizeResult], None] | None = None) -> np.ndarray:
    """A fresh key frame rolled forward through ``ahead`` (the frames after it) and back to itself.

    The result starts the chain in place of the fresh frame; ``2 * len(ahead)`` later-frame
    optimisations. Deterministic, so two workers settling the same key frame get the same pixels.
    """
    if mode == "off" or not len(ahead):
        return key_stylized
    prev_s, prev_c = key_stylized, key
    there_and_back = list(ahead) + list(ahead[:-1])[::-1] + [key]  # K+1 .. K+p, K+p-1 .. K+1, K
    for frame in there_and_back:
        frame = np.asarray(frame, np.float32)
        result, _plan = stylize_frame(stylizer, frame, styles, style_weights, config, mode, prev_s, prev_c)
        prev_s, prev_c = result.image, frame
        if callback is not None:
            callback(result)
    return prev_s


def key_frame(stylizer: Stylizer, steps: Sequence[KeyStep], styles: Sequence[np.ndarray],
              style_weights: Sequence[float], config: Config, mode: str = "flow",
              callback: Callable[[StylizeResult], None] | None = None) -> np.ndarray:
    """The stylized key frame of ``steps[-1]``, computed through the key frames before it."""
    video = config.video
    if mode != "flow":  # carrying a key frame over needs the flow; without it each key is fresh
        steps = steps[-1:]
    stylized: np.ndarray | None = None
    previous: np.ndarray | None = None  # the key frame ``stylized`` was made from
    for step in steps:
        frame = np.asarray(step.frame, np.float32)
        if step.flow is None or stylized is None:
            result = stylizer.stylize(frame, styles, style_weights, init="content",
                                      iterations=video.first_frame_iterations, multiscale=True)
        else:
            mask = np.asarray(step.mask, np.float32)
            warped = _carried(stylized, previous, frame, step.flow, mask, config)
            # Started from the carried texture everywhere, as later frames are (pixels the flow cannot
            # vouch for started from the unstylized frame before), so the chains that meet near this
            # key frame share more of their strokes. 48 frames at 192 px in 3-4 segments (a pan, a
            # static camera): warping error over the seam 0.77x / 0.61x, style distance of the seam's
            # frames 0.68x / 0.75x, of the frames after the key frame 0.94x / 0.92x (README, Workers).
            result = stylizer.stylize(frame, styles, style_weights, init=warped.astype(np.float32),
                                      temporal=TemporalTarget(warped, mask), temporal_weight=video.temporal_weight,
                                      iterations=video.first_frame_iterations, multiscale=False)
        if callback is not None:
            callback(result)
        stylized = settle(stylizer, frame, result.image, list(step.ahead)[:video.settle_frames], styles,
                          style_weights, config, mode, callback=callback)
        previous = frame
    return stylized


def stylize_sequence(stylizer: Stylizer, frames: Sequence[np.ndarray], styles: Sequence[np.ndarray],
                     style_weights: Sequence[float], config: Config, mode: str = "flow",
                     previous_stylized: np.ndarray | None = None, previous_content: np.ndarray | None = None,
                     callback: Callable[[int, StylizeResult], None] | None = None,
                     first_stylized: np.ndarray | None = None,
                     on_held: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Stylizes consecutive frames of ONE shot (no cut detection here).

    With ``previous_stylized``/``previous_content`` (the frame before ``frames[0]``, e.g. the end of
    the previous segment), frame 0 is warm-started from them as a later frame. With
    ``first_stylized`` (a key frame computed by ``key_frame``), that is frame 0's result. Otherwise
    frame 0 is fresh and settled through ``frames[1:]``.

    With ``video.hold_frames`` (not in mode "off"), a frame that repeats the last one painted
    (``temporal.repeats``) takes its painting unchanged; ``on_held`` is told its index.
    """
    if mode not in MODES:
        raise ConfigError(f"--temporal {mode!r}: expected one of {', '.join(MODES)}")
    if first_stylized is None and previous_stylized is None and len(frames) and mode != "off":
        ahead = [np.asarray(f, np.float32) for f in frames[1:1 + config.video.settle_frames]]
        first_stylized = key_frame(stylizer, [KeyStep(frames[0], ahead)], styles, style_weights, config, mode,
                                   callback=None if callback is None else (lambda r: callback(0, r)))
    out: list[np.ndarray] = []
    prev_s, prev_c = previous_stylized, previous_content
    hold = config.video.hold_frames and mode != "off"  # "off" paints each frame apart, repeats alike
    # Flows and masks of the frames ahead, and which of them repeat the frame painted before them,
    # are worked out on a thread while this one optimises.
    chain = [] if previous_content is None else [previous_content]
    stream = prefetched(with_motion([*chain, *frames], hold=hold, flow=mode == "flow"), ahead=4)
    try:
        if chain:
            next(stream)
        for index, (frame, motion, held) in enumerate(stream):
            if index == 0 and first_stylized is not None:
                image = np.asarray(first_stylized, np.float32)
            elif held and prev_s is not None:
                # The chain goes on from the painting and the content it was painted for.
                out.append(prev_s)
                if on_held is not None:
                    on_held(index)
                continue
            else:
                result, _plan = stylize_frame(stylizer, frame, styles, style_weights, config, mode, prev_s, prev_c,
                                              motion)
                image = result.image
                if callback is not None:
                    callback(index, result)
            out.append(image)
            prev_s, prev_c = image, frame
    finally:
        stream.close()
    return out
