"""Speed and memory in one run: seconds per iteration at 256/512/1024 px for fp32 and bf16,
achieved GFLOP/s against a matmul measured in the same run, XLA on/off, our / pastiche seconds
per step at 512 px, and peak RSS (child processes) at 512, 1024 and a tiled 6000x4000.

    .venv/bin/python benchmarks/bench_speed.py [--sizes 256,512,1024] [--skip-pastiche]
                                               [--skip-memory] [--max-memory 8GB]

Adam steps are timed as (elapsed at step 30 - at step 10) / 20 inside one run (20 -> 10 at
1024 px), fp32 and bf16 alternated; the machine is shared, so read the ratios, not the seconds.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import (
    ROOT,
    images_present,
    load_pair,
    matmul_gflops,
    ours_adam_seconds_per_step,
    pastiche_seconds_per_step,
    peak_rss_mb,
    spread,
    step_gflop,
)

from pipeline import config as config_mod
from pipeline.core.stylizer import Stylizer
from pipeline.core.vgg import FeatureExtractor

LAYERS = ["block4_conv2", "block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]


def child_memory(size: int, tiled: bool, max_memory: str, precision: str, iterations: int) -> None:
    """Runs in a child process: one stylization, then prints what it did (the parent reads ru_maxrss)."""
    import cv2

    from pipeline.core import tiling

    content, style = load_pair(512)
    if tiled:  # a 6000x4000 "photo": the real one upscaled (the test is about memory, not detail)
        content = np.clip(cv2.resize(content, (6000, 4000), interpolation=cv2.INTER_CUBIC), 0, 255)
    else:
        content, style = load_pair(size)
    overrides = {"optim.iterations": iterations, "optim.coarse_iterations": iterations,
                 "optim.precision": precision, "optim.tolerance": 0.0}
    if tiled:
        overrides["image.max_memory"] = max_memory
    stylizer = Stylizer(config_mod.load(overrides=overrides))
    start = time.perf_counter()
    result = stylizer.stylize(content, [style])
    h, w = content.shape[:2]
    estimate = tiling.whole_image_bytes(h, w, precision, stylizer.config.optim.optimizer) / 2**20
    print(f"{w}x{h} -> {result.image.shape[1]}x{result.image.shape[0]} in {time.perf_counter() - start:.0f} s, "
          f"{result.evaluations} evaluations; whole-image estimate {estimate:.0f} MB")


def memory(max_memory: str, tiled_precision: str) -> None:
    print("\n== peak resident memory (child process ru_maxrss) ==")
    script = str(ROOT / "benchmarks" / "bench_speed.py")
    for size, tiled, precision, iters in ((512, False, "fp32", 3), (1024, False, "fp32", 3),
                                          (4000, True, tiled_precision, 1)):
        cmd = [sys.executable, script, "--child-memory", str(size), "--max-memory", max_memory,
               "--child-precision", precision, "--child-iterations", str(iters)] + (["--child-tiled"] if tiled else [])
        rss, out = peak_rss_mb(cmd)
        label = f"tiled 6000x4000, --max-memory {max_memory}, {precision}" if tiled else f"{size} px, {precision}"
        print(f"  {label}: peak RSS {rss:.0f} MB ({out.strip()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--skip-pastiche", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--max-memory", default="8GB")
    parser.add_argument("--tiled-precision", default="bf16")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-tiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--child-iterations", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not images_present():
        return
    if args.child_memory:
        child_memory(args.child_memory, args.child_tiled, args.max_memory, args.child_precision,
                     args.child_iterations)
        return
    if not args.skip_speed:
        speed([int(s) for s in args.sizes.split(",")], not args.skip_pastiche)
    if not args.skip_memory:
        memory(args.max_memory, args.tiled_precision)


def speed(sizes: list[int], with_pastiche: bool) -> None:
    cfg = config_mod.load(overrides={"optim.tolerance": 0.0, "optim.optimizer": "adam"})
    fp32_ex = FeatureExtractor(layers=LAYERS)
    extractors = {"fp32": fp32_ex, "bf16": FeatureExtractor(layers=LAYERS, precision="bf16", arrays=fp32_ex.arrays)}
    stylizers = {p: Stylizer(cfg.replace(**{"optim.precision": p}), extractor=e) for p, e in extractors.items()}
    xla = Stylizer(cfg, extractor=fp32_ex, jit_compile=True)
    print("== seconds per Adam step, achieved GFLOP/s (analytic FLOPs of loss + input gradient) ==")
    mm: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for size in sizes:
        content, style = load_pair(size)
        h, w = content.shape[:2]
        flops = step_gflop(h, w)["step"]
        first, last = (10, 20) if size >= 1024 else (10, 30)
        mm["float32"].append(matmul_gflops("float32"))
        mm["bfloat16"].append(matmul_gflops("bfloat16"))
        secs = {p: ours_adam_seconds_per_step(s, content, style, first, last) for p, s in stylizers.items()}
        line = [f"{w}x{h} ({flops:.0f} GFLOP/step):"]
        for p, sec in secs.items():
            ref = mm["float32" if p == "fp32" else "bfloat16"][-1]
            line.append(f"{p} {sec:.3f} s = {flops / sec:.0f} GFLOP/s ({flops / sec / ref:.0%} of the {p} matmul "
                        f"{ref:.0f})")
        line.append(f"bf16 speed-up {secs['fp32'] / secs['bf16']:.2f}x")
        if size == 512:
            sec_xla = ours_adam_seconds_per_step(xla, content, style, first, last)
            sec_again = ours_adam_seconds_per_step(stylizers["fp32"], content, style, first, last)
            line.append(f"| fp32 XLA {sec_xla:.3f} s vs graph {sec_again:.3f} s (XLA/graph "
                        f"{sec_xla / sec_again:.2f})")
        print("  " + "; ".join(line), flush=True)
    print(f"matmul in this run: fp32 {spread(mm['float32'])}, bf16 {spread(mm['bfloat16'])} GFLOP/s")
    if with_pastiche:
        content, style = load_pair(512)
        theirs = pastiche_seconds_per_step(512, "adam", 10, 30)["per_step"]
        ours = {p: ours_adam_seconds_per_step(s, content, style) for p, s in stylizers.items()}
        print(f"pastiche 512 px Adam: {theirs:.3f} s/step; ours/pastiche fp32 {ours['fp32'] / theirs:.2f}, "
              f"bf16 {ours['bf16'] / theirs:.2f}")


if __name__ == "__main__":
    main()
