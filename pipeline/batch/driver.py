"""The controller of `nst run`: discover -> ledger -> plan -> Ray workers -> driver writes -> report.

The driver is the only process that writes into the output folder, and it writes each result
atomically before the ledger calls it done; so a run killed at any moment leaves whole files,
and the same command resumes with only the unfinished work.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.atomic import atomic_target, write_bytes_atomic
from pipeline.batch.discover import Item, Plan, discover
from pipeline.batch.imagejob import check_style_weights, intermediate_path, load_styles
from pipeline.batch.ledger import DONE, FAILED, PENDING, DriverLock, Ledger, SegmentSpec, db_path, driver_active
from pipeline.batch.progress import console
from pipeline.batch.protocol import ChunkRequest, ChunkResult, ImageRequest, ImageResult, Task
from pipeline.batch.segments import (
    assembled_frames,
    auto_segment_frames,
    chain_previous,
    chunk_range,
    frames_dir,
    plan_segments,
    read_segment_frame,
    settle_stop,
    shot_keys,
    write_segment_frames,
)
from pipeline.config import Config
from pipeline.errors import InputError, NstError, VideoError
from pipeline.media.frames import CODEC_SUFFIX, VIDEO_EXTENSIONS
from pipeline.media.images import load_image

log = logging.getLogger(__name__)

Event = Callable[[str, dict], None]


@dataclass
class RunOptions:
    inputs: Sequence[Path]
    styles: Sequence[Path]
    out_dir: Path
    config: Config
    style_weights: Sequence[float] | None = None
    address: str | None = None
    workers: int | None = None  # None: config's run.workers (0 = automatic)
    gpus_per_worker: float | None = None
    threads_per_worker: int | None = None  # None: fitted to the cores (see scheduling.plan_workers)
    dry_run: bool = False
    overwrite: bool = False  # redo everything, also outputs that exist or are done
    quiet: bool = False
    worker_options: Sequence[dict] | None = None  # per-worker Ray options (e.g. custom resources)
    on_event: Event | None = None  # "submit" / "result" / "failure" notifications (tests, tools)
    executor: str = "ray"  # "ray" (nst run: local runtime or a cluster) | "local" (in this process, one worker)
    style_masks: Sequence[Path | None] | None = None  # one per style (None: the whole image)


@dataclass
class RunResult:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    refused: int = 0
    records: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    report: Path | None = None
    config_hash: str = ""
    replaced_workers: int = 0  # actors started in place of dead ones
    warnings: int = 0  # items done with something the user must know (e.g. frames lost to a damaged file)
    estimate: Estimate | None = None  # --dry-run: the work and its expected duration

    @property
    def exit_code(self) -> int:
        """0 all done, 1 something failed or was refused, 3 all done but with warnings."""
        return 1 if self.failed or self.refused else 3 if self.warnings else 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(config: Config, styles: Sequence[Path], weights: Sequence[float],
                masks: Sequence[Path | None] | None = None) -> str:
    """What decides whether an old result still stands: settings, style and mask contents, blend weights."""
    extra = [f"style:{file_sha256(Path(p))}" for p in styles] + [f"weight:{w!r}" for w in weights]
    extra += [f"mask:{file_sha256(Path(m)) if m else 'none'}" for m in masks or ()]
    if config.optim.init not in ("content", "noise") and Path(config.optim.init).is_file():
        extra.append(f"init:{file_sha256(Path(config.optim.init))}")
    return config.digest(*extra)


def _settings(opts: RunOptions, weights: Sequence[float], digest: str) -> dict:
    return {"config": opts.config.to_dict(), "styles": [str(p) for p in opts.styles], "style_weights": list(weights),
            "style_masks": [str(m) if m else None for m in opts.style_masks or []],
            "config_hash": digest, "inputs": [str(p) for p in opts.inputs]}


# ---------------------------------------------------------------- reconciliation with the ledger
@dataclass
class Decision:
    item: Item
    action: str  # "do" | "skip"
    reason: str = ""
    foreign: bool = False  # skipped because a file not made by nst is in the way


def decide(plan: Plan, ledger: Ledger | None, digest: str, overwrite: bool) -> list[Decision]:
    """Without touching anything: what a run would do with each item."""
    decisions = []
    for item in plan.items:
        row = ledger.item(item.id) if ledger is not None else None
        if overwrite:
            decisions.append(Decision(item, "do", "--overwrite"))
        elif row is not None and row["config_hash"] == digest and row["state"] == DONE and item.output.exists():
            decisions.append(Decision(item, "skip", "done in an earlier run with the same settings"))
        elif row is None and item.output.exists():
            decisions.append(Decision(item, "skip", f"{item.output} exists and is not from an nst run here "
                                                    f"(use --overwrite)", foreign=True))
        elif row is not None and row["config_hash"] != digest:
            decisions.append(Decision(item, "do", "settings or style changed since it was made"))
        else:
            decisions.append(Decision(item, "do", "failed before" if row is not None and row["state"] == FAILED
                                      else "resume" if row is not None else "new"))
    return decisions


# ---------------------------------------------------------------- identical photos
@dataclass
class Duplicates:
    """Photos of this run whose bytes another item already has, under the same settings.

    ``waiting``: computed item id -> the identical items that get a copy of its output.
    ``earlier``: items whose output is copied from one done in an earlier run (its ``items`` row).
    """

    compute: list[Item]
    waiting: dict[str, list[Item]] = field(default_factory=dict)
    earlier: list[tuple[Item, sqlite3.Row]] = field(default_factory=list)
    hash_seconds: float = 0.0


def reusable_output(row: sqlite3.Row) -> Path | None:
    """The done output of an earlier item, if it is still there as nst wrote it (not edited since)."""
    output = Path(row["output"])
    try:
        st = output.stat()
    except OSError:
        return None
    # Written atomically before the ledger called it done: a later mtime means someone changed it.
    return output if output.is_file() and st.st_mtime <= (row["finished_at"] or 0) + 1.0 else None


def plan_duplicates(todo: list[Item], ledger: Ledger, digest: str, reuse_done: bool) -> Duplicates:
    """Hashes the photos about to be stylized (SHA-256 of the bytes; videos are not hashed) and
    keeps one of each content for the workers; the ledger keeps every hash for later runs."""
    plan = Duplicates([])
    first: dict[str, Item] = {}
    todo_ids = {item.id for item in todo}
    started = time.perf_counter()
    for item in todo:
        if item.kind != "image":
            plan.compute.append(item)
            continue
        try:
            content = file_sha256(item.source)
        except OSError:  # the worker request reports the read error with the item
            plan.compute.append(item)
            continue
        ledger.set_content_hash(item.id, content)
        if content in first:
            plan.waiting.setdefault(first[content].id, []).append(item)
            continue
        if reuse_done:
            row = next((r for r in ledger.done_with_content(content, digest)
                        if r["id"] not in todo_ids and reusable_output(r) is not None), None)
            if row is not None:
                plan.earlier.append((item, row))
                continue
        first[content] = item
        plan.compute.append(item)
    plan.hash_seconds = time.perf_counter() - started
    return plan


def copy_output(source: Path, target: Path) -> None:
    """A copy, not a hard link: a user who edits one output in place must not change the others."""
    with atomic_target(target) as tmp:
        shutil.copyfile(source, tmp)


# ---------------------------------------------------------------- the estimate of --dry-run
@dataclass
class Estimate:
    photos: int = 0  # to stylize (identical copies not counted)
    copies: int = 0  # identical to another photo to do: copied, not computed
    megapixels: float = 0.0  # of the photos to stylize, at the working size
    photo_sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) at the working size
    videos: int = 0
    frames: int = 0  # as the containers announce them
    frame_sizes: list[tuple[int, tuple[int, int]]] = field(default_factory=list)  # (frames, (h, w)) per video
    workers: int = 1
    seconds: float | None = None
    source: str = ""


def working_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(h, w) the worker stylizes at: the longest side scaled to image.size (see imagejob)."""
    factor = size / max(width, height)
    return max(1, round(height * factor)), max(1, round(width * factor))


def measure_work(items: Sequence[Item], cfg: Config) -> Estimate:
    """Photo sizes from their headers and frame counts from the container headers; nothing decoded."""
    from pipeline.media.frames import probe
    from pipeline.media.images import probe_image

    work = Estimate()
    seen: set[str] = set()
    for item in items:
        try:
            if item.kind == "image":
                content = file_sha256(item.source)
                if content in seen:
                    work.copies += 1
                    continue
                seen.add(content)
                hw = working_size(*probe_image(item.source, cfg.image.max_pixels), cfg.image.size)
                work.photos += 1
                work.photo_sizes.append(hw)
                work.megapixels += hw[0] * hw[1] / 1e6
            else:
                info = probe(item.source)
                work.videos += 1
                work.frames += info.frame_count
                work.frame_sizes.append((info.frame_count, working_size(info.width, info.height, cfg.image.size)))
        except (NstError, OSError) as exc:  # the run reports it; the estimate leaves it out
            log.info("%s: left out of the estimate (%s)", item.source, exc)
    return work


def ledger_rates(ledger: Ledger | None, digest: str) -> tuple[float | None, float | None, int, int]:
    """Seconds per photo and per video frame on one worker, from earlier work under these settings,
    with the number of photos and frames they come from."""
    if ledger is None:
        return None, None, 0, 0
    photos = [r[0] for r in ledger.conn.execute(
        "SELECT seconds FROM items WHERE kind = 'image' AND state = 'done' AND config_hash = ? AND seconds > 0",
        (digest,))]  # copies of identical photos took 0 s and say nothing about the speed
    try:
        seconds, frames = ledger.conn.execute(
            "SELECT SUM(seconds), SUM(done_frames) FROM segments WHERE config_hash = ? AND seconds > 0",
            (digest,)).fetchone()
    except sqlite3.OperationalError:  # run state from a version without done_frames
        seconds, frames = None, None
    per_photo = sum(photos) / len(photos) if photos else None
    per_frame = seconds / frames if seconds and frames else None
    return per_photo, per_frame, len(photos), int(frames or 0)


CALIBRATION_EVALUATIONS = 4


def calibrate(cfg: Config) -> tuple[float, float]:
    """(seconds per evaluation per pixel, seconds of fixed cost per scale per pixel) in this process:
    a few evaluations on a synthetic image at the working size, after one untimed warm-up (tracing)."""
    from pipeline.batch.demo import swirl_painting
    from pipeline.core.stylizer import Stylizer

    side = cfg.image.size
    h, w = max(32, side * 3 // 4), side
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    content = np.stack([x / w * 255, y / h * 255, 128 + 100 * np.sin(x / 9) * np.cos(y / 7)], -1)
    style = swirl_painting(min(256, side))
    stylizer = Stylizer(cfg)
    stylizer.stylize(content, [style], iterations=1, multiscale=False)
    started = time.perf_counter()
    result = stylizer.stylize(content, [style], iterations=CALIBRATION_EVALUATIONS, multiscale=False)
    wall = time.perf_counter() - started
    evaluations = max(1, result.evaluations)
    optimising = min(result.seconds, wall)
    return optimising / evaluations / (h * w), (wall - optimising) / (h * w)


def model_seconds(work: Estimate, cfg: Config, per_eval_px: float, fixed_px: float) -> tuple[float, float]:
    """(seconds for the photos, seconds for the video frames) on one worker from the calibration."""
    from pipeline.core.arrays import scale_sizes

    photos = 0.0
    for h, w in work.photo_sizes:
        sizes = scale_sizes(h, w, cfg.image.scales, cfg.image.min_scale_size)
        for i, (sh, sw) in enumerate(sizes):
            evaluations = cfg.optim.iterations if i == len(sizes) - 1 else cfg.optim.coarse_iterations
            photos += (evaluations * per_eval_px + fixed_px) * sh * sw
    video = 0.0
    for frames, (h, w) in work.frame_sizes:
        # Later frames start from the warped previous result; a shot's first frame gets the full count.
        evaluations = cfg.video.later_frame_iterations * max(0, frames - 1) + cfg.video.first_frame_iterations
        video += (evaluations * per_eval_px + fixed_px * frames) * h * w
    return photos, video


def estimate_workers(opts: RunOptions) -> tuple[int, str]:
    """How many workers the run would get, without starting Ray: this machine's cores unless told."""
    if opts.executor == "local":
        return 1, "in this process"
    from pipeline.batch.ray_executor import plan_workers

    workers = opts.config.run.workers if opts.workers is None else opts.workers
    if workers:
        return workers, "as asked"
    plan = plan_workers({"CPU": float(os.cpu_count() or 1)}, 0, 0.0)
    where = "on a cluster, counted here from this machine's cores" if opts.address else "from this machine's cores"
    return plan.count, where


def estimate(opts: RunOptions, items: Sequence[Item], ledger: Ledger | None, digest: str) -> Estimate:
    cfg = opts.config
    work = measure_work(items, cfg)
    work.workers, where = estimate_workers(opts)
    per_photo, per_frame, photos_seen, frames_seen = ledger_rates(ledger, digest)
    need_photos, need_frames = work.photos > 0, work.frames > 0
    from_ledger = (not need_photos or per_photo is not None) and (not need_frames or per_frame is not None)
    if from_ledger:
        seconds = work.photos * (per_photo or 0.0) + work.frames * (per_frame or 0.0)
        work.source = (f"from the ledger: {photos_seen} photo(s) and {frames_seen} frame(s) done earlier with "
                       f"config {digest}")
    else:
        per_eval_px, fixed_px = calibrate(cfg)
        photo_s, video_s = model_seconds(work, cfg, per_eval_px, fixed_px)
        # What the ledger knows stands; the model fills in the rest.
        photo_s = work.photos * per_photo if per_photo is not None else photo_s
        video_s = work.frames * per_frame if per_frame is not None else video_s
        seconds = photo_s + video_s
        work.source = (f"from a calibration in this process: {per_eval_px * 1e6 * 1e3:.2f} ms per evaluation "
                       f"per megapixel at {cfg.image.size} px, {cfg.optim.iterations}+{cfg.optim.coarse_iterations} "
                       f"evaluations per photo (no earlier run with config {digest} in the ledger)")
    work.seconds = seconds / max(1, work.workers)
    work.source += f"; {work.workers} worker(s) {where}"
    return work


# ---------------------------------------------------------------- videos
@dataclass
class VideoState:
    item: Item
    specs: list[SegmentSpec]
    fps: object
    has_audio: bool
    done: set[int] = field(default_factory=set)
    seconds: float = 0.0
    flows: dict = field(default_factory=dict)  # (key, next key) -> composite flow and mask
    progress: dict[int, int] = field(default_factory=dict)  # unfinished segment -> frames already on disk
    cursors: dict = field(default_factory=dict)  # forward segment -> FrameCursor serving its chunks


def prepare_video(item: Item, ledger: Ledger, cfg: Config, digest: str, workers: int) -> VideoState:
    """Probes the video and plans its segments once (cut detection); a resumed run reuses the plan."""
    from pipeline.media.cuts import CutDetector
    from pipeline.media.frames import probe, read_frames

    info = probe(item.source)
    specs = ledger.segment_specs(item.id)
    if not specs:
        detector = CutDetector(cfg.video.cut_threshold, cfg.video.min_shot_frames)
        starts, count = [], 0
        for index, frame in enumerate(read_frames(item.source, 160)):  # cuts are judged on small frames
            if detector.push(frame):
                starts.append(index)
            count += 1
        if count == 0:
            raise InputError(item.source, "no frame could be decoded")
        if count < info.frame_count:
            warning = (f"{count} of {info.frame_count} frames decoded, {info.frame_count - count} lost "
                       f"(the file is damaged or was cut short)")
            ledger.set_warning(item.id, warning)
            console.print(f"[yellow]warning[/yellow] {item.source}: {warning}", highlight=False)
        elif count != info.frame_count:
            log.info("%s: the container says %d frames, %d decode; using %d", item.source, info.frame_count,
                     count, count)
        overlap = cfg.video.segment_overlap
        length = cfg.video.segment_frames or auto_segment_frames(count, workers, overlap)
        specs = plan_segments(count, starts, length, overlap)
        ledger.set_segments(item.id, specs, digest)
        log.info("%s: %d frames, %d shot(s), %d segment(s)", item.id, count, len(starts), len(specs))
    rows = ledger.segments(item.id)
    done = {r["idx"] for r in rows if r["state"] == DONE}
    seconds = sum(r["seconds"] or 0.0 for r in rows)
    progress = {r["idx"]: r["done_frames"] for r in rows if r["state"] != DONE}
    return VideoState(item, specs, info.fps, info.has_audio, done, seconds, progress=progress)


def finish_video(state: VideoState, out_dir: Path, cfg: Config) -> None:
    """All segments are on disk: cross-fade the overlaps, encode atomically, drop the frames."""
    from pipeline.media.frames import encode_video

    # The source's frame times (variable frame rate kept), audio, subtitle tracks and chapters.
    encode_video(assembled_frames(out_dir, state.item.id, state.specs), state.item.output, state.fps,
                 state.item.source if state.has_audio else None, crf=cfg.video.crf, codec=cfg.video.codec,
                 source=state.item.source)


def drop_frames(state: VideoState, out_dir: Path, cfg: Config) -> None:
    """Segment frames go only after the ledger says done: a kill before that re-encodes from them."""
    if not cfg.video.save_frames:
        shutil.rmtree(frames_dir(out_dir, state.item.id), ignore_errors=True)


def read_range(item: Item, start: int, stop: int, size: int) -> list[np.ndarray]:
    return list(iter_range(item, start, stop, size))


def iter_range(item: Item, start: int, stop: int, size: int,
               frames: Iterable[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Frames [start, stop) as uint8 at the working size (decoded here unless ``frames`` brings
    them); a frame that does not decode is an error."""
    from pipeline.media.frames import read_frames

    count = 0
    for frame in read_frames(item.source, size, start, stop) if frames is None else frames:
        count += 1
        yield frame.astype(np.uint8)
    if count != stop - start:
        raise InputError(item.source, f"only {count} of frames {start}-{stop - 1} decode")


COMPOSITE_FLOW_SIDE = 256  # px: ~6 ms per frame step on one core, whatever the working size


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
        frames = read_range(state.item, key, settle_stop(key, state.specs, cfg.video.settle_frames), size)
        flow = mask = None
        if i > 0:
            if (keys[i - 1], key) not in state.flows:
                frames_between = iter_range(state.item, keys[i - 1], key + 1, size)
                state.flows[keys[i - 1], key] = composite_flow(frames_between, max_side=COMPOSITE_FLOW_SIDE)
            flow, mask = state.flows[keys[i - 1], key]
        steps.append(KeyStep(frames[0], frames[1:], flow, mask))
    return steps


# ---------------------------------------------------------------- the run
def _progress(quiet: bool) -> Progress | None:
    if quiet:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        console.print(message, highlight=False)


def run(opts: RunOptions) -> RunResult:
    """Every command's one path: discover -> ledger -> plan -> executor -> atomic writes -> report."""
    cfg = opts.config
    out_dir = Path(opts.out_dir)
    weights = check_style_weights(opts.styles, opts.style_weights)
    for style in opts.styles:
        if not Path(style).is_file():
            raise InputError(style, "style image not found")
    masks = list(opts.style_masks or [])
    for mask in masks:
        if mask and not Path(mask).is_file():
            raise InputError(mask, "style mask not found")
    if masks and len(masks) != len(opts.styles):
        raise NstError(f"{len(masks)} --style-mask values for {len(opts.styles)} --style images; give one per style "
                       f"(none for a style that covers the whole image)")
    digest = config_hash(cfg, opts.styles, weights, masks)
    plan = discover(opts.inputs, out_dir, cfg.image.format, max_pixels=cfg.image.max_pixels,
                    video_suffix=CODEC_SUFFIX[cfg.video.codec])
    result = RunResult(config_hash=digest, refused=len(plan.refused))
    started = time.time()
    if not plan.items and plan.refused and not opts.dry_run:
        # Nothing can be done: say why in one line per input and start nothing (no ledger, no report).
        if len(plan.refused) == 1:
            refusal = plan.refused[0]
            error = VideoError if refusal.source.suffix.lower() in VIDEO_EXTENSIONS else InputError
            raise error(refusal.source, refusal.reason)
        for refusal in plan.refused:
            console.print(f"[red]error[/red]: {refusal.source}: {refusal.reason}", highlight=False)
        return result

    if opts.dry_run:
        ledger = Ledger(out_dir, readonly=True) if db_path(out_dir).is_file() else None
        try:
            decisions = decide(plan, ledger, digest, opts.overwrite)
            for d in decisions:
                console.print(f"{'would do' if d.action == 'do' else 'skip':8s}  {d.item.kind:5s}  {d.item.source} -> "
                              f"{d.item.output}  ({d.reason})", highlight=False)
                result.done += d.action == "do"
                result.skipped += d.action == "skip"
            todo = [d.item for d in decisions if d.action == "do"]
            if todo:
                result.estimate = estimate(opts, todo, ledger, digest)
        finally:
            if ledger is not None:
                ledger.close()
        for refusal in plan.refused:
            console.print(f"refuse    {refusal.source}: {refusal.reason}", highlight=False)
        console.print(f"{result.done} to do, {result.skipped} to skip, {result.refused} refused "
                      f"(config {digest})", highlight=False)
        work = result.estimate
        if work is not None:
            console.print(f"work: {work.photos} photo(s), {work.megapixels:.2f} MP at {cfg.image.size} px"
                          + (f", {work.copies} identical cop(ies) copied" if work.copies else "")
                          + f"; {work.videos} video(s), {work.frames} frame(s)", highlight=False)
            console.print(f"estimate: about {_duration(work.seconds or 0.0)} ({work.source})", highlight=False)
        return result

    style_arrays = load_styles(opts.styles, cfg.image.max_pixels)
    from pipeline.media.images import load_mask

    mask_arrays = [load_mask(m, cfg.image.max_pixels) if m else None for m in masks] or None
    init = None
    if cfg.optim.init not in ("content", "noise"):
        init = load_image(Path(cfg.optim.init), cfg.image.max_pixels).rgb
    for refusal in plan.refused:  # one line each, even with --quiet: the user has to act on it
        console.print(f"[red]error[/red]: {refusal.source}: {refusal.reason}", highlight=False)

    lock = DriverLock(out_dir)
    lock.acquire()
    ledger = Ledger(out_dir)
    ledger.recover_stale()  # a killed driver's running rows: pending again
    run_id = ledger.start_run(digest, _settings(opts, weights, digest))
    decisions = decide(plan, ledger, digest, opts.overwrite)
    todo: list[Item] = []
    skipped: dict[str, str] = {}
    for d in decisions:
        if d.action == "skip":
            skipped[d.item.id] = d.reason
            if d.foreign:  # a file nst did not make: the user decides, so say it every time
                _say(opts.quiet, f"[yellow]skip[/yellow] {d.item.source}: {d.reason}")
            continue
        ledger.upsert_item(d.item.id, d.item.kind, d.item.source, d.item.output, digest, force=opts.overwrite
                           or (ledger.item(d.item.id) is not None and ledger.item(d.item.id)["state"] == DONE))
        todo.append(d.item)
    result.skipped = len(skipped)
    done_now: set[str] = set()
    notes: dict[str, str] = {}
    same = plan_duplicates(todo, ledger, digest, reuse_done=not opts.overwrite)
    log.info("content hashes of %d photo(s) in %.3f s", sum(i.kind == "image" for i in todo), same.hash_seconds)
    todo = same.compute
    for item, row in same.earlier:
        try:
            copy_output(Path(row["output"]), item.output)
        except OSError as exc:
            log.info("cannot copy %s to %s (%s); stylizing it", row["output"], item.output, exc)
            todo.append(item)
            continue
        ledger.mark_duplicate(item.id, row["id"])
        done_now.add(item.id)
        _say(opts.quiet, f"wrote {item.output} (identical to {row['id']}, done earlier: copied)")
    ray_started = False
    pool = None
    status = "interrupted"
    try:
        if todo and opts.executor == "local":
            from pipeline.batch.local_executor import InProcessPool

            ledger.set_run_workers(run_id, 1)
            _say(opts.quiet, f"{len(todo)} to do, {len(skipped)} already done or present, "
                             f"{len(plan.refused)} refused")
            pool = InProcessPool(cfg, style_arrays, weights, init, masks=mask_arrays)
            result.workers = pool.start()
            _run_items(opts, ledger, run_id, digest, todo, pool, 1, done_now, notes, same.waiting)
        elif todo:
            import ray

            from pipeline.batch.ray_executor import WorkerPool, plan_workers
            from pipeline.batch.runtime import start_ray

            ray_started = start_ray(opts.address, quiet=opts.quiet)
            workers = cfg.run.workers if opts.workers is None else opts.workers
            gpus = cfg.run.gpus_per_worker if opts.gpus_per_worker is None else opts.gpus_per_worker
            worker_plan = plan_workers(ray.cluster_resources(), workers, gpus)
            if opts.threads_per_worker:
                worker_plan = dataclasses.replace(worker_plan, threads=opts.threads_per_worker,
                                                  num_cpus=min(worker_plan.num_cpus, float(opts.threads_per_worker)))
            ledger.set_run_workers(run_id, worker_plan.count)
            _say(opts.quiet, f"{len(todo)} to do, {len(skipped)} already done or present, "
                             f"{len(plan.refused)} refused; {worker_plan.reason}")
            pool = WorkerPool(cfg, worker_plan, style_arrays, weights, init, opts.worker_options, masks=mask_arrays)
            result.workers = pool.start(timeout=900)
            _run_items(opts, ledger, run_id, digest, todo, pool, worker_plan.count, done_now, notes, same.waiting)
        status = "finished"
    finally:
        if pool is not None:
            result.replaced_workers = pool.replacements
            pool.shutdown()
        if ray_started:
            from pipeline.batch.runtime import stop_ray

            stop_ray(ray_started)
        if status != "finished":
            ledger.recover_stale()  # what was running is simply pending for the next run
        ledger.finish_run(run_id, status)
        records = _records(plan, ledger, skipped, done_now, notes)
        ledger.close()
        lock.release()
    result.records = records
    result.done = sum(r["state"] == "done" for r in records)
    result.failed = sum(r["state"] == "failed" for r in records)
    result.warnings = sum(bool(r.get("warning")) for r in records if r["state"] in ("done", "skipped"))
    from pipeline.batch.report import write_report

    _, result.report = write_report(out_dir, records, _settings(opts, weights, digest), started, time.time())
    _say(opts.quiet, f"{result.done} done, {result.skipped} skipped, {result.failed} failed, "
                     f"{result.refused} refused" + (f", {result.warnings} with warnings" if result.warnings else "")
                     + f"; report: {result.report}")
    return result


def _run_items(opts: RunOptions, ledger: Ledger, run_id: int, digest: str, todo: list[Item], pool: object,
               worker_count: int, done_now: set[str], notes: dict[str, str] | None = None,
               waiting: dict[str, list[Item]] | None = None) -> None:
    notes = notes if notes is not None else {}
    waiting = waiting if waiting is not None else {}
    cfg = opts.config
    out_dir = Path(opts.out_dir)
    emit = opts.on_event or (lambda kind, data: None)
    tasks = []
    videos: dict[str, VideoState] = {}
    failed_items: set[str] = set()

    def fail_item(item: Item, reason: str) -> None:
        failed_items.add(item.id)
        ledger.mark_failed(item.id, reason)
        console.print(f"[red]failed[/red] {item.source}: {reason}", highlight=False)  # even with --quiet
        emit("failure", {"item": item.id, "reason": reason})
        for copy in waiting.pop(item.id, []):
            fail_item(copy, f"identical to {item.source}, which failed: {reason}")

    def write_copies(item: Item, res: ImageResult) -> None:
        """The identical photos get the computed result too, each written atomically."""
        for copy in waiting.pop(item.id, []):
            try:
                for iteration, data in res.intermediates:
                    write_bytes_atomic(intermediate_path(copy.output, iteration), data)
                write_bytes_atomic(copy.output, res.data)
            except OSError as exc:
                fail_item(copy, f"cannot write {copy.output} ({exc.strerror or exc})")
                continue
            ledger.mark_duplicate(copy.id, item.id)
            done_now.add(copy.id)
            if res.note:
                notes[copy.id] = res.note
            emit("duplicate", {"item": copy.id, "of": item.id})
            _say(opts.quiet, f"wrote {copy.output} (identical to {item.id}: copied)")

    encodes = VideoEncodes(opts, ledger, done_now, fail_item)

    for item in todo:
        ledger.mark_running(item.id, run_id)
        if item.kind == "image":
            def request(item: Item = item) -> ImageRequest:
                try:
                    data = item.source.read_bytes()
                except OSError as exc:
                    raise InputError(item.source, f"cannot be read ({exc.strerror or exc})") from exc
                return ImageRequest(item.id, item.source.name, data, item.output.suffix)

            tasks.append(Task(("image", item.id), request, str(item.source), extra={"item": item}))
            continue
        try:
            state = prepare_video(item, ledger, cfg, digest, worker_count)
        except NstError as exc:
            fail_item(item, getattr(exc, "reason", None) or exc.message)
            continue
        videos[item.id] = state
        if len(state.done) == len(state.specs):  # every segment survived the last run: only encode
            encodes.start(state)
            continue
        for spec in state.specs:
            if spec.idx not in state.done:
                tasks.append(chunk_task(state, spec, state.progress.get(spec.idx, 0), cfg, out_dir))

    chunk = cfg.video.chunk_frames
    total = sum(1 for t in tasks if "spec" not in t.extra) + sum(
        -(-(t.extra["spec"].stop - t.extra["spec"].start - t.extra["done"]) // chunk) for t in tasks if "spec" in t.extra)
    progress = _progress(opts.quiet)
    bar = progress.add_task("stylizing", total=total) if progress else None

    def advance() -> None:
        if progress is not None:
            progress.advance(bar)

    def on_submit(task: object, slot: object) -> None:
        item: Item = task.extra["item"]
        if "spec" in task.extra:
            ledger.mark_segment_attempt(item.id, task.extra["spec"].idx, slot.name, slot.info["node"], task.attempts)
        else:
            ledger.mark_attempt(item.id, slot.name, slot.info["node"])
        emit("submit", {"key": task.key, "item": item.id, "worker": slot.name, "pid": slot.info["pid"],
                        "node": slot.info["node"], "attempt": task.attempts})

    def on_result(task: Task, res: ImageResult | ChunkResult) -> None:
        item: Item = task.extra["item"]
        who = res.worker
        advance()
        encodes.collect()
        emit("result", {"key": task.key, "item": item.id, "worker": who.name, "pid": who.pid,
                        "seconds": res.seconds, "optim_seconds": res.optim_seconds})
        if isinstance(res, ImageResult):
            try:
                for iteration, data in res.intermediates:  # --save-every: beside the output, sorted
                    write_bytes_atomic(intermediate_path(item.output, iteration), data)
                write_bytes_atomic(item.output, res.data)  # the driver writes; workers need no shared disk
            except OSError as exc:  # full disk, quota, read-only folder: this item fails, the run goes on
                copies = waiting.pop(item.id, [])
                fail_item(item, f"cannot write {item.output} ({exc.strerror or exc})")
                if copies:  # the result is in memory: the identical photos may still land elsewhere
                    waiting[item.id] = copies
                    write_copies(item, res)
                return
            ledger.mark_done(item.id, who.name, who.node, res.seconds, who.pid)
            done_now.add(item.id)
            if res.note:
                notes[item.id] = res.note  # e.g. "first frame of an animated GIF", for the report
            _say(opts.quiet, f"wrote {item.output} ({res.seconds:.1f} s on {who.name} @ {who.node})")
            write_copies(item, res)
            return
        spec: SegmentSpec = task.extra["spec"]
        state = videos[item.id]
        # Kept even when another segment of the video failed: a rerun redoes only what is missing.
        try:
            write_segment_frames(out_dir, item.id, spec, list(res.frames), task.extra["lo"])
        except OSError as exc:
            ledger.mark_segment_failed(item.id, spec.idx, f"cannot write its frames ({exc.strerror or exc})")
            if item.id not in failed_items:
                fail_item(item, f"cannot write frames under {frames_dir(out_dir, item.id)} ({exc.strerror or exc})")
            return
        done = task.extra["done"] + len(res.frames)
        if done < spec.stop - spec.start:  # the chain goes on from the frame just written
            ledger.mark_segment_progress(item.id, spec.idx, done, res.seconds)
            state.seconds += res.seconds
            pool.push(chunk_task(state, spec, done, cfg, out_dir))
            return
        ledger.mark_segment_done(item.id, spec.idx, who.name, who.node, res.seconds, who.pid)
        cursor = state.cursors.pop(spec.idx, None)
        if cursor is not None:
            cursor.close()
        state.done.add(spec.idx)
        state.seconds += res.seconds
        if len(state.done) == len(state.specs) and item.id not in failed_items:
            encodes.start(state)

    def on_failure(task: object, reason: str) -> None:
        item: Item = task.extra["item"]
        advance()
        if "spec" in task.extra:
            ledger.mark_segment_failed(item.id, task.extra["spec"].idx, reason)
        if item.id not in failed_items:
            fail_item(item, reason)

    def on_retry(task: object, reason: str) -> None:
        item: Item = task.extra["item"]
        if "spec" in task.extra:
            ledger.mark_segment_pending(item.id, task.extra["spec"].idx, reason)
        else:
            ledger.mark_pending(item.id, reason)
        _say(opts.quiet, f"[yellow]retrying[/yellow] {task.label}: {reason}")

    if progress is not None:
        progress.start()
    try:
        pool.run(tasks, on_submit, on_result, on_failure, on_retry, max_attempts=cfg.run.max_attempts,
                 max_in_flight=cfg.run.max_in_flight, on_idle=encodes.collect)
        encodes.collect(wait=True)
    finally:
        encodes.close()
        if progress is not None:
            progress.stop()


def chunk_task(state: VideoState, spec: SegmentSpec, done: int, cfg: Config, out_dir: Path) -> Task:
    """The worker call for the next chunk of a segment's chain, after its first ``done`` frames.

    The first chunk starts at the key frame (``key_steps``); a later one continues from the frame
    before it in chain order, read back from the segment's frames on disk with its source frame.
    """
    item = state.item
    lo, hi = chunk_range(spec, done, cfg.video.chunk_frames)

    def read(first: int, stop: int) -> list[np.ndarray]:
        if spec.reverse:  # each chunk lies before the last one: decoded from the file's start
            return read_range(item, first, stop, cfg.image.size)
        from pipeline.media.frames import FrameCursor

        # consecutive ranges, each starting with the previous one's last frame: one open decoder
        cursor = state.cursors.setdefault(spec.idx, FrameCursor(item.source, cfg.image.size))
        return list(iter_range(item, first, stop, cfg.image.size, cursor.read(first, stop)))

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
        except (OSError, ValueError) as exc:
            raise NstError(f"{item.source}: frame {previous_index} of segment {spec.idx} is missing or damaged "
                           f"in {frames_dir(out_dir, item.id)} ({exc}); rerun with --force to redo the video") from exc
        previous = (np.clip(np.rint(stylized), 0, 255).astype(np.uint8), frames[previous_index - first])
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
                 fail_item: Callable[[Item, str], None]) -> None:
        self.opts, self.ledger, self.done_now, self.fail_item = opts, ledger, done_now, fail_item
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
                                           f"rerun with --force to redo it")
                continue
            self.ledger.mark_done(state.item.id, None, None, state.seconds)
            drop_frames(state, Path(self.opts.out_dir), self.opts.config)
            self.done_now.add(state.item.id)
            _say(self.opts.quiet, f"wrote {state.item.output} ({len(state.specs)} segment(s), "
                                  f"{state.seconds:.1f} s of work)")

    def close(self) -> None:
        # After an interruption an encode may still be writing its temporary file; the output
        # appears whole or not at all, and the next run encodes again from the kept frames.
        self.executor.shutdown(wait=False, cancel_futures=True)


def _records(plan: Plan, ledger: Ledger, skipped: dict[str, str], done_now: set[str],
             notes: dict[str, str] | None = None) -> list[dict]:
    records = []
    for item in plan.items:
        row = ledger.item(item.id)
        base = {"id": item.id, "kind": item.kind, "source": str(item.source), "output": str(item.output),
                "reason": "", "seconds": None, "worker": None, "node": None,
                "warning": (row["warning"] if row is not None else None) or "",
                "duplicate_of": row["duplicate_of"] if row is not None and "duplicate_of" in row.keys() else None}  # noqa: SIM118
        if item.id in skipped:
            records.append({**base, "state": "skipped", "reason": skipped[item.id],
                            "seconds": row["seconds"] if row is not None else None})
            continue
        if row is None:
            continue
        state = {DONE: "done", FAILED: "failed"}.get(row["state"], "failed")
        reason = row["error"] or ("" if state == "done" else f"left {row['state']}")
        done_reason = (notes or {}).get(item.id, "")
        records.append({**base, "state": state, "reason": reason if state != "done" else done_reason,
                        "seconds": row["seconds"], "worker": row["worker"], "node": row["node"]})
    for refusal in plan.refused:
        records.append({"id": str(refusal.source), "kind": "", "source": str(refusal.source), "output": "",
                        "state": "refused", "reason": refusal.reason, "seconds": None, "worker": None, "node": None})
    return records


# ---------------------------------------------------------------- status and info
def status_lines(out_dir: Path) -> tuple[list[str], int]:
    """What `nst status` prints, from the ledger alone; the int is the number of failed items."""
    out_dir = Path(out_dir)
    with Ledger(out_dir, readonly=True) as ledger:
        counts = ledger.counts()
        segs = ledger.segment_counts()
        active = driver_active(out_dir)
        last = ledger.last_run()
        rows = ledger.items()
        seg_rows = ledger.conn.execute("SELECT * FROM segments").fetchall()
    lines = []
    if last is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started"]))
        lines.append(f"last run: started {when}, config {last['config_hash']}, "
                     f"{last['workers'] or '?'} worker(s), {'RUNNING now' if active else last['status']}")
    running = counts["running"] if active else 0
    stale = counts["running"] - running
    remaining = counts[PENDING] + counts["running"]
    lines.append(f"items: {counts[DONE]} done, {running} running, {counts[FAILED]} failed, {remaining} remaining"
                 + (f" ({stale} interrupted, redone on the next run)" if stale else ""))
    if sum(segs.values()):
        frames_total = sum(r["stop"] - r["start"] for r in seg_rows)
        frames_done = sum(_segment_frames_done(r) for r in seg_rows)
        lines.append(f"video segments: {segs[DONE]} done, {segs['running'] if active else 0} running, "
                     f"{segs[FAILED]} failed, {segs[PENDING] + segs['running']} remaining; "
                     f"{frames_done} of {frames_total} segment frames done")
    if active:
        for row in rows:
            if row["state"] == "running" and row["kind"] == "image":
                lines.append(f"  running  {row['id']} on {row['worker']} @ {row['node']}")
    for row in rows:
        if row["state"] == FAILED:
            lines.append(f"  failed   {row['id']}: {row['error']}")
    for row in rows:
        if row["warning"]:
            lines.append(f"  warning  {row['id']}: {row['warning']}")
    eta = _eta(rows, seg_rows, (last["workers"] if last is not None else 0) or 1)
    if remaining and eta is not None:
        lines.append(f"ETA: about {_duration(eta)} of work left at {(last['workers'] if last else 1) or 1} worker(s)"
                     + ("" if active else " (no run in progress: rerun the same command to resume)"))
    elif remaining:
        lines.append("ETA: unknown until something finishes" + ("" if active else "; no run in progress"))
    return lines, counts[FAILED]


def _segment_frames_done(row: sqlite3.Row) -> int:
    if row["state"] == DONE:
        return row["stop"] - row["start"]
    return row["done_frames"] if "done_frames" in row.keys() else 0  # noqa: SIM118 - column names


def _eta(rows: list, seg_rows: list, workers: int) -> float | None:
    """Seconds of work left: images at the mean time per image, video at the mean time per frame
    (segments report every finished chunk, so this is known long before a segment ends)."""
    image_times = [r["seconds"] for r in rows if r["kind"] == "image" and r["state"] == DONE and r["seconds"]]
    images_left = sum(1 for r in rows if r["kind"] == "image" and r["state"] in (PENDING, "running"))
    frames_done = sum(_segment_frames_done(r) for r in seg_rows)
    frames_left = sum(r["stop"] - r["start"] - _segment_frames_done(r) for r in seg_rows if r["state"] != FAILED)
    video_seconds = sum(r["seconds"] or 0.0 for r in seg_rows)
    work = 0.0
    if images_left:
        if not image_times:
            return None
        work += images_left * float(np.mean(image_times))
    if frames_left:
        if not frames_done or not video_seconds:
            return None
        work += frames_left * video_seconds / frames_done
    return work / max(1, workers)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def info_lines(address: str | None = None) -> list[str]:
    """Devices as Ray and TensorFlow see them, on every node (a tiny local runtime if none is given)."""
    import ray

    from pipeline.batch.runtime import start_ray, stop_ray

    started = start_ray(address)  # all cores declared, so the worker plan below is what `nst run` would do
    try:
        lines = [f"Ray {ray.__version__}: {'embedded local runtime, dashboard off' if started else 'cluster'}"]
        total = ray.cluster_resources()
        lines.append("cluster resources: " + ", ".join(f"{k}={v:g}" for k, v in sorted(total.items())
                                                       if not k.startswith("node:") and k != "object_store_memory"
                                                       and k != "memory")
                     + f", memory={total.get('memory', 0) / 1e9:.1f} GB")

        @ray.remote(num_cpus=0)
        def probe_node() -> dict:
            from pipeline.core.tfsetup import tf

            return {"host": os.uname().nodename, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "tf": tf.__version__,
                    "devices": [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]}

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            res = node.get("Resources", {})
            gpus = res.get("GPU", 0)
            ref = probe_node.options(num_gpus=gpus, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False)).remote()
            seen = ray.get(ref, timeout=300)
            lines.append(f"node {node['NodeManagerAddress']} ({seen['host']}, {node['NodeID'][:8]}): "
                         f"CPU={res.get('CPU', 0):g} GPU={gpus:g}")
            lines.append(f"  TensorFlow {seen['tf']} sees: {', '.join(seen['devices']) or 'nothing'}")
            lines.append(f"  CUDA_VISIBLE_DEVICES={seen['cuda_visible_devices']!s} ray.get_gpu_ids()={seen['gpu_ids']}")
        from pipeline.batch.ray_executor import plan_workers

        lines.append(f"nst run would start: {plan_workers(total).reason}")
        return lines
    finally:
        stop_ray(started)
