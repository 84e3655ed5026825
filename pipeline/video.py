"""Frame-by-frame video stylization with temporal coherence (Ruder et al. 2016).

Modes (``video.temporal``):
- ``off``: every frame independent (content init, the first-frame budget, coarse-to-fine):
  the quality reference, and the flickering baseline.
- ``prev``: warm start from the previous stylized frame as it is, no temporal loss.
- ``flow``: warm start from the previous stylized frame warped by the optical flow of the input
  frames, disoccluded pixels from the content frame, and a temporal loss that keeps reliable
  pixels near the warped frame.
A shot cut resets the chain: its first frame starts fresh.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.config import Config
from pipeline.errors import NstError, VideoError
from pipeline.frames import BackgroundIterator, BackgroundSink, encode_video, probe, read_frames, working_size
from pipeline.imagejob import check_style_weights, load_styles
from pipeline.images import save_image
from pipeline.progress import console
from pipeline.stylizer import MIN_SIDE, Stylizer, StylizeResult, TemporalTarget
from pipeline.temporal import CutDetector, Motion, motion_between, warp, with_motion

log = logging.getLogger(__name__)

MODES = ("off", "prev", "flow")


@dataclass(frozen=True)
class FramePlan:
    """How one frame was started (for reports and benchmarks)."""

    fresh: bool
    reliable: float  # fraction of pixels carried over by the flow (1.0 for prev, 0.0 when fresh)


def stylize_frame(stylizer: Stylizer, frame: np.ndarray, styles: Sequence[np.ndarray],
                  style_weights: Sequence[float], config: Config, mode: str = "flow",
                  previous_stylized: np.ndarray | None = None, previous_content: np.ndarray | None = None,
                  motion: Motion | None = None) -> tuple[StylizeResult, FramePlan]:
    """One frame: fresh when there is no previous frame (or mode off), else warm-started.

    ``motion`` (from previous_content to frame) may come precomputed; else it is computed here.
    """
    if mode not in MODES:
        raise NstError(f"--temporal {mode!r}: expected one of {', '.join(MODES)}")
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
    warped = warp(previous_stylized, motion.backward)
    init = mask[..., None] * warped + (1.0 - mask[..., None]) * frame
    result = stylizer.stylize(frame, styles, style_weights, init=init.astype(np.float32),
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


@dataclass(frozen=True)
class KeyStep:
    """One key frame of a shot: where chains start, the same on every worker that needs it.

    The shot's first key frame is fresh; a later one (``flow`` set) starts from the previous key
    frame carried over by the composite optical flow between them, so that chains growing from
    different key frames carry the same texture where they meet.
    """

    frame: np.ndarray  # the key frame's content
    ahead: Sequence[np.ndarray]  # the frames after it in time, which settle it
    flow: np.ndarray | None = None  # on this frame's grid into the previous key frame
    mask: np.ndarray | None = None  # where that flow is reliable


def key_frame(stylizer: Stylizer, steps: Sequence[KeyStep], styles: Sequence[np.ndarray],
              style_weights: Sequence[float], config: Config, mode: str = "flow",
              callback: Callable[[StylizeResult], None] | None = None) -> np.ndarray:
    """The stylized key frame of ``steps[-1]``, computed through the key frames before it."""
    video = config.video
    if mode != "flow":  # carrying a key frame over needs the flow; without it each key is fresh
        steps = steps[-1:]
    stylized: np.ndarray | None = None
    for step in steps:
        frame = np.asarray(step.frame, np.float32)
        if step.flow is None or stylized is None:
            result = stylizer.stylize(frame, styles, style_weights, init="content",
                                      iterations=video.first_frame_iterations, multiscale=True)
        else:
            warped = warp(stylized, step.flow)
            mask = np.asarray(step.mask, np.float32)
            init = mask[..., None] * warped + (1.0 - mask[..., None]) * frame
            result = stylizer.stylize(frame, styles, style_weights, init=init.astype(np.float32),
                                      temporal=TemporalTarget(warped, mask), temporal_weight=video.temporal_weight,
                                      iterations=video.first_frame_iterations, multiscale=False)
        if callback is not None:
            callback(result)
        stylized = settle(stylizer, frame, result.image, list(step.ahead)[:video.settle_frames], styles,
                          style_weights, config, mode, callback=callback)
    return stylized


def stylize_sequence(stylizer: Stylizer, frames: Sequence[np.ndarray], styles: Sequence[np.ndarray],
                     style_weights: Sequence[float], config: Config, mode: str = "flow",
                     previous_stylized: np.ndarray | None = None, previous_content: np.ndarray | None = None,
                     callback: Callable[[int, StylizeResult], None] | None = None,
                     first_stylized: np.ndarray | None = None) -> list[np.ndarray]:
    """Stylizes consecutive frames of ONE shot (no cut detection here).

    With ``previous_stylized``/``previous_content`` (the frame before ``frames[0]``, e.g. the end of
    the previous segment), frame 0 is warm-started from them as a later frame. With
    ``first_stylized`` (a key frame computed by ``key_frame``), that is frame 0's result. Otherwise
    frame 0 is fresh and settled through ``frames[1:]``.
    """
    if mode not in MODES:
        raise NstError(f"--temporal {mode!r}: expected one of {', '.join(MODES)}")
    if first_stylized is None and previous_stylized is None and len(frames) and mode != "off":
        ahead = [np.asarray(f, np.float32) for f in frames[1:1 + config.video.settle_frames]]
        first_stylized = key_frame(stylizer, [KeyStep(frames[0], ahead)], styles, style_weights, config, mode,
                                   callback=None if callback is None else (lambda r: callback(0, r)))
    out: list[np.ndarray] = []
    prev_s, prev_c = previous_stylized, previous_content
    # Flows and masks of the frames ahead are computed on a thread while this one optimises.
    chain = [] if previous_content is None else [previous_content]
    motions = BackgroundIterator(with_motion([*chain, *frames]) if mode == "flow" else
                                 ((np.asarray(f, np.float32), None) for f in [*chain, *frames]), maxsize=4,
                                 name="flow-ahead")
    stream = iter(motions)
    try:
        if chain:
            next(stream)
        for index, (frame, motion) in enumerate(stream):
            if index == 0 and first_stylized is not None:
                image = np.asarray(first_stylized, np.float32)
            else:
                result, _plan = stylize_frame(stylizer, frame, styles, style_weights, config, mode, prev_s, prev_c,
                                              motion)
                image = result.image
                if callback is not None:
                    callback(index, result)
            out.append(image)
            prev_s, prev_c = image, frame
    finally:
        motions.close()
    return out


class LookAhead:
    """An iterator whose next items can be looked at without being consumed."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = iter(items)
        self.buffer: deque[Any] = deque()

    def __iter__(self) -> LookAhead:
        return self

    def __next__(self) -> Any:
        return self.buffer.popleft() if self.buffer else next(self.items)

    def peek_while(self, count: int, keep: Callable[[Any], bool]) -> list[Any]:
        """Up to ``count`` next items, stopping before the first that ``keep`` refuses."""
        while len(self.buffer) < count:
            try:
                self.buffer.append(next(self.items))
            except StopIteration:
                break
        out = []
        for item in list(self.buffer)[:count]:
            if not keep(item):
                break
            out.append(item)
        return out


def output_paths(source: Path, out_dir: Path) -> tuple[Path, Path]:
    """(video, frames folder): output/CLIP.stylized.mp4 and output/CLIP.frames/."""
    stem = Path(source).stem
    return out_dir / f"{stem}.stylized.mp4", out_dir / f"{stem}.frames"


class FrameBar:
    """Frames done, seconds per frame and ETA (or nothing when quiet)."""

    def __init__(self, label: str, total: int, quiet: bool) -> None:
        self.progress: Progress | None = None
        if not quiet:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("frames"), TextColumn("{task.fields[spf]:.2f} s/frame"),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     console=console)
            self.task = self.progress.add_task(label, total=total, spf=0.0)
        self.start = time.perf_counter()
        self.done = 0

    def __enter__(self) -> FrameBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self) -> None:
        self.done += 1
        if self.progress is not None:
            spf = (time.perf_counter() - self.start) / self.done
            self.progress.update(self.task, completed=self.done, spf=spf)


def process_video(path: Path, styles: Sequence[Path], style_weights: Sequence[float] | None, config: Config,
                  out_dir: Path, overwrite: bool = False, quiet: bool = False, save_frames: bool = False) -> Path:
    """`nst video` in this process: decode -> cuts -> stylize (chain per shot) -> encode with audio."""
    path = Path(path)
    out_path, frames_dir = output_paths(path, Path(out_dir))
    if out_path.exists() and not overwrite:
        raise NstError(f"{out_path} exists (use --overwrite to replace it)")
    weights = check_style_weights(styles, style_weights)
    info = probe(path)
    wh = working_size(info.width, info.height, config.image.size)
    if min(wh) < MIN_SIDE:
        raise VideoError(path, f"too small: {info.width}x{info.height} becomes {wh[0]}x{wh[1]} at --size "
                               f"{config.image.size}; VGG needs at least {MIN_SIDE} px on the short side")
    style_arrays = load_styles(styles, config.image.max_pixels)
    mode = config.video.temporal
    stylizer = Stylizer(config)
    save_frames = save_frames or config.video.save_frames
    if save_frames:
        frames_dir.mkdir(parents=True, exist_ok=True)
    detector = CutDetector(config.video.cut_threshold, config.video.min_shot_frames)
    shots = 0
    decoded = 0
    sink = BackgroundSink(lambda items: encode_video(items, out_path, info.fps,
                                                     path if info.has_audio else None, config.video.crf))
    # The decoding thread also computes each frame's flow from the one before (used unless a cut
    # falls between them), so the optimisation never waits for either.
    decoded_frames = read_frames(path, config.image.size)
    source = BackgroundIterator(with_motion(decoded_frames) if mode == "flow" else
                                ((f, None) for f in decoded_frames))
    prev_s: np.ndarray | None = None
    prev_c: np.ndarray | None = None
    # (frame, its motion, starts a shot)
    frames = LookAhead((frame, motion, detector.push(frame)) for frame, motion in source)
    try:
        with FrameBar(path.name, info.frame_count, quiet) as bar:
            for frame, motion, shot_start in frames:
                decoded += 1
                if shot_start:
                    shots += 1
                    prev_s = prev_c = None  # never warp across a cut
                result, plan = stylize_frame(stylizer, frame, style_arrays, weights, config, mode, prev_s, prev_c,
                                             motion)
                log.debug("frame %d: %s, %d evaluations, %.1f s", decoded, "fresh" if plan.fresh else
                          f"warm ({plan.reliable:.0%} carried)", result.evaluations, result.seconds)
                image = result.image
                if plan.fresh and config.video.settle_frames:
                    ahead = [f for f, _, _ in frames.peek_while(config.video.settle_frames, lambda x: not x[2])]
                    image = settle(stylizer, frame, image, ahead, style_arrays, weights, config, mode)
                prev_s, prev_c = image, frame
                sink.put(image)
                if save_frames:
                    save_image(image, frames_dir / f"{decoded:06d}.png", "png")
                bar.advance()
        if decoded == 0:
            raise VideoError(path, "no frame could be decoded")
    except BaseException:
        source.close()
        sink.abort()
        raise
    sink.close()
    if decoded < info.frame_count:
        message = (f"{path}: decoding stopped after {decoded} of {info.frame_count} frames "
                   f"({info.frame_count - decoded} lost; the file may be truncated)")
        log.info(message)
        console.print(f"[yellow]warning[/yellow]: {message}", highlight=False)
    if not quiet:
        console.print(f"wrote {out_path} ({decoded} frames, {shots} shot{'s' if shots != 1 else ''}, "
                      f"{wh[0]}x{wh[1]} at {info.fps} fps{', audio copied' if info.has_audio else ''})",
                      highlight=False)
    return out_path
