"""Fixed evaluators: temporal warping error (Lai et al. 2018) and style/content distances.

Both are independent of the run's config so numbers from different settings compare.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from pipeline.core import losses
from pipeline.core.temporal import compute_flow, reliability_mask, warp

log = logging.getLogger(__name__)

CONTENT_LAYER = "block4_conv2"
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")


def pair_warping_error(source_t: np.ndarray, source_next: np.ndarray, out_t: np.ndarray,
                       out_next: np.ndarray) -> float:
    """sum M (O_t - W(O_{t+1}))^2 / sum M for one pair; flow and mask from the INPUT frames.

    Images in [0, 255] in, error in [0, 1] units; the squared error is averaged over the three
    channels, so E stays in [0, 1].
    """
    forward = compute_flow(source_t, source_next)
    backward = compute_flow(source_next, source_t)
    mask = reliability_mask(forward, backward)
    warped = warp(out_next, forward)
    diff = (np.asarray(out_t, np.float32) - warped) / 255.0
    per_pixel = np.mean(diff ** 2, axis=-1)
    total = float(mask.sum())
    if total == 0:
        return float(per_pixel.mean())
    return float((mask * per_pixel).sum() / total)


def warping_error(source: Sequence[np.ndarray], output: Sequence[np.ndarray],
                  cuts: Iterable[int] = ()) -> float:
    """Mean warping error over consecutive pairs; pairs that straddle a shot cut are left out."""
    if len(source) != len(output):
        raise ValueError(f"{len(source)} source frames but {len(output)} output frames")
    starts = set(cuts)
    errors = []
    for t in range(len(source) - 1):
        if t + 1 in starts:
            continue
        out_t, out_next = output[t], output[t + 1]
        if out_t.shape[:2] != source[t].shape[:2]:
            hw = (source[t].shape[1], source[t].shape[0])
            out_t, out_next = (cv2.resize(np.asarray(o, np.float32), hw, interpolation=cv2.INTER_AREA)
                               for o in (out_t, out_next))
        errors.append(pair_warping_error(source[t], source[t + 1], out_t, out_next))
    return float(np.mean(errors)) if errors else float("nan")


def style_content_distances(image: np.ndarray, content: np.ndarray, style: np.ndarray,
                            extractor) -> tuple[float, float]:
    """(style distance, content distance) of ``image`` under one fixed VGG-19 evaluator.

    Content: conv4_2, relative squared error ||F - P||^2 / ||P||^2. Style: conv1_1..conv5_1,
    relative Gram error, averaged over the five layers. Evaluated at the image's own size; the
    content is resized to it and the style to the same longest side.
    """
    from pipeline.core.arrays import fit_longest, resize
    from pipeline.core.tfsetup import tf

    image = np.asarray(image, np.float32)
    hw = image.shape[:2]
    content = resize(np.asarray(content, np.float32), hw)
    style = resize(np.asarray(style, np.float32), fit_longest(style, max(hw)))
    missing = {CONTENT_LAYER, *STYLE_LAYERS} - set(extractor.layers)
    if missing:
        raise ValueError(f"the extractor lacks layers {sorted(missing)}")
    feats_x = extractor(tf.constant(image[None]))
    feats_c = extractor(tf.constant(content[None]))
    feats_s = extractor(tf.constant(style[None]))
    content_distance = float(losses.content_layer_loss(feats_x[CONTENT_LAYER], feats_c[CONTENT_LAYER], "relative"))
    style_distance = float(np.mean([float(losses.style_layer_loss(
        feats_x[name], losses.gram(feats_s[name], "relative"), "relative")) for name in STYLE_LAYERS]))
    return style_distance, content_distance


def texture_distance(image: np.ndarray, reference: np.ndarray, extractor) -> float:
    """Relative Gram error of ``image`` against ``reference`` (same size) over conv1_1..conv5_1, as
    the style distance measures it: how much of a frame's brush texture a copy of it (an encoded
    and decoded file, say) lost or changed. 0 for the frame itself."""
    from pipeline.core.tfsetup import tf

    missing = set(STYLE_LAYERS) - set(extractor.layers)
    if missing:
        raise ValueError(f"the extractor lacks layers {sorted(missing)}")
    got = extractor(tf.constant(np.asarray(image, np.float32)[None]))
    want = extractor(tf.constant(np.asarray(reference, np.float32)[None]))
    return float(np.mean([float(losses.style_layer_loss(got[name], losses.gram(want[name], "relative"), "relative"))
                          for name in STYLE_LAYERS]))
