"""Photo-archive throughput and memory; prints numbers (not part of the test suite).

    .venv/bin/python benchmarks/bench_archive.py [--count 4] [--size 384] [--skip-speed] [--skip-memory]
    .venv/bin/python benchmarks/bench_archive.py --estimate --count 6 --size 128

1. Images per hour at --size with the default settings (configs/default.toml: L-BFGS, 200 final
   + 100 coarse iterations, scales [0.5, 1.0]), one process, one Stylizer, photos from
   shared/data/images stylized with starry_night.jpg through discover() and stylize_file(),
   i.e. including decoding, resizing and the atomic write. Skips when the images are absent.
2. Peak resident memory (ru_maxrss of a child process) for a generated 6000x4000 (24 MP) JPEG at
   the default working size, with and without image.keep_resolution, against a 640x427 photo as
   the baseline (TensorFlow and VGG-19 alone). The children run few iterations: memory does not
   grow with the iteration count, only time does.
3. With --estimate: `nst run --dry-run`'s estimate (calibrated in the process) against the real
   duration of the same run, then the estimate from the ledger that run left.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "images"
CONTENTS = ["tubingen.jpg", "golden_gate.jpg", "hoovertowernight.jpg", "shipwreck.jpg", "the_scream.jpg",
            "woman-with-hat-matisse.jpg"]
STYLE = "starry_night.jpg"


def speed(count: int, size: int) -> None:
    from pipeline import config as config_mod
    from pipeline.batch.discover import discover
    from pipeline.batch.imagejob import ImageJob, load_styles, stylize_file
    from pipeline.core.stylizer import Stylizer

    photos = [IMAGES / name for name in CONTENTS if (IMAGES / name).is_file()][:count]
    if not (IMAGES / STYLE).is_file() or not photos:
        print(f"speed: skipped ({IMAGES} has no {STYLE} or no content photos)")
        return
    config = config_mod.load(overrides={"image.size": size})
    with tempfile.TemporaryDirectory() as tmp:
        plan = discover(photos, Path(tmp) / "out", fmt="png")
        styles = load_styles([IMAGES / STYLE], config.image.max_pixels)
        stylizer = Stylizer(config)
        times = []
        for item in plan.items:
            start = time.perf_counter()
            outcome = stylize_file(stylizer, ImageJob(item.source, item.output), styles, [1.0], config)
            times.append(time.perf_counter() - start)
            print(f"  {item.id}: {outcome.size[0]}x{outcome.size[1]}, {outcome.evaluations} evaluations, "
                  f"{times[-1]:.1f} s", flush=True)
    total = sum(times)
    print(f"speed: {len(times)} images at {size} px (default settings, {config.optim.iterations}+"
          f"{config.optim.coarse_iterations} iterations, scales {config.image.scales}): {total:.0f} s, "
          f"{3600 * len(times) / total:.1f} images/hour on this machine"
          + (f"; {3600 * (len(times) - 1) / sum(times[1:]):.1f} images/hour after the first (tracing)"
             if len(times) > 1 else ""))


def estimate_vs_real(count: int, size: int) -> None:
    """--dry-run's estimate (a calibration, no ledger yet) against the run it predicts, in this process."""
    from pipeline import config as config_mod
    from pipeline.batch.driver import RunOptions, run

    photos = [IMAGES / name for name in CONTENTS if (IMAGES / name).is_file()][:count]
    if not (IMAGES / STYLE).is_file() or not photos:
        print(f"estimate: skipped ({IMAGES} has no {STYLE} or no content photos)")
        return
    config = config_mod.load(overrides={"image.size": size})
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "photos"
        inputs.mkdir()
        for photo in photos:
            (inputs / photo.name).symlink_to(photo)
        out = Path(tmp) / "out"
        options = {"inputs": [inputs], "styles": [IMAGES / STYLE], "out_dir": out, "config": config,
                   "quiet": True, "executor": "local"}
        start = time.perf_counter()
        guess = run(RunOptions(**options, dry_run=True)).estimate
        calibration = time.perf_counter() - start
        start = time.perf_counter()
        run(RunOptions(**options))
        real = time.perf_counter() - start
        again = run(RunOptions(**options, dry_run=True, overwrite=True)).estimate
    print(f"estimate: {len(photos)} photos at {size} px, one in-process worker: calibration estimate "
          f"{guess.seconds:.0f} s (took {calibration:.0f} s), real {real:.0f} s, ratio estimate/real "
          f"{guess.seconds / real:.2f}; from the ledger afterwards {again.seconds:.0f} s "
          f"(ratio {again.seconds / real:.2f})")


def make_big_jpeg(path: Path, width: int = 6000, height: int = 4000) -> Path:
    """A photo-like 24 MP JPEG: smooth gradients plus grain, so it compresses like a real one."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width * 255, y / height * 255, 128 + 100 * np.sin(x / 300) * np.cos(y / 200)], -1)
    rgb += np.random.default_rng(0).normal(0, 6, rgb.shape).astype(np.float32)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def child_memory(source: Path, keep_resolution: bool) -> None:
    """Runs in a fresh process: one stylize_file, then prints its own peak RSS as JSON."""
    from pipeline import config as config_mod
    from pipeline.batch.demo import swirl_painting
    from pipeline.batch.imagejob import ImageJob, stylize_file
    from pipeline.core.stylizer import Stylizer

    config = config_mod.load(overrides={"optim.iterations": 5, "optim.coarse_iterations": 5,
                                        "image.keep_resolution": keep_resolution})
    out = source.with_name(f"out-{int(keep_resolution)}-{source.stem}.jpg")
    start = time.perf_counter()
    outcome = stylize_file(Stylizer(config), ImageJob(source, out), [swirl_painting(256)], [1.0], config)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_mib": peak_kib / 1024, "size": outcome.size, "seconds": time.perf_counter() - start,
                      "working_size": config.image.size}))


def memory() -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        big = make_big_jpeg(Path(tmp) / "big.jpg")
        small = Path(tmp) / "small.jpg"
        with Image.open(big) as opened:
            opened.resize((640, 427)).save(small, quality=90)
        print(f"memory: generated {big.stat().st_size / 1e6:.1f} MB 6000x4000 JPEG", flush=True)
        for label, source, keep in (("640x427 input (baseline)", small, False), ("6000x4000 input", big, False),
                                    ("6000x4000 input, keep_resolution", big, True)):
            result = subprocess.run([sys.executable, __file__, "--child-memory", str(source), str(int(keep))],
                                    capture_output=True, text=True, cwd=ROOT, check=False)
            if result.returncode != 0:
                print(f"  {label}: child failed: {result.stderr.strip().splitlines()[-1:]}")
                continue
            data = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"  {label}: peak RSS {data['peak_mib']:.0f} MiB, output {data['size'][0]}x{data['size'][1]}, "
                  f"working size {data['working_size']}, {data['seconds']:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--estimate", action="store_true",
                        help="only compare the --dry-run estimate with the real duration (--count, --size)")
    parser.add_argument("--child-memory", nargs=2, metavar=("SOURCE", "KEEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(Path(args.child_memory[0]), bool(int(args.child_memory[1])))
        return
    if args.estimate:
        estimate_vs_real(args.count, args.size)
        return
    if not args.skip_memory:
        memory()
    if not args.skip_speed:
        speed(args.count, args.size)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
