"""`nst video` in this process: one streaming chain, no PNG frames on disk unless asked."""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.batch.imagejob import check_style_weights, load_styles
from pipeline.batch.progress import console
from pipeline.config import Config
from pipeline.core.arrays import MIN_SIDE
from pipeline.core.chain import settle, stylize_frame
from pipeline.core.stylizer import Stylizer
from pipeline.core.temporal import with_motion
from pipeline.errors import NstError, VideoError
from pipeline.media.cuts import CutDetector
from pipeline.media.frames import BackgroundIterator, BackgroundSink, encode_video, probe, read_frames, working_size
from pipeline.media.images import save_image

log = logging.getLogger(__name__)


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
