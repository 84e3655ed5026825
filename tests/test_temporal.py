"""Flow, warping, reliability masks, cut detection, the temporal loss and the fixed metrics."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from conftest import shared_image

from pipeline import config as config_mod
from pipeline.core.metrics import style_content_distances, warping_error
from pipeline.core.stylizer import Stylizer
from pipeline.core.temporal import compute_flow, reliability_mask, warp
from pipeline.core.types import Targets, TemporalTarget
from pipeline.media.cuts import DissolveFinder, detect_cuts


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


def lavfi_clip(path, graph: str, frames: int, *inputs: str) -> list[np.ndarray]:
    """A clip made by ffmpeg (``inputs``: lavfi sources or other input arguments, ``graph``: a
    filter graph ending in [v]), H.264 as an editor exports it, read back as cut detection sees it."""
    import subprocess

    from pipeline.media.frames import ffmpeg_exe, read_frames

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *inputs,
                    "-filter_complex", graph, "-map", "[v]", "-frames:v", str(frames), "-c:v", "libx264", "-crf", "18",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return list(read_frames(path, 160, glance=True))


def dissolves_in(frames: list[np.ndarray]) -> list[tuple[int, int]]:
    from pipeline.media.cuts import find_dissolves

    return find_dissolves(frames, 25, detect_cuts(frames, 0.15, 4))


def test_a_dissolve_is_found_with_its_span_and_motion_fades_and_cuts_are_not(tmp_path):
    two = ["-f", "lavfi", "-i", "testsrc=size=160x90:rate=25", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25"]
    # 8 frames of cross-fade from frame 12 (pure first shot): the second shows from 13, the first until 19
    dissolve = lavfi_clip(tmp_path / "dissolve.mp4", "[0:v][1:v]xfade=transition=fade:duration=0.32:offset=0.48[v]",
                          40, *two)
    (first, last), = dissolves_in(dissolve)
    assert abs(first - 13) <= 2 and abs(last - 19) <= 2, (first, last)
    # a moving pattern, a fade through black (out, cut, in), a brightness ramp, a hard cut: no dissolve
    assert dissolves_in(lavfi_clip(tmp_path / "moving.mp4", "[0:v]null[v]", 40, *two[:4])) == []
    through_black = ("[0:v]fade=t=out:start_frame=8:nb_frames=10[a];[1:v]fade=t=in:start_frame=0:nb_frames=10[b];"
                     "[a][b]concat=n=2[v]")
    assert dissolves_in(lavfi_clip(tmp_path / "black.mp4", through_black, 40,
                                   "-t", "0.8", *two[:4], "-t", "1", *two[4:])) == []
    assert dissolves_in(lavfi_clip(tmp_path / "ramp.mp4", "[0:v]eq=brightness=0.008*n:eval=frame[v]", 40,
                                   *two[4:])) == []
    cut = lavfi_clip(tmp_path / "cut.mp4", "[0:v][1:v]concat=n=2[v]", 40, "-t", "0.8", *two[:4], "-t", "1", *two[4:])
    assert detect_cuts(cut, 0.15, 4) == [0, 20] and dissolves_in(cut) == []
    # Scored in batches over threads while frames arrive and old ones go: the same as on one thread.
    frames = dissolve + cut + dissolve  # 120 frames, two cuts
    starts = set(detect_cuts(frames, 0.15, 4))
    one, pooled = DissolveFinder(25, threads=1), DissolveFinder(25, threads=3)
    for index, frame in enumerate(frames):
        one.push(frame, index in starts)
        pooled.push(frame, index in starts)
    assert one.scores == pooled.scores and one.spans() == pooled.spans() == [(first, last), (first + 80, last + 80)]


def test_a_stray_pair_of_frames_before_a_dissolve_does_not_cut_it_short():
    """Two frames scoring as a mix shortly before a dissolve (motion that fooled the test) fit a
    ramp that reaches the next shot only at its window's end, inside the dissolve; taken as a
    dissolve, it would start the next shot's chain there and drop the real one as overlapping."""
    rng = np.random.default_rng(0)
    first_shot, next_shot = (cv2.resize(rng.uniform(0, 255, (23, 40, 3)).astype(np.float32), (160, 90))
                             for _ in range(2))

    class Scored(DissolveFinder):  # scores given, weights and ramps measured on the frames
        def _best(self, m: int) -> tuple[float, int]:
            return (0.2, 3) if 61 <= m <= 89 else (0.07, 12) if m in (48, 49) else (0.0, 0)

    finder = Scored(25, threads=1)
    for t in range(150):  # the dissolve: frames 61-89
        mix = np.clip((t - 60) / 30, 0, 1)
        finder.push((1 - mix) * first_shot + mix * next_shot)
    (first, last), = finder.spans()
    assert abs(first - 61) <= 2 and abs(last - 89) <= 2, (first, last)


def test_a_slideshow_dissolve_between_photographs_is_found_and_a_cut_between_them_is_not(tmp_path):
    photos = []
    for name in ("tubingen.jpg", "golden_gate.jpg"):
        photos += ["-loop", "1", "-framerate", "25", "-t", "2", "-i", str(shared_image(name))]
    # each photo slowly zoomed into (a slideshow's Ken Burns effect), 50 frames
    zoom = ("scale=640:360:force_original_aspect_ratio=increase,crop=640:360,zoompan=z='1+0.006*on':"
            "x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s=160x90:fps=25,setsar=1,format=yuv420p")
    # 12 frames of dissolve from frame 28 (the first photo alone): the second shows from 29, the first until 39
    frames = lavfi_clip(tmp_path / "dissolve.mp4", f"[0:v]{zoom}[a];[1:v]{zoom}[b];[a][b]xfade=transition=fade:"
                        f"duration=0.48:offset=1.12[v]", 78, *photos)
    (first, last), = dissolves_in(frames)
    assert abs(first - 29) <= 2 and abs(last - 39) <= 2, (first, last)
    frames = lavfi_clip(tmp_path / "cut.mp4", f"[0:v]{zoom}[a];[1:v]{zoom}[b];[a][b]concat=n=2[v]", 100, *photos)
    assert detect_cuts(frames, 0.15, 4) == [0, 50] and dissolves_in(frames) == []


def test_fog_drifting_over_a_still_scene_is_no_dissolve():
    """Every frame is a mix of the scene and a moving veil, to the end of the clip: frames score as
    mixes all along, but no ramp ever reaches a frame of a next picture alone."""
    from pipeline.media.cuts import DISSOLVE_THRESHOLD

    scene = texture(90, 160, seed=8)
    veil = cv2.resize(np.random.default_rng(1).uniform(0, 255, (12, 40)).astype(np.float32), (400, 90))
    finder = DissolveFinder(25)
    for t in range(60):
        finder.push(np.clip(0.6 * scene + 0.4 * veil[:, 2 * t:2 * t + 160, None], 0, 255))
    assert finder.spans() == []
    assert sum(score > DISSOLVE_THRESHOLD for score, _ in finder.scores.values()) > 30


def test_the_dissolve_finder_keeps_only_the_frames_its_windows_need(tmp_path):
    from pipeline.media.cuts import DISSOLVE_BATCH, END_PAD

    frames = lavfi_clip(tmp_path / "long.mp4", "[0:v]null[v]", 150, "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25")
    finder = DissolveFinder(25)
    for frame in frames:
        finder.push(frame)
    assert len(finder.gray) <= 2 * finder.reach + END_PAD + DISSOLVE_BATCH
    assert finder.spans() == [] and len(finder.scores) == 150
    # back-to-back mixes (a slideshow that never holds a picture): still a bounded window, not every frame
    rng = np.random.default_rng(3)
    pictures = [cv2.resize(rng.uniform(0, 255, (23, 40, 3)).astype(np.float32), (160, 90)) for _ in range(14)]
    mixing, kept = DissolveFinder(25), 0
    for t in range(240):
        k, r = divmod(t, 20)
        mixing.push((1 - r / 20) * pictures[k] + r / 20 * pictures[k + 1])
        kept = max(kept, len(mixing.gray))
    assert kept <= 5 * mixing.reach + 2 * END_PAD + DISSOLVE_BATCH, kept  # a group of 3 reaches, its windows, pads
    spans = mixing.spans()
    assert spans and all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans  # no chain starts inside another's
    # frames too small to judge (DIS flow refuses under 12 px) are passed over, for VGG's size check to report
    tiny = DissolveFinder(25)
    for frame in frames[:60]:
        tiny.push(cv2.resize(frame, (10, 8), interpolation=cv2.INTER_AREA))
    assert tiny.spans() == []


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
