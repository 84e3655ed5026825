"""Optical flow, warping and reliability masks (Ruder et al. 2016). OpenCV only, no TensorFlow.

Flow convention (OpenCV's): ``flow = compute_flow(a, b)`` lives on a's pixel grid and says where
each pixel of ``a`` is found in ``b``: a(x) ~= b(x + flow(x)). So ``warp(b, flow)`` brings ``b``
into ``a``'s frame. To carry stylized frame t-1 into frame t, use ``compute_flow(frame_t, frame_{t-1})``.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

_DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
# The MEDIUM preset stops one pyramid level short of the frame (finest scale 1: half resolution),
# coarse on working-size frames: a source frame carried along that flow missed the next one by
# 1.5-2x the photometric error of the full-resolution level (4 real shots at 192 px). It costs
# 2-4x the flow's time (43 ms a flow at 512x218, 248 ms at 1280x544), on a thread beside the
# optimisation.
_DIS_FINEST_SCALE = 0


def _gray_u8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(np.asarray(image, np.float32), cv2.COLOR_RGB2GRAY)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def compute_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense DIS flow (H, W, 2) float32 on a's grid with a(x) ~= b(x + flow(x)); images RGB [0, 255]."""
    dis = cv2.DISOpticalFlow_create(_DIS_PRESET)
    dis.setFinestScale(_DIS_FINEST_SCALE)
    flow = dis.calc(_gray_u8(a), _gray_u8(b), None)
    return np.asarray(flow, np.float32)


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Samples ``image`` at x + flow(x) (bilinear; edges replicated). Keeps the dtype family float32."""
    map_x, map_y = _sample_grid(flow)
    return cv2.remap(np.asarray(image, np.float32), map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def carry(stylized: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Carries a stylized frame along ``flow`` (as ``warp`` does), keeping its fine texture; [0, 255].

    Bilinear sampling at a sub-pixel offset is a low-pass filter. Applied frame after frame it
    wipes out the brush-stroke texture that a chain carries (on a slow shot, the Laplacian variance
    of the carried texture fell from 1335 to 384 in 23 frames), and the optimisation then paints the
    lost detail back differently on every frame: flicker. Lanczos (8x8) keeps it (1368 to 1619);
    the clip removes its ringing past the pixel range.
    """
    map_x, map_y = _sample_grid(flow)
    out = cv2.remap(np.asarray(stylized, np.float32), map_x, map_y, interpolation=cv2.INTER_LANCZOS4,
                    borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 255.0)


# The light of a scene changes without anything moving: fades, a camera's exposure settling, a lamp
# switched on. Where the stylization follows the content's brightness (preserve_colors), the temporal
# loss would hold the previous frame's light instead: through a fade to 20% over 14 frames (Big Buck
# Bunny, luminance colours), independent frames fell from 117 to 23 grey levels and the chain only
# to 54. So the carried frame takes the content's own change of light, smoothed over a 32nd of the
# frame, 4 px at least (light varies slowly; the ratio of two single pixels is noise).
LIGHT_GAIN_RANGE = (0.25, 4.0)
LIGHT_DARK = 4.0  # grey levels added to both sides of the ratio: in near-black areas it is noise


def follow_light(carried: np.ndarray, frame: np.ndarray, previous: np.ndarray, flow: np.ndarray,
                 mask: np.ndarray) -> np.ndarray:
    """``carried`` (the previous stylized frame already carried along ``flow``) times the change of
    light from ``previous`` (the content it was made from) to ``frame``, per channel, measured on
    the reliable pixels of ``mask``; where none are near, unchanged. [0, 255]."""
    h, w = frame.shape[:2]
    sigma = max(4.0, max(h, w) / 32)
    # The gain varies over tens of pixels: measured on frames reduced 4 px to 1 (the blur of a 1080p
    # frame at full size took 0.6 s a channel) and brought back up bilinearly.
    factor = max(1, int(sigma // 4))
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    weight = cv2.resize(np.asarray(mask, np.float32), small, interpolation=cv2.INTER_AREA)
    before = cv2.resize(warp(previous, flow), small, interpolation=cv2.INTER_AREA) * weight[..., None]
    now = cv2.resize(np.asarray(frame, np.float32), small, interpolation=cv2.INTER_AREA) * weight[..., None]
    sigma /= factor
    near = np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-6)[..., None]
    gain = ((cv2.GaussianBlur(now, (0, 0), sigma) / near + LIGHT_DARK)
            / (cv2.GaussianBlur(before, (0, 0), sigma) / near + LIGHT_DARK))
    trust = np.clip(near / 0.25, 0.0, 1.0)  # a quarter of the neighbourhood reliable: fully trusted
    gain = 1.0 + (np.clip(gain, *LIGHT_GAIN_RANGE) - 1.0) * trust
    if factor > 1:
        gain = cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.asarray(carried, np.float32) * gain, 0.0, 255.0)


# Gatys et al.'s loss paints the style's light whatever the frame's: Big Buck Bunny faded to black
# over 8 frames (128 px, starry_night) kept 102 grey levels painted frame by frame and 107 in the
# chain, a bright painting of a black screen. Where the content's colours are not preserved (with
# them the painting keeps each frame's light already), a frame darker than its shot's usual light
# (the median) is painted as much darker. Past a knee: exposure drift, a passing shadow or a pan
# from shade into sun (bikes: 0.74 of its shot's usual light) leave the painting as it is.
FADE_KNEE = 0.7
# The least light a shot is taken to have as usual: a black leader, or a shot that is little more
# than its fade, still goes dark.
FADE_FLOOR = 40.0
# A dip to white: frames brighter than this (and than their shot's usual light, past the knee) are
# taken towards white. Only there, because a shot that is mostly a fade to black has a dark median
# and its ordinary frames are brighter than that. A bright shot (a white page, snow; its usual
# light above this) is left as painted. But a few white frames that cut detection made a shot of
# their own, right after a shot fading up to white, take that shot's usual light: the fade goes on.
WHITE_FROM = 200.0
WHITE_SPLIT_FRAMES = 4  # at most this many frames in such a split-off shot


def fade_gains(levels: Sequence[float], shot_starts: Iterable[int],
               dissolves: Iterable[tuple[int, int]] = ()) -> np.ndarray:
    """Per frame, the factors (towards black, towards white) in [0, 1] from the content's mean grey
    level per frame ([0, 255]; NaN where unknown: factor 1) and the frames where shots start.

    ``dissolves``: frames [first, stop) that mix two shots. They are left as painted (a dissolve
    into a darker shot is no fade), and the shots on either side keep their own usual light."""
    levels = np.asarray(levels, np.float64)
    gains = np.ones((len(levels), 2))
    mixes = {a: b for a, b in dissolves if 0 <= a < b <= len(levels)}
    bounds = sorted({0, len(levels), *(s for s in shot_starts if 0 < s < len(levels)), *mixes, *mixes.values()})
    fading_up: tuple[float, float] | None = None  # (usual light, last level) of a shot that ended rising to white
    for a, b in itertools.pairwise(bounds):
        shot = levels[a:b]
        if mixes.get(a) == b or np.isnan(shot).all():
            fading_up = None
            continue
        usual = float(np.nanmedian(shot))
        white_usual: float | None = usual if usual <= WHITE_FROM else None
        carried = (fading_up is not None and b - a <= WHITE_SPLIT_FRAMES and not np.isnan(shot[0])
                   and shot[0] >= fading_up[1])
        if carried:
            white_usual = fading_up[0]  # the fade before the cut goes on
        with np.errstate(invalid="ignore"):
            gains[a:b, 0] = shot / (FADE_KNEE * max(usual, FADE_FLOOR))
            if white_usual is not None:
                gains[a:b, 1] = (255.0 - shot) / max(min(255.0 - WHITE_FROM, FADE_KNEE * (255.0 - white_usual)), 1e-6)
        rising = b - a >= 2 and shot[-1] > shot[-2] and gains[b - 1, 1] < 1.0
        fading_up = (usual, float(shot[-1])) if rising and not carried else None
    gains[np.isnan(gains)] = 1.0
    return np.clip(gains, 0.0, 1.0)


def follow_fade(painted: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """A painted frame [0, 255] taken towards black and towards white by ``fade_gains``'s factors."""
    to_black, to_white = gains
    if to_black >= 1.0 and to_white >= 1.0:
        return painted
    out = np.asarray(painted, np.float32) * np.float32(to_black)
    return 255.0 - (255.0 - out) * np.float32(to_white)


def reliability_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """1 where warping by ``forward`` is trustworthy, 0 at disocclusions and motion boundaries.

    ``forward`` is the flow used for warping (on the grid where the mask lives, pointing into the
    other frame), ``backward`` the flow the other way. Ruder et al. (2016), eq. 5-6:
    - forward-backward check: |w + w~|^2 > 0.01 (|w|^2 + |w~|^2) + 0.5, with w~ the backward flow
      sampled where ``forward`` points;
    - motion boundary: |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002.
    Pixels whose flow leaves the frame are also 0: nothing there to carry over.
    """
    w = np.asarray(forward, np.float32)
    back = warp(np.asarray(backward, np.float32), w)
    sum_sq = np.sum((w + back) ** 2, axis=-1)
    mag = np.sum(w ** 2, axis=-1)
    occluded = sum_sq > 0.01 * (mag + np.sum(back ** 2, axis=-1)) + 0.5
    du_y, du_x = np.gradient(w[..., 0])
    dv_y, dv_x = np.gradient(w[..., 1])
    boundary = du_x ** 2 + du_y ** 2 + dv_x ** 2 + dv_y ** 2 > 0.01 * mag + 0.002
    h, wd = w.shape[:2]
    map_x, map_y = _sample_grid(w)
    outside = (map_x < 0) | (map_x > wd - 1) | (map_y < 0) | (map_y > h - 1)
    return (~(occluded | boundary | outside)).astype(np.float32)


@dataclass(frozen=True)
class Motion:
    """What carries frame t-1 onto frame t; depends on the input frames only, so it can be computed ahead."""

    backward: np.ndarray  # flow on frame t's grid into frame t-1
    mask: np.ndarray  # (H, W) reliability of that flow


def motion_between(previous: np.ndarray, frame: np.ndarray) -> Motion:
    backward = compute_flow(frame, previous)
    forward = compute_flow(previous, frame)
    return Motion(backward, reliability_mask(backward, forward))


def with_motion(frames: Iterable[np.ndarray], hold: bool = False,
                flow: bool = True) -> Iterator[tuple[np.ndarray, Motion | None, bool]]:
    """(frame, motion from the last frame painted before it, whether it is held) for consecutive
    frames, the first always painted, with no motion. With ``hold``, a frame that ``repeats`` the
    last frame painted is held (no motion), and the next frame's motion starts from the frame
    painted. Without ``flow``, no motion is computed.

    Run it in a background thread (OpenCV releases the GIL) and the optimisation of frame t
    never waits for the flow of frame t+1.
    """
    painted = None
    for frame in frames:
        frame = np.asarray(frame, np.float32)
        if painted is None:
            yield frame, None, False
        elif hold and repeats(frame, painted):
            yield frame, None, True
            continue
        else:
            yield frame, (motion_between(painted, frame) if flow else None), False
        painted = frame


# A frame that repeats the one before (animation drawn on twos or threes, the duplicates of a frame
# rate conversion such as 24 -> 25 fps, a freeze) is delivered as that frame's painting instead of
# being painted again, which re-synthesises its texture and makes a still picture crawl. Judged on
# frames reduced to HOLD_SIDE px (area averaging evens out codec noise): a repeat differs there by at
# most HOLD_LEVELS grey levels, and by at most HOLD_CONTRAST of the picture's own spread (the
# standard deviation of its grey levels), since motion changes a dark or flat picture by less.
# Measured on three real clips read at 512 px: consecutive frames of real motion differ by at least
# 0.098 of the spread (a slow static shot; 0.14 and 0.22 on handheld and a pan), so darkened to a
# tenth none is held; of repeats made by ffmpeg (a 12 fps source shown at 24 fps) and encoded as
# H.264 crf 18-28, MPEG-4 or VP9, 60-100% of pairs are held (a phone clip shown at 193x144: 2-62% as
# H.264 or MPEG-4; the rest are painted like any other frame). Compared with the last frame
# painted, not the one before, so a slow change cannot slip through a frame at a time.
HOLD_SIDE = 48
HOLD_LEVELS = 3.0
HOLD_CONTRAST = 0.06


def hold_view(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = HOLD_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(np.asarray(frame, np.float32), size, interpolation=cv2.INTER_AREA)


def repeats(frame: np.ndarray, painted_content: np.ndarray) -> bool:
    """Whether ``frame`` repeats ``painted_content`` (the content of the last frame painted) within
    codec noise, so that frame's painting can stand for it; RGB [0, 255], same size."""
    if frame.shape != painted_content.shape:
        return False
    seen, painted = hold_view(frame), hold_view(painted_content)
    spread = float(cv2.cvtColor(painted, cv2.COLOR_RGB2GRAY).std())
    return float(np.abs(seen - painted).max()) <= min(HOLD_LEVELS, HOLD_CONTRAST * spread)


@dataclass(frozen=True)
class KeyStep:
    """One key frame of a shot: where chains start, the same on every worker that needs it.

    The shot's first key frame is fresh; a later one (``flow`` set) starts from the previous key
    frame carried over by the composite optical flow between them, so that chains growing from
    different key frames carry the same texture where they meet.
    """

    frame: np.ndarray  # the key frame's content
    ahead: Sequence[np.ndarray]  # the frames after it in time, which settle it
    flow: np.ndarray | None = None  # on this frame's grid into the previous key frame
    mask: np.ndarray | None = None  # where that flow is reliable


def composite_flow(frames: Iterable[np.ndarray], max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flow on the last frame's grid into the first, composed frame by frame, and its reliability.

    ``warp(stylized_first, flow)`` carries a stylization of the first frame onto the last; the
    mask is 1 only where every step was reliable (one occlusion on the way and the pixel is lost).
    Composing flows and warping once avoids the blur of warping an image many times. Frames are
    consumed one by one (a long stretch of video is never held in memory). With ``max_side``, the
    flows are computed on copies that small and scaled up: thousands of steps then cost seconds
    to minutes, whatever the working size.
    """
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("composite_flow needs at least two frames")
    h, w = np.asarray(first).shape[:2]
    size = (w, h)
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(8, round(w * scale)), max(8, round(h * scale)))

    def prepared(frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame, np.float32)
        return frame if size == (w, h) else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    earlier = prepared(first)
    flow = mask = None
    for frame in frames:
        later = prepared(frame)
        back = compute_flow(later, earlier)
        step_mask = reliability_mask(back, compute_flow(earlier, later))
        if flow is None:
            flow, mask = back, step_mask
        else:
            # a pixel of the later frame: one step back, then the composed flow from there
            flow = back + warp(flow, back)
            mask = step_mask * (warp(mask, back) > 0.999)
        earlier = later
    if flow is None:
        raise ValueError("composite_flow needs at least two frames")
    if size != (w, h):
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= w / size[0]
        flow[..., 1] *= h / size[1]
        mask = (cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR) > 0.999).astype(np.float32)
    return flow.astype(np.float32), mask.astype(np.float32)
