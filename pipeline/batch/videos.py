"""Videos in a run: segment plans, the chunk tasks of each segment's chain, and the encode of a
finished video on a background thread."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.batch.discover import Item
from pipeline.batch.ledger import DONE, Ledger, SegmentSpec, state_dir
from pipeline.batch.options import RunOptions
from pipeline.batch.progress import console, say
from pipeline.batch.protocol import ChunkRequest, Task
from pipeline.batch.segments import (
    assembled_frames,
    auto_segment_frames,
    chain_previous,
    chunk_range,
    frame_count,
    frames_dir,
    painted_anchor,
    plan_segments,
    planned_dissolves,
    read_segment_frame,
    settle_stop,
    shot_keys,
)
from pipeline.config import Config

if TYPE_CHECKING:
    from pipeline.media.frames import FrameTimes
from pipeline.errors import InputError, NstError

log = logging.getLogger(__name__)


GLANCE_SIDE = 160  # px: frames judged rather than painted (cuts, bars, light): 7 ms a 4K frame


@dataclass
class VideoState:
    item: Item
    specs: list[SegmentSpec]
    fps: object
    has_audio: bool
    done: set[int] = field(default_factory=set)
    seconds: float = 0.0
    held: int = 0  # frames delivered as the painting of the frame before (repeats), counted at the encode
    flows: dict = field(default_factory=dict)  # (key, next key) -> composite flow and mask
    progress: dict[int, int] = field(default_factory=dict)  # unfinished segment -> frames already on disk
    cursors: dict = field(default_factory=dict)  # forward segment -> FrameCursor serving its chunks
    display: tuple[int, int] | None = None  # the source's (w, h) as shown: image.keep_resolution delivers that
    times: FrameTimes | bool | None = None  # measured once a read far into the source needed them; False: unusable
    # Only the picture inside black bars is painted (style masks are drawn on the whole frame: then all of it).
    picture_only: bool = True


def prepare_video(item: Item, ledger: Ledger, cfg: Config, digest: str, workers: int,
                  picture_only: bool = True) -> VideoState:
    """Probes the video and plans its segments once (cut detection); a resumed run reuses the plan.
    ``picture_only``: paint the picture inside the video's black bars alone."""
    from pipeline.media.cuts import CutDetector, DissolveFinder
    from pipeline.media.frames import frame_layout, lit_bars, probe, read_frames

    info = probe(item.source)
    specs = ledger.segment_specs(item.id)
    # Bars are found on frames sampled over the clip; every frame is checked here, at a glance,
    # so a subtitle or a wider part the samples missed is not painted over black.
    layout = frame_layout(item.source, GLANCE_SIDE, least_side=1) if picture_only else None
    lit = 0
    if not specs:
        detector = CutDetector(cfg.video.cut_threshold, cfg.video.min_shot_frames)
        # Frames painted apart ("off") have no chain to carry one shot's strokes into the next.
        dissolves = DissolveFinder(info.fps) if cfg.video.dissolves and cfg.video.temporal != "off" else None
        starts, count, damage = [], 0, []
        for index, frame in enumerate(read_frames(item.source, GLANCE_SIDE, problems=damage, glance=True)):
            if layout is not None:
                lit += lit_bars(frame, layout)
                x, y, w, h = layout.box
                frame = frame[y:y + h, x:x + w]  # cuts are judged on the picture
            cut = detector.push(frame)
            if cut:
                starts.append(index)
            if dissolves is not None:
                dissolves.push(frame, cut)
            count += 1
        if count == 0:
            raise InputError(item.source, "no frame could be decoded")
        # Fewer frames than announced from an intact file (an edit list, a packed AVI) is no loss.
        if damage and info.frames_missing(count):
            about = "" if info.frame_count_exact else "about "  # the container states a duration, not a count
            warning = (f"{count} of {about}{info.frame_count} frames decoded, {about}{info.frame_count - count} lost "
                       f"(the file is damaged or was cut short)")
            ledger.set_warning(item.id, warning)
            console.print(f"[yellow]warning[/yellow] {item.source}: {warning}", highlight=False)
        elif count != info.frame_count:
            log.info("%s: the container says %d frames, %d decode; using %d", item.source, info.frame_count,
                     count, count)
        if damage:
            log.info("%s: the decoder reports damaged data: %s", item.source, damage[0])
        overlap = cfg.video.segment_overlap
        length = cfg.video.segment_frames or auto_segment_frames(count, workers, overlap)
        spans = dissolves.spans() if dissolves is not None else []
        specs = plan_segments(count, starts, length, overlap, spans)
        ledger.set_segments(item.id, specs, digest)
        log.info("%s: %d frames, %d shot(s), %d dissolve(s) %s, %d segment(s)", item.id, count, len(starts),
                 len(planned_dissolves(specs)), spans, len(specs))
    elif layout is not None:  # resumed: judged again, as the frames kept were painted
        lit = sum(lit_bars(frame, layout) for frame in read_frames(item.source, GLANCE_SIDE, glance=True))
    if lit:
        log.info("%s: something shows in its black bars in %d frame(s); the whole frame is painted", item.id, lit)
        picture_only = False
    rows = ledger.segments(item.id)
    done = {r["idx"] for r in rows if r["state"] == DONE}
    seconds = sum(r["seconds"] or 0.0 for r in rows)
    progress = {r["idx"]: r["done_frames"] for r in rows if r["state"] != DONE}
    state = VideoState(item, specs, info.fps, info.has_audio, done, seconds, progress=progress,
                       display=(info.width, info.height), picture_only=picture_only)
    if progress or done:
        check_kept_frames(state, ledger, cfg, digest)
    return state


def check_kept_frames(state: VideoState, ledger: Ledger, cfg: Config, digest: str) -> None:
    """Frames kept from an earlier run must have the shape this run paints (the picture inside the
    bars, judged afresh): were the bars judged otherwise then, the video is painted again."""
    from pipeline.media.frames import painted_size

    spec = next((s for s in state.specs if s.idx in state.done or state.progress.get(s.idx)), None)
    if spec is None or state.display is None:
        return
    try:
        kept = read_segment_frame(Path(ledger.out_dir), state.item.id, spec, spec.stop - 1 if spec.reverse
                                  else spec.start)
    except (OSError, ValueError):
        return  # a frame missing or damaged on disk is reported where it is read
    expected = painted_size(state.item.source, cfg.image.size, state.picture_only)
    if expected is not None and (kept.shape[1], kept.shape[0]) != tuple(expected):
        log.warning("%s: the frames kept are %dx%d, this run paints %dx%d; painting it again", state.item.id,
                    kept.shape[1], kept.shape[0], *expected)
        ledger.set_segments(state.item.id, state.specs, digest)
        shutil.rmtree(frames_dir(Path(ledger.out_dir), state.item.id), ignore_errors=True)
        state.done.clear()
        state.progress.clear()
        state.seconds = 0.0


def painted_layout(state: VideoState, cfg: Config):
    """Where the painted picture goes in the delivered frame, when it was painted inside bars."""
    from pipeline.media.frames import frame_layout

    return frame_layout(state.item.source, cfg.image.size) if state.picture_only else None


# Painted frames wait on disk as PNG until their video is encoded: 2.1-2.4 bytes a pixel measured on
# stylized frames at 192-320 px (brush texture compresses poorly); the margin covers the encode.
FRAME_BYTES_PER_PIXEL = 2.6


def frame_bytes(frames: int, w: int, h: int) -> int:
    """Bytes ``frames`` painted frames of w x h take on disk until their video is encoded."""
    return int(frames * w * h * FRAME_BYTES_PER_PIXEL)


def free_space(out_dir: Path) -> tuple[Path, int]:
    """The nearest existing folder at or above the output's state folder, and the bytes free there."""
    folder = next((p for p in (state_dir(out_dir), *state_dir(out_dir).absolute().parents) if p.is_dir()),
                  Path(out_dir))
    return folder, shutil.disk_usage(folder).free


def frames_to_keep(state: VideoState, cfg: Config) -> int:
    """Bytes the video's frames still to be painted will take on disk until its encode."""
    from pipeline.media.frames import working_size

    if state.display is None:
        return 0
    w, h = working_size(*state.display, cfg.image.size)
    remaining = sum(spec.stop - spec.start - state.progress.get(spec.idx, 0)
                    for spec in state.specs if spec.idx not in state.done)
    return frame_bytes(remaining, w, h)


def disk_warning(states: Iterable[VideoState], out_dir: Path, cfg: Config) -> str | None:
    """A warning when the videos' painted frames may not fit on the output's disk: a long video at
    the default size keeps tens of gigabytes there until it is encoded, and a disk that fills at
    hour ten stops the run (what is done stays; freeing space and rerunning finishes it)."""
    needs = [need for need in (frames_to_keep(state, cfg) for state in states) if need]
    need = sum(needs)
    try:
        _, free = free_space(out_dir)
    except OSError:
        return None
    if need <= free:
        return None
    return (f"the painted frames of {len(needs)} video(s) need up to {byte_text(need)} on disk until each is "
            f"encoded, and {byte_text(free)} are free under {out_dir}: when the disk fills the run stops; "
            f"what is done stays, so free some space and rerun the same command to finish")


def byte_text(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def finish_video(state: VideoState, out_dir: Path, cfg: Config) -> None:
    """All segments are on disk: cross-fade the overlaps, encode atomically, drop the frames."""
    import cv2

    from pipeline.core.arrays import resize
    from pipeline.media.frames import delivered_size, encode_video, in_bars

    repeats: list[int] = []
    frames = assembled_frames(out_dir, state.item.id, state.specs, repeats)
    if cfg.video.follow_fades and cfg.image.preserve_colors == "off":
        frames = faded_frames(frames, state)
    layout = painted_layout(state, cfg)
    if layout is not None:  # the picture was painted without its black bars: they go back around it
        frames = (in_bars(frame, layout) for frame in frames)
    if cfg.image.keep_resolution and state.display is not None:
        w, h = delivered_size(*state.display)
        # Lanczos keeps the strokes' edges sharp, as for photos; one frame at a time on its way in.
        frames = (resize(frame, (h, w), enlarge=cv2.INTER_LANCZOS4) for frame in frames)
    # The source's frame times (variable frame rate kept), audio, subtitle tracks and chapters.
    encode_video(frames, state.item.output, state.fps,
                 state.item.source if state.has_audio else None, crf=cfg.video.crf, codec=cfg.video.codec,
                 source=state.item.source)
    # Counted only when held: frames painted apart from identical sources come out identical too.
    state.held = len(repeats) if cfg.video.hold_frames and cfg.video.temporal != "off" else 0


def content_levels(item: Item, count: int, picture_only: bool = True) -> np.ndarray:
    """The mean grey level [0, 255] of each of the source's first ``count`` frames (NaN past the
    frames that decode), inside any black bars with ``picture_only``."""
    import cv2

    from pipeline.media.frames import read_frames

    levels = np.full(count, np.nan)
    for index, frame in enumerate(read_frames(item.source, GLANCE_SIDE, stop=count, glance=True,
                                                          picture_only=picture_only)):
        levels[index] = float(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).mean())
    return levels


def faded_frames(frames: Iterable[np.ndarray], state: VideoState) -> Iterator[np.ndarray]:
    """The painted frames taken towards black or white where the content fades (``fade_gains``)."""
    from pipeline.core.temporal import fade_gains, follow_fade

    levels = content_levels(state.item, frame_count(state.specs), state.picture_only)
    gains = fade_gains(levels, {s.shot_start for s in state.specs}, planned_dissolves(state.specs))
    followed = int((gains < 1.0).any(axis=1).sum())
    if followed:
        log.info("%s: %d frame(s) of fades taken towards black or white", state.item.id, followed)
    for frame, gain in zip(frames, gains, strict=True):
        yield follow_fade(frame, gain)


def drop_frames(state: VideoState, out_dir: Path, cfg: Config) -> None:
    """Segment frames go only after the ledger says done: a kill before that re-encodes from them."""
    if not cfg.video.save_frames:
        shutil.rmtree(frames_dir(out_dir, state.item.id), ignore_errors=True)


def source_times(state: VideoState, start: int) -> FrameTimes | None:
    """The source's frame times when a read starting at ``start`` should seek to it: measured once
    per video (a decoding pass without pixel conversion, about a tenth of decoding through), so the
    reads of backward chains and later key frames, far into a long video, do not each decode every
    frame before them."""
    from pipeline.media.frames import SEEK_AFTER_FRAMES, FrameTimes, frame_times

    if start < SEEK_AFTER_FRAMES:
        return None
    if state.times is None:
        state.times = frame_times(state.item.source) or False
    return state.times if isinstance(state.times, FrameTimes) else None


def read_range(state: VideoState, start: int, stop: int, size: int,
               times: FrameTimes | None = None) -> list[np.ndarray]:
    return list(iter_range(state, start, stop, size, times=times))


def iter_range(state: VideoState, start: int, stop: int, size: int, frames: Iterable[np.ndarray] | None = None,
               times: FrameTimes | None = None) -> Iterator[np.ndarray]:
    """Frames [start, stop) as uint8 at the working size, the picture inside any black bars (decoded
    here unless ``frames`` brings them; ``times``: the source's FrameTimes, to seek there); a frame
    that does not decode is an error."""
    from pipeline.media.frames import read_frames

    item = state.item
    count = 0
    if frames is None:
        frames = read_frames(item.source, size, start, stop, times=times, picture_only=state.picture_only)
    for frame in frames:
        count += 1
        yield frame.astype(np.uint8)
    if count != stop - start:
        raise InputError(item.source, f"only {count} of frames {start}-{stop - 1} decode")


COMPOSITE_FLOW_SIDE = 256  # px: ~24 ms per frame step on one core (full-resolution DIS), whatever the working size


def key_steps(state: VideoState, spec: SegmentSpec, cfg: Config) -> list:
    """What a worker needs to compute the segment's key frame exactly as every segment sharing it.

    The shot's key frames up to the segment's own: each with the frames that settle it and, for
    all but the first (with ``video.chain_keys``), the composite flow from the previous one. The
    driver computes the flows once per video and keeps them for the other segments.
    """
    from pipeline.core.temporal import KeyStep, composite_flow

    size = cfg.image.size
    keys = shot_keys(spec, state.specs)
    if not (cfg.video.chain_keys and cfg.video.temporal == "flow"):
        keys = keys[-1:]
    steps = []
    for i, key in enumerate(keys):
        frames = read_range(state, key, settle_stop(key, state.specs, cfg.video.settle_frames), size,
                            times=source_times(state, key))
        flow = mask = None
        if i > 0:
            if (keys[i - 1], key) not in state.flows:
                frames_between = iter_range(state, keys[i - 1], key + 1, size,
                                            times=source_times(state, keys[i - 1]))
                state.flows[keys[i - 1], key] = composite_flow(frames_between, max_side=COMPOSITE_FLOW_SIDE)
            flow, mask = state.flows[keys[i - 1], key]
        steps.append(KeyStep(frames[0], frames[1:], flow, mask))
    return steps


def chunk_task(state: VideoState, spec: SegmentSpec, done: int, cfg: Config, out_dir: Path) -> Task:
    """The worker call for the next chunk of a segment's chain, after its first ``done`` frames.

    The first chunk starts at the key frame (``key_steps``); a later one continues from the frame
    before it in chain order, read back from the segment's frames on disk with its source frame.
    """
    item = state.item
    lo, hi = chunk_range(spec, done, cfg.video.chunk_frames)

    def read(first: int, stop: int) -> list[np.ndarray]:
        if spec.reverse:  # each chunk lies before the last one: sought afresh
            return read_range(state, first, stop, cfg.image.size, times=source_times(state, first))
        from pipeline.media.frames import FrameCursor

        # consecutive ranges, each starting with the previous one's last frame: one open decoder
        cursor = state.cursors.setdefault(spec.idx, FrameCursor(item.source, cfg.image.size,
                                                                source_times(state, first),
                                                                picture_only=state.picture_only))
        return list(iter_range(state, first, stop, cfg.image.size, cursor.read(first, stop)))

    def request() -> ChunkRequest:
        previous_index = chain_previous(spec, lo, hi)
        if previous_index is None:
            frames = np.stack(read(lo, hi))
            return ChunkRequest(item.id, spec.idx, frames, cfg.video.temporal, spec.reverse,
                                tuple(key_steps(state, spec, cfg)), None)
        first, stop = min(lo, previous_index), max(hi, previous_index + 1)
        frames = read(first, stop)
        try:
            stylized = read_segment_frame(out_dir, item.id, spec, previous_index)
            # A held repeat carries the painting of the frame before it: the chain goes on from that
            # frame's content, as it would have without the chunk's boundary.
            anchor = painted_anchor(out_dir, item.id, spec, previous_index)
        except (OSError, ValueError) as exc:
            raise NstError(f"{item.source}: frame {previous_index} of segment {spec.idx} is missing or damaged "
                           f"in {frames_dir(out_dir, item.id)} ({exc}); rerun with --overwrite to redo the video") from exc
        content = (frames[previous_index - first] if anchor == previous_index else
                   read_range(state, anchor, anchor + 1, cfg.image.size, times=source_times(state, anchor))[0])
        previous = (np.clip(np.rint(stylized), 0, 255).astype(np.uint8), content)
        own = np.stack(frames[lo - first:hi - first])
        return ChunkRequest(item.id, spec.idx, own, cfg.video.temporal, spec.reverse, None, previous)

    return Task(("segment", item.id, spec.idx, lo), request, f"{item.source} frames {lo}-{hi - 1}",
                extra={"item": item, "spec": spec, "lo": lo, "hi": hi, "done": done})


class VideoEncodes:
    """Encodes finished videos on a background thread, so the driver keeps feeding the workers.

    Only the encoding runs there; the ledger (one SQLite connection, the driver's thread) is
    updated by ``collect`` when an encode has finished.
    """

    def __init__(self, opts: RunOptions, ledger: Ledger, done_now: set[str],
                 fail_item: Callable[[Item, str], None],
                 on_done: Callable[[VideoState], None] | None = None) -> None:
        self.opts, self.ledger, self.done_now, self.fail_item = opts, ledger, done_now, fail_item
        self.on_done = on_done
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self.running: list[tuple[VideoState, Future]] = []

    def start(self, state: VideoState) -> None:
        self.running.append((state, self.executor.submit(finish_video, state, Path(self.opts.out_dir),
                                                         self.opts.config)))

    def collect(self, wait: bool = False) -> None:
        for state, future in list(self.running):
            if not wait and not future.done():
                continue
            self.running.remove((state, future))
            try:
                future.result()
            except NstError as exc:
                self.fail_item(state.item, exc.message)
                continue
            except (OSError, ValueError) as exc:  # e.g. a segment frame missing or damaged on disk
                self.fail_item(state.item, f"cannot assemble the video from its segment frames ({exc}); "
                                           f"rerun with --overwrite to redo it")
                continue
            self.ledger.mark_done(state.item.id, None, None, state.seconds)
            self.ledger.flush()  # committed before its frames go: a rerun must not need them
            drop_frames(state, Path(self.opts.out_dir), self.opts.config)
            self.done_now.add(state.item.id)
            if self.on_done is not None:
                self.on_done(state)
            held = f"{state.held} repeated frame(s) held, " if state.held else ""
            dissolves = len(planned_dissolves(state.specs))
            faded = f"{dissolves} dissolve(s) painted as such, " if dissolves else ""
            say(self.opts.quiet, f"wrote {state.item.output} ({len(state.specs)} segment(s), {faded}{held}"
                                  f"{state.seconds:.1f} s of work)")

    def close(self) -> None:
        # After an interruption an encode may still be writing its temporary file; the output
        # appears whole or not at all, and the next run encodes again from the kept frames.
        self.executor.shutdown(wait=False, cancel_futures=True)

