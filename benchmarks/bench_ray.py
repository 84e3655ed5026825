"""Ray scaling and overhead of `nst run`, measured in one process on one local runtime; prints numbers.

    .venv/bin/python benchmarks/bench_ray.py [--iterations 20] [--skip-video]

1. 8 photos at 256 px: 2 workers (1 thread each) vs 1 worker (all cores). Target >= 1.7x.
2. one 48-frame clip: segment-parallel over 2 workers vs 1 worker. Target >= 1.6x, and the
   warping error at the seam no worse than 1.5x the clip's average.
3. 20 photos: fraction of the busy window not spent inside the optimisation. Target < 10%.
Times run from the first task sent to the last result back (Ray start-up and VGG loading are
printed separately: they are paid once per run, not per item).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "images"
PHOTOS = ["tubingen.jpg", "golden_gate.jpg", "hoovertowernight.jpg", "shipwreck.jpg", "the_scream.jpg",
          "woman-with-hat-matisse.jpg"]


class Timeline:
    """Collects the driver's submit/result events: busy window and the optimiser's own seconds."""

    def __init__(self) -> None:
        self.first_submit: float | None = None
        self.last_result = 0.0
        self.optim = 0.0
        self.work = 0.0

    def __call__(self, kind: str, data: dict) -> None:
        now = time.perf_counter()
        if kind == "submit" and self.first_submit is None:
            self.first_submit = now
        if kind == "result":
            self.last_result = now
            self.optim += data["optim_seconds"]
            self.work += data["seconds"]

    @property
    def window(self) -> float:
        return self.last_result - (self.first_submit or self.last_result)


def make_photos(folder: Path, count: int, size: int) -> list[Path]:
    from PIL import Image

    sources = [SHARED / name for name in PHOTOS if (SHARED / name).is_file()]
    if not sources:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            if i >= len(sources):  # distinct content for repeats
                image = image.transpose(Image.FLIP_LEFT_RIGHT if (i // len(sources)) % 2 else Image.FLIP_TOP_BOTTOM)
            path = folder / f"photo{i:02d}.png"
            image.save(path)
            paths.append(path)
    return paths


def make_clip(path: Path, frames: int, size: int) -> Path:
    """A slow pan across a real photo (no cuts), encoded with ffmpeg."""
    from PIL import Image

    from pipeline.media.frames import encode_video

    with Image.open(SHARED / "tubingen.jpg") as image:
        image = image.convert("RGB")
        image.thumbnail((size * 2, size * 2))
        big = np.asarray(image, np.float32)
    h, w = int(size * 0.5625) // 2 * 2, size
    shots = [big[:h, t * 2:t * 2 + w] for t in range(frames)]
    return encode_video(shots, path, Fraction(24), None)


def seam_report(out_dir: Path, clip: Path, source: list, label: str) -> None:
    """Warping error of each pair of consecutive output frames; the pairs where segments meet."""
    from pipeline.batch.ledger import Ledger
    from pipeline.batch.segments import frame_weights, read_segment_frame
    from pipeline.core.metrics import pair_warping_error
    from pipeline.media.frames import read_frames

    with Ledger(out_dir, readonly=True) as ledger:
        specs = ledger.segment_specs(clip.name)
    out = list(read_frames(out_dir / clip.name, 192))
    errors = [pair_warping_error(source[t], source[t + 1], out[t], out[t + 1]) for t in range(len(out) - 1)]
    mean = float(np.mean(errors))
    # pairs of consecutive frames that touch a frame shared by two segments, or change segment
    owners = [tuple(sorted(spec.idx for spec, _ in frame_weights(t, specs))) for t in range(len(out))]
    seam_pairs = [t for t in range(len(out) - 1) if owners[t] != owners[t + 1] or len(owners[t]) > 1]
    print(f"  {label}: segments {[(s.start, s.stop, 'backward' if s.reverse else 'forward') for s in specs]}; "
          f"warping error: clip mean {mean:.5f}, worst pair {max(errors):.5f} (pair {int(np.argmax(errors))})")
    for t in [t for t in range(len(out)) if len(owners[t]) > 1]:  # key frames and cross-fades
        shared = [read_segment_frame(out_dir, clip.name, spec, t) for spec, _ in frame_weights(t, specs)]
        print(f"    frame {t} computed by segments {owners[t]}: mean |difference| "
              f"{float(np.abs(shared[0] - shared[1]).mean()):.3f} grey levels")
    if seam_pairs:
        seam = max(errors[t] for t in seam_pairs)
        print(f"    seam pairs {seam_pairs}: worst {seam:.5f} = {seam / mean:.2f}x the clip mean (target <= 1.5x): "
              f"{'met' if seam <= 1.5 * mean else 'MISSED'}")


def timed_run(inputs: list[Path], style: Path, out: Path, cfg, workers: int,
              threads: int | None = None):
    from pipeline.batch.driver import RunOptions, run

    timeline = Timeline()
    started = time.perf_counter()
    result = run(RunOptions(inputs, [style], out, cfg, workers=workers, gpus_per_worker=0, quiet=True,
                            threads_per_worker=threads, on_event=timeline))
    total = time.perf_counter() - started
    if result.exit_code:
        raise SystemExit(f"run failed: {[r for r in result.records if r['state'] != 'done']}")
    return timeline, total, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=20, help="L-BFGS iterations per photo (single scale)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--only", choices=("images", "video", "overhead"), help="run one part only")
    parser.add_argument("--overlap", type=int, default=12, help="video.segment_overlap for (2)")
    parser.add_argument("--seam-only", action="store_true", help="in (2), only the 2-worker run and its seam")
    parser.add_argument("--pieces", type=int, default=3,
                        help="in (2), also cut the clip into this many segments (> 2: a cross-fade seam)")
    parser.add_argument("--one-thread-baseline", action="store_true",
                        help="in (1), the single worker also gets one thread (scaling per worker, not per machine)")
    args = parser.parse_args()
    if not (SHARED / "starry_night.jpg").is_file():
        print(f"skipped: {SHARED} not present")
        return 0
    import ray

    from pipeline import config as config_mod
    from pipeline.batch.runtime import start_ray

    style = SHARED / "starry_night.jpg"
    ray_start = time.perf_counter()
    start_ray(None)
    print(f"Ray start: {time.perf_counter() - ray_start:.1f} s; resources {ray.cluster_resources().get('CPU')} CPU")
    cfg = config_mod.load(overrides={"image.size": args.size, "optim.iterations": args.iterations,
                                     "image.scales": [1.0], "optim.tolerance": 0.0})
    with tempfile.TemporaryDirectory(prefix="nst-bench-") as tmp:
        tmp_path = Path(tmp)
        photos = make_photos(tmp_path / "photos8", 8, args.size)
        if args.only in (None, "images"):
            print(f"\n(1) 8 photos at {args.size} px, {args.iterations} L-BFGS iterations each, single scale")
        windows = {}
        for workers in (1, 2) if args.only in (None, "images") else ():
            timeline, total, result = timed_run([tmp_path / "photos8"], style, tmp_path / f"out8-{workers}", cfg,
                                                workers, 1 if args.one_thread_baseline else None)
            windows[workers] = timeline.window
            threads = result.workers[0]["intra_op_threads"]
            print(f"  {workers} worker(s) x {threads} thread(s): {timeline.window:.1f} s busy "
                  f"({len(photos) / timeline.window * 3600:.0f} images/h), {total:.1f} s with start-up")
        if windows:
            ratio = windows[1] / windows[2]
            print(f"  speed-up 2 vs 1 worker: {ratio:.2f}x (target >= 1.7x): {'met' if ratio >= 1.7 else 'MISSED'}")

        if not args.skip_video and args.only in (None, "video"):
            from pipeline.media.frames import read_frames

            vcfg = cfg.replace(**{"image.size": 192, "video.first_frame_iterations": 20,
                                  "video.later_frame_iterations": 8, "video.cut_threshold": 0.9,
                                  "video.segment_overlap": args.overlap, "video.save_frames": True})
            clip = make_clip(tmp_path / "clip" / "pan.mp4", 48, 192)
            print("\n(2) one 48-frame clip at 192 px, flow mode, 20 first-frame / 8 later-frame iterations, "
                  f"overlap {args.overlap}")
            vwin = {}
            for workers in (2,) if args.seam_only else (1, 2):
                timeline, total, _ = timed_run([clip], style, tmp_path / f"outv-{workers}", vcfg, workers)
                vwin[workers] = timeline.window
                print(f"  {workers} worker(s): {timeline.window:.1f} s busy (to the last segment) "
                      f"({48 / timeline.window * 3600:.0f} frames/h), {total:.1f} s with start-up")
            vratio = vwin.get(1, float("nan")) / vwin[2]
            print(f"  speed-up 2 vs 1 worker: {vratio:.2f}x (target >= 1.6x): {'met' if vratio >= 1.6 else 'MISSED'}")
            source = list(read_frames(clip, 192))
            if 1 in vwin:
                seam_report(tmp_path / "outv-1", clip, source, "1 worker (one chain)")
            seam_report(tmp_path / "outv-2", clip, source, "2 workers")
            if args.pieces > 2:  # a forward chain meeting a backward one: the cross-fade
                for chain_keys in (True, False):
                    pcfg = vcfg.replace(**{"video.segment_frames": 48 // args.pieces,
                                           "video.chain_keys": chain_keys})
                    folder = tmp_path / f"outv-p-{chain_keys}"
                    timeline, _, _ = timed_run([clip], style, folder, pcfg, 2)
                    how = "later key carried from the first" if chain_keys else "every key fresh"
                    print(f"  {args.pieces} segments on 2 workers, {how}: {timeline.window:.1f} s busy")
                    seam_report(folder, clip, source, f"{args.pieces} segments, {how}")

        if args.only not in (None, "overhead"):
            ray.shutdown()
            return 0
        make_photos(tmp_path / "photos20", 20, args.size)
        ocfg = cfg.replace(**{"optim.iterations": max(5, args.iterations // 2)})
        print(f"\n(3) 20 photos at {args.size} px, {ocfg.optim.iterations} iterations, 2 workers")
        timeline, total, result = timed_run([tmp_path / "photos20"], style, tmp_path / "out20", ocfg, 2)
        workers = len(result.workers)
        busy = timeline.window * workers
        overhead = 1 - timeline.optim / busy
        outside = 1 - timeline.work / busy
        load = max(w["load_seconds"] for w in result.workers)
        print(f"  busy window {timeline.window:.1f} s x {workers} workers; inside the optimisation "
              f"{timeline.optim:.1f} s -> overhead {overhead * 100:.1f}% (target < 10%): "
              f"{'met' if overhead < 0.10 else 'MISSED'}")
        print(f"  of which outside the worker call (transfer, driver writes, queueing): {outside * 100:.1f}%; "
              f"whole command {total:.1f} s incl. worker start-up (VGG load {load:.1f} s)")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
