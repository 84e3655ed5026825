"""The estimate of `nst run --dry-run`: the work from the files' headers, and its duration from
the ledger's earlier work under the same settings or from a short calibration."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.batch.discover import Item
from pipeline.batch.ledger import Ledger
from pipeline.batch.options import RunOptions
from pipeline.batch.planning import file_sha256
from pipeline.config import Config
from pipeline.errors import NstError

log = logging.getLogger(__name__)


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


def measure_work(items: Sequence[Item], cfg: Config, sizes: dict[str, tuple[int, int]] | None = None) -> Estimate:
    """Photo sizes from their headers (``sizes``: as discover read them) and frame counts from the
    container headers; nothing decoded."""
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
                known = (sizes or {}).get(item.id)
                hw = working_size(*(known or probe_image(item.source, cfg.image.max_pixels)), cfg.image.size)
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


def calibrate_in_child(cfg: Config) -> tuple[float, float]:
    """calibrate() in a child process: the driver never imports TensorFlow (its memory and start-up)."""
    code = "from pipeline.batch.estimate import calibration_child; calibration_child()"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(cfg.to_dict()), capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise NstError(f"the calibration for the estimate failed: {tail}")
    per_eval_px, fixed_px = json.loads(done.stdout.strip().splitlines()[-1])
    return float(per_eval_px), float(fixed_px)


def calibration_child() -> None:
    """The child's side: the config as JSON on stdin, [seconds per evaluation per pixel, fixed] on stdout."""
    from pipeline.config import from_dict

    print(json.dumps(list(calibrate(from_dict(json.load(sys.stdin))))))


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


def estimate(opts: RunOptions, items: Sequence[Item], ledger: Ledger | None, digest: str,
             sizes: dict[str, tuple[int, int]] | None = None) -> Estimate:
    cfg = opts.config
    work = measure_work(items, cfg, sizes)
    work.workers, where = estimate_workers(opts)
    per_photo, per_frame, photos_seen, frames_seen = ledger_rates(ledger, digest)
    need_photos, need_frames = work.photos > 0, work.frames > 0
    from_ledger = (not need_photos or per_photo is not None) and (not need_frames or per_frame is not None)
    if from_ledger:
        seconds = work.photos * (per_photo or 0.0) + work.frames * (per_frame or 0.0)
        work.source = (f"from the ledger: {photos_seen} photo(s) and {frames_seen} frame(s) done earlier with "
                       f"config {digest}")
    else:
        per_eval_px, fixed_px = calibrate_in_child(cfg)
        photo_s, video_s = model_seconds(work, cfg, per_eval_px, fixed_px)
        # What the ledger knows stands; the model fills in the rest.
        photo_s = work.photos * per_photo if per_photo is not None else photo_s
        video_s = work.frames * per_frame if per_frame is not None else video_s
        seconds = photo_s + video_s
        work.source = (f"from a calibration in a child process: {per_eval_px * 1e6 * 1e3:.2f} ms per evaluation "
                       f"per megapixel at {cfg.image.size} px, {cfg.optim.iterations}+{cfg.optim.coarse_iterations} "
                       f"evaluations per photo (no earlier run with config {digest} in the ledger)")
    work.seconds = seconds / max(1, work.workers)
    work.source += f"; {work.workers} worker(s) {where}"
    return work

