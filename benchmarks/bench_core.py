"""Core benchmark at 512 px (tubingen x starry_night): step time, achieved GFLOP/s, pastiche ratio,
and loss against time for L-BFGS / Adam, single- / multi-scale.

    .venv/bin/python benchmarks/bench_core.py [--size 512] [--rounds 2] [--skip-quality]
                                              [--quality-precision fp32]

Prints numbers only; never part of the test suite. The machine is shared, so every comparison is
a ratio of runs alternated inside this one process, and the spread of the repeats is printed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import (
    images_present,
    load_pair,
    matmul_gflops,
    ours_adam_seconds_per_step,
    pastiche_seconds_per_step,
    spread,
    step_gflop,
)

from pipeline import config as config_mod
from pipeline.core.stylizer import Stylizer
from pipeline.core.tfsetup import tf
from pipeline.core.types import Targets
from pipeline.core.vgg import FeatureExtractor

LAYERS = ["block4_conv2", "block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]


def stylizer_for(precision: str, extractors: dict, **overrides: object) -> Stylizer:
    cfg = config_mod.load(overrides={"optim.precision": precision, "optim.tolerance": 0.0, **overrides})
    if precision not in extractors:
        base = next(iter(extractors.values()), None)
        extractors[precision] = FeatureExtractor(layers=LAYERS, precision=precision,
                                                 arrays=base.arrays if base else None)
    return Stylizer(cfg, extractor=extractors[precision])


def lbfgs_seconds_per_evaluation(stylizer: Stylizer, content: np.ndarray, style: np.ndarray,
                                 first: int = 5, last: int = 25) -> float:
    targets = Targets(stylizer.content_targets(content), stylizer.style_grams([style], [1.0], content.shape[:2]))
    result = stylizer.optimise(content, targets, last, optimizer="lbfgs")
    at = {evals: seconds for evals, seconds, _ in result.history}
    return (at[last] - at[first]) / (last - first)


def host_round_trip(shape: tuple[int, int, int], reps: int = 20) -> dict[str, float]:
    """What L-BFGS-B adds per evaluation beyond the TF step: the copies to/from the host and
    scipy's own update (measured with a cheap quadratic of the same size)."""
    from scipy.optimize import Bounds, minimize

    z = np.random.default_rng(0).uniform(0, 255, int(np.prod(shape)))
    grad = tf.constant(np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32))
    start = time.perf_counter()
    for _ in range(reps):
        x = tf.constant(z.reshape((1, *shape)), tf.float32)
        _ = x.shape
        grad.numpy().astype(np.float64).ravel()
    copies = (time.perf_counter() - start) / reps
    target = np.full_like(z, 128.0)
    count = {"n": 0}

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        count["n"] += 1
        d = v - target
        return float(d @ d) * 1e-3, 2e-3 * d

    start = time.perf_counter()
    minimize(fun, z, jac=True, method="L-BFGS-B", bounds=Bounds(0.0, 255.0),
             options={"maxiter": 30, "maxfun": 30, "ftol": 0.0, "gtol": 0.0, "maxcor": 20})
    scipy_time = (time.perf_counter() - start) / max(count["n"], 1)
    return {"copies": copies, "scipy": scipy_time}


def part_speed(content: np.ndarray, style: np.ndarray, rounds: int, extractors: dict) -> dict:
    h, w = content.shape[:2]
    flops = step_gflop(h, w)
    print(f"\n== 1. step time at {w}x{h} ==")
    print(f"analytic FLOPs (conv shapes): forward to conv5_1 {flops['forward']:.1f} GFLOP, "
          f"loss + input gradient {flops['step']:.1f} GFLOP per evaluation")
    fp32 = stylizer_for("fp32", extractors)
    results: dict[str, list[float]] = {"mm32": [], "lbfgs": [], "adam": []}
    for r in range(rounds):
        results["mm32"].append(matmul_gflops("float32"))
        results["lbfgs"].append(lbfgs_seconds_per_evaluation(fp32, content, style))
        results["adam"].append(ours_adam_seconds_per_step(fp32, content, style, first=10, last=30))
        print(f"  round {r + 1}: matmul fp32 {results['mm32'][-1]:.0f} GFLOP/s, L-BFGS evaluation "
              f"{results['lbfgs'][-1]:.3f} s, Adam step {results['adam'][-1]:.3f} s", flush=True)
    mm = float(np.median(results["mm32"]))
    for key, label in (("lbfgs", "L-BFGS evaluation (default)"), ("adam", "Adam step")):
        sec = float(np.median(results[key]))
        achieved = flops["step"] / sec
        print(f"{label}: {spread(results[key])} s/iteration -> {achieved:.0f} GFLOP/s = "
              f"{achieved / mm:.0%} of the fp32 matmul ({spread(results['mm32'])} GFLOP/s)")
    trip = host_round_trip(content.shape)
    print(f"L-BFGS host round trip per evaluation: copies {trip['copies'] * 1e3:.1f} ms, scipy update "
          f"{trip['scipy'] * 1e3:.1f} ms = {(trip['copies'] + trip['scipy']) / np.median(results['lbfgs']):.1%}"
          f" of an evaluation")
    return {"flops": flops, "matmul": mm, **{k: float(np.median(v)) for k, v in results.items()}}


def part_pastiche(content: np.ndarray, style: np.ndarray, rounds: int, extractors: dict, longest: int) -> None:
    print(f"\n== 2. against pastiche 1.6.0 (PyTorch CPU), --optimizer adam --size {longest} ==")
    print("per-step time = (elapsed at step 30 - at step 10) / 20 inside each run, runs alternated")
    ours = {"fp32": stylizer_for("fp32", extractors), "bf16": stylizer_for("bf16", extractors)}
    times: dict[str, list[float]] = {"pastiche": [], "fp32": [], "bf16": []}
    for r in range(rounds):
        for name in ("fp32", "pastiche", "bf16"):
            if name == "pastiche":
                times[name].append(pastiche_seconds_per_step(longest, "adam", first=10, last=30)["per_step"])
            else:
                times[name].append(ours_adam_seconds_per_step(ours[name], content, style, first=10, last=30))
        ratios = {k: times[k][-1] / times["pastiche"][-1] for k in ("fp32", "bf16")}
        print(f"  round {r + 1}: pastiche {times['pastiche'][-1]:.3f} s, ours fp32 {times['fp32'][-1]:.3f} s "
              f"(ratio {ratios['fp32']:.2f}), ours bf16 {times['bf16'][-1]:.3f} s "
              f"(ratio {ratios['bf16']:.2f})", flush=True)
    for k in ("fp32", "bf16"):
        per_round = [a / b for a, b in zip(times[k], times["pastiche"])]
        print(f"ours {k} / pastiche seconds per Adam step: {spread(per_round)} "
              f"(targets <= 0.7 and <= 0.6)")


def time_to_reach(trace: list[tuple[bool, float, float]], level: float) -> float | None:
    """First wall time (since the call) at which the final-scale loss is <= level."""
    for final, seconds, loss in trace:
        if final and loss <= level:
            return seconds
    return None


def part_quality(content: np.ndarray, style: np.ndarray, extractors: dict, precision: str,
                 only_reference_pair: bool = False, default_precision: str | None = None) -> None:
    print(f"\n== 3. loss against time at {content.shape[1]}x{content.shape[0]} ({precision}) ==")
    print("one evaluator: the full-resolution loss under the default weights (relative style + content "
          "distances at 512, tv), same targets for every run")
    runs = [
        ("L-BFGS  [0.5,1] 100+200 (default)", {"optim.optimizer": "lbfgs", "image.scales": [0.5, 1.0],
                                               "optim.coarse_iterations": 100, "optim.iterations": 200}),
        ("Adam    [1]     500 (reference)", {"optim.optimizer": "adam", "image.scales": [1.0],
                                             "optim.iterations": 500}),
        ("L-BFGS  [1]     300", {"optim.optimizer": "lbfgs", "image.scales": [1.0], "optim.iterations": 300}),
        ("L-BFGS  [0.5,1] 100+100", {"optim.optimizer": "lbfgs", "image.scales": [0.5, 1.0],
                                     "optim.coarse_iterations": 100, "optim.iterations": 100}),
        ("Adam    [0.5,1] 100+400", {"optim.optimizer": "adam", "image.scales": [0.5, 1.0],
                                     "optim.coarse_iterations": 100, "optim.iterations": 400}),
    ]
    if only_reference_pair:  # the target's two runs only: the default and 500 single-scale Adam
        runs = runs[:2]
    results = {}
    evaluator = stylizer_for(precision, extractors)
    targets = Targets(evaluator.content_targets(content), evaluator.style_grams([style], [1.0], content.shape[:2]))
    for label, overrides in runs:
        run_precision = default_precision if default_precision and "(default)" in label else precision
        stylizer = stylizer_for(run_precision, extractors, **overrides)
        if run_precision != precision:
            label_note = f" [{run_precision} -> {stylizer.extractor.precision}]"
            print(f"  (the default runs at precision {run_precision}{label_note}; the others and the evaluator "
                  f"at {precision})", flush=True)
        trace: list[tuple[bool, float, float]] = []
        start = time.perf_counter()
        result = stylizer.stylize(content, [style], callback=lambda it, trace=trace, start=start: trace.append(
            (it.scale == it.scales, time.perf_counter() - start, it.loss)))
        wall = time.perf_counter() - start
        loss, terms, _ = evaluator.evaluate(result.image, targets)
        results[label] = (wall, loss, terms, trace)
        print(f"  {label}: {wall:7.1f} s, {result.evaluations} evaluations, full-res loss {loss:.4f} "
              f"(style {terms['style']:.4f}, content {terms['content']:.4f}, tv {terms['tv']:.5f})", flush=True)
    ref_label = "Adam    [1]     500 (reference)"
    ref_wall, ref_loss, _, _ = results[ref_label]
    print(f"reference: 500 single-scale Adam iterations reach {ref_loss:.4f} in {ref_wall:.1f} s (wall, "
          f"targets included); target: the default reaches it in <= 1/3 of that")
    for label, (wall, loss, _, trace) in results.items():
        if label == ref_label:
            continue
        reach = time_to_reach(trace, ref_loss)
        when = f"{reach:.1f} s = {reach / ref_wall:.2f} of the reference time" if reach else "never"
        print(f"  {label}: reaches the reference loss at {when}; final loss {loss / ref_loss:.2f}x the reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-pastiche", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--quality-precision", default="fp32")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--default-precision", default=None,
                        help="part 3: precision of the default run (e.g. auto, as in configs/default.toml)")
    parser.add_argument("--reference-pair-only", action="store_true",
                        help="part 3: only the default and the 500-iteration Adam reference")
    args = parser.parse_args()
    if not images_present():
        return
    content, style = load_pair(args.size)
    extractors: dict = {}
    if not args.skip_speed:
        part_speed(content, style, args.rounds, extractors)
    if not args.skip_pastiche:
        part_pastiche(content, style, args.rounds, extractors, args.size)
    if not args.skip_quality:
        part_quality(content, style, extractors, args.quality_precision, args.reference_pair_only,
                     args.default_precision)


if __name__ == "__main__":
    main()
