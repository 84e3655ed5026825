"""High resolution under a memory budget: a coarse whole-image pass, then overlapping tiles at
full resolution, blended with raised-cosine weights.

Every tile is optimised against the Gram targets of the *whole* style at the full-resolution
scale (Grams are averages over positions, so a tile's Gram is comparable with the whole style's),
and against the content features of its own crop. Tiles start from the upsampled coarse result,
so neighbours agree in their overlap up to detail, and the blend hides the rest. VGG's zero
padding makes the outer pixels of a tile the least reliable; the raised-cosine weights give them
the least say wherever a neighbour covers them.

Memory is estimated analytically from VGG's activation sizes (bytes per pixel) plus a fixed
runtime base; benchmarks/bench_speed.py reports the measured peak RSS next to the estimate.
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core import losses
from pipeline.core.arrays import MIN_SIDE, fit_longest, resize
from pipeline.core.tfsetup import tf
from pipeline.core.types import StylizeResult, Targets

log = logging.getLogger(__name__)

UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30,
         "T": 2**40, "TB": 2**40}
# TensorFlow, Keras, both copies of the VGG weights and Python: measured resident size before
# the first step is about 1.1 GB here; the margin covers allocator slack.
BASE_BYTES = int(1.5 * 2**30)
# VGG-19 up to conv5_1: activation elements kept per input pixel (conv outputs 290, pool outputs 30).
ELEMENTS_PER_PIXEL = 320
# Forward activations, their gradients and oneDNN's reordered copies live together at the peak.
ACTIVATION_COPIES = 3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Optimiser state per pixel: the in-graph L-BFGS keeps 2 x 20 float32 history vectors of 3 values
# per pixel plus about 10 working vectors (x, gradient, trial, its gradient, direction, two-loop
# temporaries); Adam keeps x, m and v in float32 plus transfer copies.
OPTIMIZER_BYTES = {"lbfgs": 3 * 4 * (2 * 20 + 10), "adam": 3 * 4 * 6}
CANVAS_BYTES = 3 * 4 * 4 + 4  # content, init, blended sum (float32 RGB) and weight sum, per pixel
STYLE_HALO = 32  # px of context around a style tile; features are cropped back to the tile


@dataclass(frozen=True)
class Tile:
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def hw(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def parse_memory(text: str | int | None) -> int | None:
    """'8GB', '512 MB', '2g' or a byte count -> bytes; '' or None -> no limit."""
    if text is None or text == "" or text == 0:
        return None
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if not match or unit not in UNITS:
        raise ValueError(f"memory size {text!r}: expected a number with a unit, e.g. 8GB or 512MB")
    value = float(match.group(1)) * UNITS[unit]
    if value <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return int(value)


def step_bytes(height: int, width: int, precision: str = "fp32", optimizer: str = "lbfgs") -> int:
    """Estimated peak memory of one whole-image step (without the runtime base)."""
    pixels = height * width
    per_pixel = ELEMENTS_PER_PIXEL * DTYPE_BYTES[precision] * ACTIVATION_COPIES + OPTIMIZER_BYTES[optimizer]
    if precision != "fp32":
        per_pixel += 4 * 3 * 2 * ELEMENTS_PER_PIXEL // 10  # float32 copies of the loss layers' outputs
    return pixels * per_pixel


def whole_image_bytes(height: int, width: int, precision: str, optimizer: str) -> int:
    return BASE_BYTES + step_bytes(height, width, precision, optimizer)


def tile_side_for_budget(budget: int, precision: str, optimizer: str, canvas_hw: tuple[int, int] = (0, 0),
                         minimum: int = 64) -> int:
    """Largest square tile whose step fits ``budget`` next to the runtime and the full-size canvases."""
    free = budget - BASE_BYTES - canvas_hw[0] * canvas_hw[1] * CANVAS_BYTES
    per_pixel = step_bytes(1, 1, precision, optimizer)
    side = int(math.sqrt(max(free, 0) / per_pixel))
    if side < minimum:
        raise ValueError(f"a memory budget of {budget / 2**30:.1f} GB leaves no room for a {minimum} px tile "
                         f"at {canvas_hw[1]}x{canvas_hw[0]}; raise --max-memory")
    return side


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Evenly spaced tiles of at most ``tile`` px covering the image, neighbours overlapping >= overlap."""
    if overlap * 2 >= tile:
        raise ValueError(f"tile overlap {overlap} px must be under half the tile size {tile} px")

    def starts(length: int) -> list[tuple[int, int]]:
        if length <= tile:
            return [(0, length)]
        count = math.ceil((length - overlap) / (tile - overlap))
        firsts = np.linspace(0, length - tile, count).round().astype(int)
        return [(int(s), int(s) + tile) for s in firsts]

    return [Tile(y0, y1, x0, x1) for y0, y1 in starts(height) for x0, x1 in starts(width)]


def ramp(length: int, start_ramp: int, end_ramp: int) -> np.ndarray:
    """1-D raised-cosine weights: 0 -> 1 over start_ramp px, 1 -> 0 over end_ramp px (never exactly 0)."""
    weights = np.ones(length, np.float32)
    if start_ramp:
        t = (np.arange(start_ramp) + 0.5) / start_ramp
        weights[:start_ramp] = 0.5 - 0.5 * np.cos(np.pi * t)
    if end_ramp:
        t = (np.arange(end_ramp) + 0.5) / end_ramp
        weights[length - end_ramp:] = np.minimum(weights[length - end_ramp:], 0.5 + 0.5 * np.cos(np.pi * t))
    return weights


def blend_weights(tile: Tile, height: int, width: int, overlap: int) -> np.ndarray:
    """(h, w) weights: ramps only on sides that border another tile, so the image edge keeps weight 1."""
    th, tw = tile.hw
    wy = ramp(th, overlap if tile.y0 > 0 else 0, overlap if tile.y1 < height else 0)
    wx = ramp(tw, overlap if tile.x0 > 0 else 0, overlap if tile.x1 < width else 0)
    return wy[:, None] * wx[None, :]


def tiled_style_grams(stylizer, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                      content_hw: tuple[int, int], tile: int) -> dict[str, tf.Tensor]:
    """Gram targets of the whole style at the content's scale, summed over tiles of the style.

    A Gram is a sum over positions, so it splits exactly into per-tile sums; each tile is run
    with a halo of context and its feature maps are cropped back to the tile, which leaves only
    the far reach of the deepest layers approximate.
    """

    norm = stylizer.config.loss.style_normalization
    longest = max(MIN_SIDE, round(max(content_hw) * stylizer.config.image.style_scale))
    key = (tuple(stylizer._style_key(s) for s in styles), tuple(style_weights), longest, norm, "tiled", tile)
    if key in stylizer._gram_cache:
        return stylizer._gram_cache[key]
    total = float(sum(style_weights))
    blended: dict[str, tf.Tensor] = {}
    for style, weight in zip(styles, style_weights):
        resized = resize(style, fit_longest(style, longest))
        if resized.shape[0] * resized.shape[1] <= tile * tile:
            grams = stylizer.style_grams([style], [1.0], content_hw)
        else:
            grams = _grams_by_tiles(stylizer, resized, tile - 2 * STYLE_HALO, norm)
        for name, g in grams.items():
            g = g * (weight / total)
            blended[name] = blended[name] + g if name in blended else g
    stylizer.remember_grams(key, blended)
    return blended


def _grams_by_tiles(stylizer, image: np.ndarray, core: int, norm: str) -> dict[str, tf.Tensor]:
    height, width = image.shape[:2]
    sums: dict[str, tf.Tensor] = {}
    positions: dict[str, int] = {}
    for y0 in range(0, height, core):
        for x0 in range(0, width, core):
            y1, x1 = min(y0 + core, height), min(x0 + core, width)
            hy0, hx0 = max(0, y0 - STYLE_HALO), max(0, x0 - STYLE_HALO)
            hy1, hx1 = min(height, y1 + STYLE_HALO), min(width, x1 + STYLE_HALO)
            feats = stylizer.extractor(tf.constant(image[None, hy0:hy1, hx0:hx1], tf.float32))
            for name in stylizer.style_layers:
                f = feats[name]
                stride = (hy1 - hy0) / int(f.shape[1])
                a, b = round((y0 - hy0) / stride), round((y1 - hy0) / stride)
                c, d = round((x0 - hx0) / stride), round((x1 - hx0) / stride)
                crop = f[:, a:b, c:d, :]
                raw = losses.gram(crop, "raw")  # the plain sum F^T F
                sums[name] = sums[name] + raw if name in sums else raw
                positions[name] = positions.get(name, 0) + int(crop.shape[1] * crop.shape[2])
    return {name: sums[name] / float(positions[name]) for name in sums}


def tiled_stylize(stylizer, content: np.ndarray, styles: Sequence[np.ndarray],
                  style_weights: Sequence[float], budget: int | None = None, tile: int | None = None,
                  iterations: int | None = None, coarse_longest: int | None = None,
                  callback: Callable | None = None):
    """Coarse whole-image pass, then full-resolution tiles; returns a StylizeResult of content's size.

    ``tile`` (px) overrides the size derived from ``budget`` (bytes); one of them is needed.
    """

    cfg = stylizer.config
    precision, optimizer = stylizer.extractor.precision, cfg.optim.optimizer
    height, width = content.shape[:2]
    overlap = cfg.image.tile_overlap
    if tile is None:
        if budget is None:
            raise ValueError("tiled_stylize needs a memory budget or a tile size")
        tile = tile_side_for_budget(budget, precision, optimizer, (height, width))
    tile = max(tile, 2 * overlap + 32)
    iterations = iterations or cfg.optim.iterations
    start = time.perf_counter()

    # Coarse pass: the largest whole image that fits (at most half the size), so the tiles share
    # one composition instead of each inventing its own.
    if coarse_longest is None:
        pixels = tile * tile if budget is None else (budget - BASE_BYTES) // step_bytes(1, 1, precision, optimizer)
        aspect = max(height, width) / min(height, width)
        coarse_longest = min(int(math.sqrt(pixels * aspect)), max(height, width) // 2)
    factor = coarse_longest / max(height, width)
    coarse_hw = (max(32, round(height * factor)), max(32, round(width * factor)))
    log.info("tiled: coarse pass at %dx%d, then %d px tiles", coarse_hw[1], coarse_hw[0], tile)
    coarse = stylizer.stylize(resize(content, coarse_hw), styles, style_weights, iterations=iterations,
                              callback=callback, _allow_tiling=False)
    canvas = resize(coarse.image, (height, width))

    grams = tiled_style_grams(stylizer, styles, style_weights, (height, width), tile)
    tiles = plan_tiles(height, width, tile, overlap)
    blended = np.zeros((height, width, 3), np.float32)
    weight_sum = np.zeros((height, width, 1), np.float32)
    evaluations = coarse.evaluations
    for index, t in enumerate(tiles):
        crop = np.ascontiguousarray(content[t.y0:t.y1, t.x0:t.x1])
        targets = Targets(stylizer.content_targets(crop), grams)
        # Start from what the finished neighbours made of the overlap (the coarse pass elsewhere):
        # tiles then agree where they meet instead of converging to different local optima.
        done = weight_sum[t.y0:t.y1, t.x0:t.x1]
        start_image = np.where(done > 0, blended[t.y0:t.y1, t.x0:t.x1] / np.maximum(done, 1e-6),
                               canvas[t.y0:t.y1, t.x0:t.x1])
        result = stylizer.optimise(start_image, targets, iterations,
                                   callback=callback, scale=(index + 1, len(tiles)))
        evaluations += result.evaluations
        w = blend_weights(t, height, width, overlap)[..., None]
        blended[t.y0:t.y1, t.x0:t.x1] += w * result.image
        weight_sum[t.y0:t.y1, t.x0:t.x1] += w
        log.debug("tile %d/%d %s: %d evaluations", index + 1, len(tiles), t, result.evaluations)
    image = np.clip(blended / weight_sum, 0, 255).astype(np.float32)
    return StylizeResult(image, evaluations, time.perf_counter() - start, float("nan"),
                         [(evaluations, time.perf_counter() - start, float("nan"))])


def seam_energy_ratio(image: np.ndarray, tiles: Sequence[Tile], overlap: int) -> float:
    """Squared gradient across the tiles' joins over the image's average: ~1 when nothing shows.

    Joins are the tile edges inside the image (where pasting without blending would leave a step)
    and the middles of the overlaps. Vertical joins are compared with the image's mean horizontal
    gradient and horizontal joins with its mean vertical one (texture is rarely isotropic); each
    is averaged over its lines, and the worse direction is returned.
    """
    grey = image.astype(np.float64).mean(axis=-1)
    gy = np.square(np.diff(grey, axis=0))  # gy[r - 1]: across the join between rows r - 1 and r
    gx = np.square(np.diff(grey, axis=1))
    height, width = grey.shape
    rows = sorted({r for t in tiles for r in (t.y0, t.y1, t.y0 + overlap // 2) if 0 < r < height})
    cols = sorted({c for t in tiles for c in (t.x0, t.x1, t.x0 + overlap // 2) if 0 < c < width})
    ratios = [0.0]
    if rows:
        ratios.append(float(np.mean([gy[r - 1].mean() for r in rows]) / (gy.mean() + 1e-12)))
    if cols:
        ratios.append(float(np.mean([gx[:, c - 1].mean() for c in cols]) / (gx.mean() + 1e-12)))
    return max(ratios)
