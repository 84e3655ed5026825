"""The optimiser: in-graph L-BFGS against scipy's L-BFGS-B (and TensorFlow Probability's, when installed).

    .venv/bin/python benchmarks/bench_lbfgs.py [--sizes 128 256 512] [--evals 50] [--quality-sizes 256 512]

1. Overhead: wall time of one optimisation call / (evaluations x compiled loss+gradient time),
   temporal term on, one scale, default precision. The compiled step is timed alone in the same run.
2. Quality at equal evaluations on three content x style pairs: final loss and the fixed-evaluator
   style / content distances (pipeline.core.metrics), in-graph against scipy.
3. Host reads per call, and what a GPU would be busy with (on paper, from the measured host costs).

Prints numbers only. Ratios come from runs alternated inside this one process.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
from common import IMAGES, scipy_lbfgs

from pipeline import config as config_mod
from pipeline.core.arrays import fit_longest, resize
from pipeline.core.metrics import style_content_distances
from pipeline.core.stylizer import Stylizer
from pipeline.core.tfsetup import tf
from pipeline.core.types import Targets, TemporalTarget
from pipeline.core.vgg import FeatureExtractor
from pipeline.media.images import load_image

PAIRS = [("tubingen.jpg", "starry_night.jpg"), ("golden_gate.jpg", "the_scream.jpg"),
         ("hoovertowernight.jpg", "shipwreck.jpg")]
TRANSFER_MS = 0.4
SYNC_MS = 0.1  # one small device-to-host read and a launch
GPU_STEP_MS = 6.0  # stated: one 512x384 VGG-19 loss+gradient (~300 GFLOP) on an A100-class GPU at ~50 TFLOP/s


def load(name: str, longest: int | None = None) -> np.ndarray:
    image = load_image(IMAGES / name, 10**9).rgb.astype(np.float32)
    return resize(image, fit_longest(image, longest)) if longest else image


def stylizer_for(extractor=None, **overrides) -> Stylizer:
    cfg = config_mod.load(overrides={"optim.tolerance": 0.0, "image.scales": [1.0], **overrides})
    return Stylizer(cfg, extractor=extractor)


def temporal_for(content: np.ndarray) -> TemporalTarget:
    rng = np.random.default_rng(0)
    warped = np.clip(content + rng.normal(0, 8, content.shape), 0, 255).astype(np.float32)
    return TemporalTarget(warped, np.ones(content.shape[:2], np.float32))


def compiled_step_seconds(stylizer: Stylizer, content, targets, temporal, reps: int) -> float:
    warped, mask = stylizer._temporal_tensors(content.shape[:2], temporal)
    weights = stylizer.loss_weights(temporal, 50.0)
    x = tf.constant(content[None])
    stylizer._loss_and_grad(x, targets.content, targets.grams, warped, mask, weights)[0].numpy()
    start = time.perf_counter()
    for _ in range(reps):
        loss, _grad, _ = stylizer._loss_and_grad(x, targets.content, targets.grams, warped, mask, weights)
    loss.numpy()
    return (time.perf_counter() - start) / reps


def part_overhead(sizes: list[int], evals: int, stylizer: Stylizer) -> dict[str, float]:
    """Prints the ratios; returns the host seconds per evaluation of each loop at the largest size."""
    print(f"\n== 1. one optimisation call / ({evals} evaluations x compiled step), temporal on, one scale, "
          f"precision {stylizer.extractor.precision} ==")
    content_full, style = load("tubingen.jpg"), load("starry_night.jpg")
    print(f"{'size':>9} {'step s':>8} {'in-graph':>9} {'scipy':>7} {'reads':>6}")
    for longest in sizes:
        content = resize(content_full, fit_longest(content_full, longest))
        targets = Targets(stylizer.content_targets(content),
                          stylizer.style_grams([style], [1.0], content.shape[:2]))
        temporal = temporal_for(content)
        stylizer.optimise(content, targets, 3, temporal, 50.0)  # warm-up: traces, first-call allocations
        scipy_lbfgs(stylizer, content, targets, 3, temporal, 50.0)
        step = compiled_step_seconds(stylizer, content, targets, temporal, reps=max(5, evals // 3))
        ratios = {}
        before = stylizer.host_reads
        result = stylizer.optimise(content, targets, evals, temporal, 50.0)
        reads = stylizer.host_reads - before
        ratios["lbfgs"] = result.seconds / (result.evaluations * step)
        result = scipy_lbfgs(stylizer, content, targets, evals, temporal, 50.0)
        ratios["scipy"] = result.seconds / (result.evaluations * step)
        h, w = content.shape[:2]
        print(f"{w:>4}x{h:<4} {step:8.3f} {ratios['lbfgs']:9.3f} {ratios['scipy']:7.3f} {reads:6d}")
        host = {name: (ratio - 1.0) * step for name, ratio in ratios.items()}
    return host


def tfp_minimize(stylizer: Stylizer, content, targets, evals: int) -> tuple[float, int, np.ndarray]:
    import tensorflow_probability as tfp

    warped, mask = stylizer._temporal_tensors(content.shape[:2], None)
    weights = stylizer.loss_weights(None, 0.0)
    shape = tf.constant([1, *content.shape])
    objective = stylizer._flat_objective(shape, targets.content, targets.grams, warped, mask, weights)

    @tf.function
    def run(x0):
        return tfp.optimizer.lbfgs_minimize(objective, x0, num_correction_pairs=20,
                                            max_iterations=max(1, evals // 3), tolerance=0.0,
                                            x_tolerance=0.0, f_relative_tolerance=0.0)

    res = run(tf.constant(content.ravel()))
    image = np.clip(res.position.numpy().reshape(content.shape), 0, 255)
    return float(res.objective_value), int(res.num_objective_evaluations), image


def part_quality(sizes: list[int], evals: int, stylizer: Stylizer, evaluator: FeatureExtractor,
                 with_tfp: bool) -> None:
    print(f"\n== 2. quality at {evals} evaluations: in-graph / scipy (loss, style and content distances "
          "under the fixed fp32 evaluator) ==")
    print(f"{'pair':<34} {'size':>4} {'loss in/sc':>18} {'ratio':>6} {'style ratio':>11} {'content ratio':>13}"
          f" {'s in/sc':>13}")
    for content_name, style_name in PAIRS:
        content_full, style = load(content_name), load(style_name)
        for longest in sizes:
            content = resize(content_full, fit_longest(content_full, longest))
            targets = Targets(stylizer.content_targets(content),
                              stylizer.style_grams([style], [1.0], content.shape[:2]))
            out = {}
            for name in ("lbfgs", "scipy"):
                result = (stylizer.optimise(content, targets, evals) if name == "lbfgs"
                          else scipy_lbfgs(stylizer, content, targets, evals))
                sd, cd = style_content_distances(result.image, content, style, evaluator)
                out[name] = (result.final_loss, sd, cd, result.seconds)
            a, b = out["lbfgs"], out["scipy"]
            label = f"{content_name[:-4]} x {style_name[:-4]}"
            print(f"{label:<34} {longest:>4} {a[0]:8.4f}/{b[0]:<8.4f} {a[0] / b[0]:6.3f} {a[1] / b[1]:11.3f}"
                  f" {a[2] / b[2]:13.3f} {a[3]:6.1f}/{b[3]:<6.1f}")
            if with_tfp and longest == sizes[0]:
                loss, n, _ = tfp_minimize(stylizer, content, targets, evals)
                print(f"{'  TFP lbfgs_minimize (HZ line search)':<34} {longest:>4} {loss:8.4f} after {n} "
                      f"evaluations: {loss / b[0]:.3f}x scipy's loss at {evals}")


def part_gpu(host: dict[str, float], block: int) -> None:
    """A GPU's busy fraction for each loop at 512x384, from the host costs measured in part 1."""
    print("\n== 3. a GPU's busy fraction at 512x384 (on paper) ==")
    print(f"stated GPU loss+gradient: {GPU_STEP_MS:.1f} ms; PCIe copies of the image and gradient "
          f"(2 x 2.4 MB at ~12 GB/s): {TRANSFER_MS:.1f} ms")
    old = host["scipy"] * 1e3 + TRANSFER_MS
    print(f"old loop: host work per evaluation {host['scipy'] * 1e3:.0f} ms (scipy's update, float64 copies; "
          f"measured) -> busy {GPU_STEP_MS / (GPU_STEP_MS + old):.0%}")
    # The two-loop recursion reads 2 x 20 history vectors of 2.4 MB twice (~0.4 GB) at ~1.5 TB/s.
    device_vector_ms = 0.4e9 / 1.5e12 * 1e3
    per_eval = GPU_STEP_MS + device_vector_ms + SYNC_MS / block
    print(f"new loop: vector work on the device ~{device_vector_ms:.2f} ms, one {SYNC_MS:.1f} ms host sync per "
          f"{block} evaluations -> busy {GPU_STEP_MS / per_eval:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--quality-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    missing = [IMAGES / n for pair in PAIRS for n in pair if not (IMAGES / n).is_file()]
    if missing:
        print(f"skip: {missing[0]} not present")
        return
    stylizer = stylizer_for()
    if not args.skip_overhead:
        host = part_overhead(args.sizes, args.evals, stylizer)
    if not args.skip_quality:
        try:
            import tensorflow_probability  # noqa: F401
            with_tfp = True
        except ImportError:
            print("(TensorFlow Probability not installed: its row is left out)")
            with_tfp = False
        evaluator = FeatureExtractor(layers=["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
                                             "block4_conv2", "block5_conv1"], precision="fp32",
                                     arrays=stylizer.extractor.arrays)
        part_quality(args.quality_sizes, args.evals, stylizer, evaluator, with_tfp)
    if not args.skip_overhead:
        part_gpu(host, stylizer.config.optim.block_evaluations)
    print(f"\nhost reads bound per call: ceil(evals / {stylizer.config.optim.block_evaluations}) + 1 = "
          f"{math.ceil(args.evals / stylizer.config.optim.block_evaluations) + 1}")


if __name__ == "__main__":
    main()
