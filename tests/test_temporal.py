"""Flow, warping, reliability masks, cut detection, the temporal loss and the fixed metrics."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline.core.metrics import style_content_distances, warping_error
from pipeline.core.stylizer import Stylizer
from pipeline.core.temporal import compute_flow, reliability_mask, warp
from pipeline.core.types import Targets, TemporalTarget
from pipeline.media.cuts import detect_cuts


def texture(h: int, w: int, seed: int = 0, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Smooth random texture with structure at several scales (what flow needs to lock on)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w), np.float32)
    for sigma, amp in ((1.0, 0.4), (3.0, 0.8), (8.0, 1.0)):
        noise = rng.normal(0, 1, (h, w)).astype(np.float32)
        out += amp * cv2.GaussianBlur(noise, (0, 0), sigma) * sigma
    out = (out - out.min()) / (out.max() - out.min()) * 200 + 25
    return np.clip(np.stack([out * t for t in tint], -1), 0, 255).astype(np.float32)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """image moved by (dx, dy): result(x) = image(x - d), edges wrap (callers compare the interior)."""
    return np.roll(np.roll(image, dy, axis=0), dx, axis=1)


# ---------------------------------------------------------------- temporal loss
def test_temporal_loss_gradient_lives_exactly_where_the_mask_is_one(extractor, photo, painting):
    config = config_mod.load(overrides={"loss.content_weight": 0.0, "loss.style_weight": 0.0,
                                        "loss.tv_weight": 0.0, "image.scales": [1.0]})
    stylizer = Stylizer(config, extractor=extractor)
    h, w = photo.shape[:2]
    targets = Targets(stylizer.content_targets(photo), stylizer.style_grams([painting], [1.0], (h, w)))
    warped = np.clip(photo + 20.0, 0, 255)
    image = np.clip(photo - 20.0, 0, 255)
    mask = np.zeros((h, w), np.float32)
    mask[:, : w // 2] = 1.0
    weight = 3.0
    loss, terms, grad = stylizer.evaluate(image, targets, TemporalTarget(warped, mask), temporal_weight=weight)
    assert terms["temporal"] > 0 and loss == pytest.approx(weight * terms["temporal"], rel=1e-5)
    reliable, unreliable = mask == 1, mask == 0
    differs = np.abs(image - warped).min(axis=-1) > 1
    assert np.all(np.abs(grad[reliable & differs]) > 0)
    assert np.all(grad[unreliable] == 0.0)
    # d/dx of w * mean(c (x - warped)^2 / 255^2) over H*W*3 values.
    expected = weight * 2.0 * mask[..., None] * (image - warped) / 255.0 ** 2 / (h * w * 3)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-12)


# ---------------------------------------------------------------- flow and warping
def test_warping_by_a_known_translation_recovers_the_frame():
    a = texture(64, 80, seed=1)
    b = shifted(a, 3, -2)  # b(x) = a(x - d): b's pixels are found in a at x + (-d)
    flow = np.zeros((64, 80, 2), np.float32)
    flow[..., 0], flow[..., 1] = -3.0, 2.0
    recovered = warp(a, flow)
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(recovered[inner] - b[inner]).max() < 1e-3
    # A half-pixel shift: bilinear sampling matches the average of the two neighbours.
    half = np.zeros_like(flow)
    half[..., 0] = 0.5
    np.testing.assert_allclose(warp(a, half)[inner], 0.5 * (a + shifted(a, -1, 0))[inner], atol=1e-3)


def test_dis_flow_on_a_translated_texture_is_close_to_the_true_shift():
    a = texture(96, 128, seed=2)
    b = shifted(a, 4, -3)
    flow = compute_flow(b, a)  # on b's grid, pointing into a: -d
    inner = flow[12:-12, 12:-12]
    assert abs(np.median(inner[..., 0]) - (-4.0)) < 0.25, np.median(inner[..., 0])
    assert abs(np.median(inner[..., 1]) - 3.0) < 0.25, np.median(inner[..., 1])
    assert np.mean(np.linalg.norm(inner - np.array([-4.0, 3.0]), axis=-1) < 0.5) > 0.9


def test_dis_flow_follows_a_smooth_deformation_of_a_photograph_to_about_a_tenth_of_a_pixel():
    """Real motion is not one shift: a photograph bent by a smooth field (2.5 +- 1.5 px across, up
    to 1 px down). DIS stopped at half resolution (OpenCV's MEDIUM preset as it comes) misses it by
    0.15 px on average at 192 px; run to full resolution, by 0.09 px."""
    import skimage.data

    from pipeline.core.arrays import fit_longest, resize

    image = skimage.data.coffee().astype(np.float32)
    a = resize(image, fit_longest(image, 192))
    h, w = a.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = 2.5 + 1.5 * np.sin(2 * np.pi * ys / h)
    v = np.cos(2 * np.pi * xs / w)
    b = cv2.remap(a, xs - u, ys - v, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)  # a(x) = b(x + d)
    flow = compute_flow(a, b)
    error = np.hypot(flow[..., 0] - u, flow[..., 1] - v)[8:-8, 8:-8]
    assert error.mean() < 0.11 and np.percentile(error, 90) < 0.2, (error.mean(), np.percentile(error, 90))


def test_reliability_mask_keeps_the_interior_and_drops_what_leaves_the_frame():
    a = texture(96, 128, seed=3)
    b = shifted(a, 5, 0)
    backward, forward = compute_flow(b, a), compute_flow(a, b)
    mask = reliability_mask(backward, forward)
    assert mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    assert mask[10:-10, 12:-12].mean() > 0.9
    # b's left 5 columns came from outside a (they wrapped round): flow points out of the frame there.
    assert mask[:, :4].mean() < 0.1
    # A reverse flow that does not undo the flow (here: the same direction) fails the check everywhere.
    bogus = np.zeros_like(forward)
    bogus[..., 0] = -5.0
    assert reliability_mask(backward, bogus).mean() < 0.05


# ---------------------------------------------------------------- cuts
def test_a_cut_is_detected_at_the_right_index_and_short_flashes_are_merged():
    first = [shifted(texture(72, 96, seed=4), i, 0) for i in range(10)]
    second = [shifted(texture(72, 96, seed=5, tint=(0.4, 0.8, 1.0)), 0, i) for i in range(10)]
    frames = first + second
    assert detect_cuts(frames, threshold=0.15, min_shot=4) == [0, 10]
    # A two-frame flash after the cut is shorter than min_shot: no second cut there.
    flash = frames[:12] + [texture(72, 96, seed=6, tint=(1.0, 0.3, 0.2))] * 2 + frames[12:]
    cuts = detect_cuts(flash, threshold=0.15, min_shot=4)
    assert cuts[:2] == [0, 10] and 12 not in cuts and 13 not in cuts
    assert detect_cuts([], 0.15, 4) == []


# ---------------------------------------------------------------- metrics
def test_warping_error_is_zero_for_a_static_clip_and_larger_for_a_flickering_one():
    base = texture(64, 96, seed=7)
    static = [base.copy() for _ in range(6)]
    assert warping_error(static, static) < 1e-8
    flicker = [np.clip(base + (25.0 if i % 2 else -25.0), 0, 255) for i in range(6)]
    # A moving source stylized consistently is stable; flicker is not.
    moving = [shifted(base, 2 * i, 0) for i in range(6)]
    assert warping_error(moving, moving) < 2e-4
    assert warping_error(static, flicker) > 0.02


def test_style_content_distances_are_zero_on_their_own_targets(extractor, photo, painting):
    style_small = cv2.resize(painting, (photo.shape[1], photo.shape[1]), interpolation=cv2.INTER_AREA)
    s_photo, c_photo = style_content_distances(photo, photo, painting, extractor)
    assert c_photo < 1e-6 and s_photo > 0.1
    s_style, c_style = style_content_distances(style_small, photo, painting, extractor)
    assert s_style < s_photo / 10 and c_style > 0.1


def test_composite_flow_adds_up_the_steps_and_loses_pixels_that_leave():
    from pipeline.core.temporal import composite_flow

    base = texture(64, 96, seed=3)
    frames = [shifted(base, 2 * t, 0) for t in range(5)]  # 2 px right per frame, 8 px in all
    flow, mask = composite_flow(frames)
    inner = mask > 0.5
    assert inner.mean() > 0.6
    # on the last frame's grid, each reliable pixel is found 8 px to the left in the first frame
    assert abs(float(np.median(flow[..., 0][inner])) + 8.0) < 0.5
    assert abs(float(np.median(flow[..., 1][inner]))) < 0.5
    # the 8 columns that entered from the left during the pan have no source in the first frame
    assert mask[:, :6].mean() < 0.1
    with pytest.raises(ValueError):
        composite_flow(frames[:1])
    # computed on half-size copies and scaled back: the same answer on the full grid
    flow_small, mask_small = composite_flow(frames, max_side=48)
    assert flow_small.shape == flow.shape and mask_small.shape == mask.shape
    both = (mask_small > 0.5) & inner
    assert both.mean() > 0.5
    assert abs(float(np.median(flow_small[..., 0][both])) + 8.0) < 1.0
