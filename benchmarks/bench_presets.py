"""Runs every preset (and the defaults) on tubingen x starry_night and prints a markdown table.

All runs are judged by one fixed evaluator, whatever loss the preset itself optimises: VGG-19
(the real weights), max pooling, content block4_conv2, style block1_conv1..block5_conv1 with equal
weights, "relative" normalisation for both (squared error over the target's squared norm, so the
numbers are comparable between presets and free of image size).

    .venv/bin/python benchmarks/bench_presets.py [--size 256] [--out /tmp/nst_bench_presets] [--only a,b]

Seconds are wall time of Stylizer.stylize (targets, tracing and optimisation), one run each, on
whatever else the machine is doing. Stylized images are written as PNG into --out.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from pipeline import config as config_mod
from pipeline.core import losses
from pipeline.core.arrays import fit_longest, resize
from pipeline.core.stylizer import Stylizer
from pipeline.core.tfsetup import tf
from pipeline.core.vgg import FeatureExtractor
from pipeline.core.weights import locate
from pipeline.errors import WeightsError
from pipeline.media.images import load_image, save_image

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
EVAL_CONTENT = "block4_conv2"
EVAL_STYLE = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]

# (preset or None for configs/default.toml, what it reproduces)
RUNS: list[tuple[str | None, str]] = [
    (None, "our defaults"),
    ("fast", "ours: quick previews"),
    ("quality", "ours: final renders"),
    ("gatys_adam_dlai", "seed 000: deeplearning.ai-style Gatys, Adam"),
    ("vgg16_adam_halfsum", "seed 001: VGG-16 paper, Adam"),
    ("gatys_all_layers", "seed 002: conv1_1..conv5_1 content and style"),
    ("gatys_adam_alpha10_beta40", "seed 003: alpha 10, beta 40, Adam"),
    ("vgg16_lbfgs_tv_block2", "seed 004: Keras VGG-16 recipe with TV"),
]


class Evaluator:
    """Fixed content/style distances of an image to the content photo and the style painting."""

    def __init__(self, arrays: dict[str, np.ndarray], content: np.ndarray, style: np.ndarray) -> None:
        self.extractor = FeatureExtractor("vgg19", "max", [EVAL_CONTENT, *EVAL_STYLE], arrays=arrays)
        self.content_target = self._features(content)[EVAL_CONTENT]
        style_features = self._features(style)
        self.grams = {n: losses.gram(style_features[n], "relative") for n in EVAL_STYLE}

    def _features(self, image: np.ndarray) -> dict[str, tf.Tensor]:
        return self.extractor(tf.constant(np.asarray(image, np.float32)[None]))

    def distances(self, image: np.ndarray) -> tuple[float, float]:
        feats = self._features(image)
        content = losses.content_layer_loss(feats[EVAL_CONTENT], self.content_target, "relative")
        style = tf.add_n([losses.style_layer_loss(feats[n], self.grams[n], "relative") for n in EVAL_STYLE])
        return float(style) / len(EVAL_STYLE), float(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="working size (longest side, px)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nst_bench_presets"))
    parser.add_argument("--content", default="tubingen.jpg")
    parser.add_argument("--style", default="starry_night.jpg")
    parser.add_argument("--only", default="", help="comma-separated presets to run (default: all)")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    runs = [(p, r) for p, r in RUNS if not only or (p or "default") in only]

    photo = load_image(IMAGES / args.content, 10**9).rgb.astype(np.float32)
    painting = load_image(IMAGES / args.style, 10**9).rgb.astype(np.float32)
    content = resize(photo, fit_longest(photo, args.size))
    # The evaluator sees the style at the size every run's style targets use (style_scale 1).
    style_eval = resize(painting, fit_longest(painting, args.size))
    vgg19 = FeatureExtractor("vgg19", layers=["block1_conv1"])  # loads and verifies the weights once
    evaluator = Evaluator(vgg19.arrays, content, style_eval)
    args.out.mkdir(parents=True, exist_ok=True)

    h, w = content.shape[:2]
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    print(f"{args.content} x {args.style}, {w}x{h} px, {threads} intra-op threads; distances: VGG-19 max pooling, "
          f"content {EVAL_CONTENT}, style conv1_1..conv5_1 "
          f"equal weights, relative normalisation (lower is closer); load average (1 min) at the start: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    rows = ["| preset | reproduces | iterations (evaluations) | seconds | style distance | content distance |",
            "|---|---|---|---|---|---|"]
    style_d, content_d = evaluator.distances(content)
    rows.append(f"| (the content photo itself) | reference | 0 | - | {style_d:.3f} | {content_d:.3f} |")
    for preset, reproduces in runs:
        cfg = config_mod.load(preset=preset, overrides={"image.size": args.size})
        name = preset or "default"
        planned = _planned(cfg, content.shape[:2])
        if cfg.model.network != "vgg19":
            try:
                locate(cfg.model.network, allow_download=False)
            except WeightsError:
                rows.append(f"| {name} | {reproduces} | {planned} | n/a (VGG-16 weights not on this machine) "
                            f"| n/a | n/a |")
                print(rows[-1], flush=True)
                continue
            extractor = None  # weights present: the Stylizer loads them
        else:
            extractor = FeatureExtractor("vgg19", cfg.model.pooling,
                                         list(cfg.model.content_layers) + list(cfg.model.style_layers),
                                         cfg.optim.precision, arrays=vgg19.arrays)
        stylizer = Stylizer(cfg, extractor)
        start = time.perf_counter()
        result = stylizer.stylize(content, [painting])
        seconds = time.perf_counter() - start
        save_image(result.image, args.out / f"{name}.png")
        style_d, content_d = evaluator.distances(result.image)
        rows.append(f"| {name} | {reproduces} | {planned} ({result.evaluations}) | {seconds:.1f} "
                    f"| {style_d:.3f} | {content_d:.3f} |")
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"images: {args.out}/")


def _planned(cfg: config_mod.Config, hw: tuple[int, int]) -> str:
    from pipeline.core.arrays import scale_sizes

    levels = len(scale_sizes(*hw, cfg.image.scales, cfg.image.min_scale_size))
    coarse = [str(cfg.optim.coarse_iterations)] * (levels - 1)
    return " + ".join([*coarse, str(cfg.optim.iterations)]) + f" {cfg.optim.optimizer}"


if __name__ == "__main__":
    main()
