"""The chain's carried texture: kept sharp along sub-pixel motion, far steadier than frames painted apart, and
lit as the content is."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline import config as config_mod
from pipeline.core.chain import stylize_sequence
from pipeline.core.metrics import warping_error
from pipeline.core.stylizer import Stylizer
from pipeline.core.temporal import carry, fade_gains, follow_fade, follow_light, repeats, warp


def shifted(image: np.ndarray, dx: float) -> np.ndarray:
    """``image`` moved right by ``dx`` pixels (sub-pixel, Lanczos), edges reflected."""
    matrix = np.float32([[1, 0, dx], [0, 1, 0]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)


def detail(image: np.ndarray) -> float:
    gray = cv2.cvtColor(np.asarray(image, np.float32), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_32F)[8:-8, 8:-8].var())


def test_carrying_texture_along_sub_pixel_motion_keeps_its_detail(painting):
    """Twelve moves of half a pixel: the carried texture keeps most of its detail, a bilinear warp nearly all is lost."""
    texture = np.asarray(painting, np.float32)
    h, w = texture.shape[:2]
    there = np.zeros((h, w, 2), np.float32)
    there[..., 0] = 0.5  # each pixel samples half a pixel to its right, then back
    back = -there
    carried, blurred = texture, texture
    for step in range(12):
        flow = there if step % 2 == 0 else back
        carried, blurred = carry(carried, flow), warp(blurred, flow)
    assert carried.min() >= 0.0 and carried.max() <= 255.0
    # Any kernel loses some detail at the Nyquist rate on half-pixel moves (0.78 after the first
    # round trip here), but it must not keep losing it: 0.72 after six, against 0.05 for bilinear.
    assert detail(carried) > 0.6 * detail(texture)
    assert detail(blurred) < 0.15 * detail(texture)


def test_the_flow_chain_flickers_far_less_than_frames_painted_apart(extractor, photo, painting):
    """A slow sub-pixel pan: the chain's warping error is a small fraction of independent frames',
    at a comparable style distance."""
    from pipeline.core.metrics import style_content_distances

    config = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0, "video.settle_frames": 1,
                                        "video.first_frame_iterations": 30, "video.later_frame_iterations": 10})
    stylizer = Stylizer(config, extractor=extractor)
    frames = [shifted(photo, 0.7 * t) for t in range(6)]
    apart = stylize_sequence(stylizer, frames, [painting], [1.0], config, "off")
    chained = stylize_sequence(stylizer, frames, [painting], [1.0], config, "flow")
    error_apart, error_chained = warping_error(frames, apart), warping_error(frames, chained)
    assert error_chained < error_apart / 5, (error_chained, error_apart)
    style_apart, _ = style_content_distances(apart[-1], frames[-1], painting, extractor)
    style_chained, _ = style_content_distances(chained[-1], frames[-1], painting, extractor)
    assert style_chained < 1.3 * style_apart, (style_chained, style_apart)


def lightness(image: np.ndarray) -> float:
    return float(cv2.cvtColor(np.asarray(image, np.float32), cv2.COLOR_RGB2GRAY).mean())


def test_the_carried_frame_takes_the_contents_change_of_light_and_nothing_else(photo, painting):
    """A fade halves the content: the carried painting halves too; where only one side darkens,
    only that side follows; unchanged light (with sensor noise) leaves it as it was; where the flow
    vouches for nothing, nothing is changed."""
    previous = np.asarray(photo, np.float32)
    h, w = previous.shape[:2]
    carried = cv2.resize(np.asarray(painting, np.float32), (w, h))
    still, reliable = np.zeros((h, w, 2), np.float32), np.ones((h, w), np.float32)

    faded = follow_light(carried, previous * 0.5, previous, still, reliable)
    inner = np.s_[8:-8, 8:-8]  # away from the borders' blur; near-black areas keep a little more light
    assert abs(lightness(faded[inner]) / lightness(carried[inner]) - 0.5) < 0.05
    # the strokes are darkened, not blurred or replaced: their detail scales with the light
    strokes = cv2.Laplacian(carried, cv2.CV_32F)
    assert np.abs(cv2.Laplacian(faded, cv2.CV_32F) - 0.5 * strokes)[inner].mean() < 0.05 * np.abs(strokes)[inner].mean()

    lamp = previous.copy()
    lamp[:, w // 2:] *= 0.4  # the right half goes dark, the left stays lit
    half = follow_light(carried, lamp, previous, still, reliable)
    left, right = np.s_[:, : w // 4], np.s_[:, 3 * w // 4:]
    assert abs(lightness(half[left]) / lightness(carried[left]) - 1.0) < 0.1
    assert abs(lightness(half[right]) / lightness(carried[right]) - 0.4) < 0.05

    noisy = previous + np.random.default_rng(0).normal(0, 4, previous.shape).astype(np.float32)
    assert np.abs(follow_light(carried, noisy, previous, still, reliable) - carried).mean() < 1.0
    assert np.array_equal(follow_light(carried, previous * 0.5, previous, still, np.zeros((h, w), np.float32)),
                          np.clip(carried, 0, 255))


def test_with_the_contents_colours_kept_the_chain_follows_a_fade_as_frames_painted_apart_do(extractor, photo,
                                                                                           painting):
    """preserve_colors keeps each frame's light, so through a fade to 30% frames painted apart darken
    with the content; the chain must darken with them rather than hold the first frame's light."""
    config = config_mod.load(overrides={"image.scales": [1.0], "image.preserve_colors": "luminance",
                                        "video.settle_frames": 1, "video.first_frame_iterations": 20,
                                        "video.later_frame_iterations": 10})
    stylizer = Stylizer(config, extractor=extractor)
    frames = [np.asarray(photo, np.float32) * gain for gain in np.linspace(1.0, 0.3, 6)]
    apart = stylize_sequence(stylizer, frames, [painting], [1.0], config, "off")
    chained = stylize_sequence(stylizer, frames, [painting], [1.0], config, "flow")
    assert lightness(apart[-1]) < 0.45 * lightness(apart[0])  # the painting follows the content's light
    assert abs(lightness(chained[-1]) / lightness(apart[-1]) - 1.0) < 0.15, (
        [round(lightness(f)) for f in chained], [round(lightness(f)) for f in apart])


def test_a_dissolve_between_shots_of_different_light_is_no_fade():
    """Dissolved into a brighter shot, a dark shot's frames are below the pair's median; into a darker
    shot, the dissolve's frames sink towards it: neither is a fade. A fade in the next shot still is."""
    from pipeline.batch.segments import plan_segments, planned_dissolves

    def levels(first: float, second: float) -> np.ndarray:  # 16 frames, a dissolve over 16-25, 15 frames
        return np.concatenate([np.full(16, first), np.linspace(first, second, 12)[1:-1], np.full(15, second)])

    specs = plan_segments(41, [0], 0, 3, dissolves=[(16, 25)])
    assert planned_dissolves(specs) == [(16, 26)]
    starts = {s.shot_start for s in specs}
    for first, second in ((50.0, 140.0), (150.0, 40.0)):
        assert np.array_equal(fade_gains(levels(first, second), starts, planned_dissolves(specs)), np.ones((41, 2)))
    # the light of the two shots apart and of the dissolve alike would take these frames for fades
    assert (fade_gains(levels(50.0, 140.0), [0]) < 1).any() and (fade_gains(levels(150.0, 40.0), [0, 26]) < 1).any()
    fading = levels(50.0, 140.0)
    fading[34:] = np.linspace(140, 0, 7)
    to_black = fade_gains(fading, starts, planned_dissolves(specs))[:, 0]
    assert to_black[-1] == 0.0 and np.all(to_black[:34] == 1.0)


def test_fade_gains_follow_fades_and_dips_and_leave_ordinary_light_alone():
    rng = np.random.default_rng(0)
    steady = 110 + rng.uniform(-15, 15, 40)  # exposure drift and passing shadows: +-14%
    gains = fade_gains(steady, [0])
    assert np.array_equal(gains, np.ones((40, 2)))
    fade = np.concatenate([np.full(30, 110.0), np.linspace(110, 0, 11)[1:], np.zeros(3)])
    to_black = fade_gains(fade, [0])[:, 0]
    assert np.all(to_black[:33] == 1.0) and np.all(np.diff(to_black[30:]) <= 0) and np.all(to_black[-4:] == 0.0)
    # a black leader as a shot of its own goes dark; a dim shot beside it keeps the style's light
    leader_then_night = fade_gains(np.concatenate([np.full(10, 4.0), np.full(10, 35.0)]), [0, 10])
    assert np.all(leader_then_night[:10, 0] < 0.2) and np.all(leader_then_night[10:] == 1.0)
    dip = np.concatenate([np.full(20, 120.0), [170, 220, 255, 220, 170], np.full(20, 120.0)])
    to_white = fade_gains(dip, [0])[:, 1]
    assert to_white[22] == 0.0 and 0.0 < to_white[21] < 1.0 and np.all(np.delete(to_white, [21, 22, 23]) == 1.0)
    assert np.array_equal(fade_gains([np.nan, 50.0, np.nan], [0]), np.ones((3, 2)))
    assert np.array_equal(fade_gains(np.full(20, 240.0), [0]), np.ones((20, 2)))  # a white page stays as painted
    # a fade to white whose white frames cut detection split off: they go on to white
    split = fade_gains(np.concatenate([np.full(20, 120.0), [170, 220], [254, 255]]), [0, 22])[:, 1]
    assert split[21] < 1.0 and np.all(split[22:] < 0.05)
    # but a bright shot after one that ends on a bright frame is no fade, nor is a bright shot's glint
    after = fade_gains(np.concatenate([np.full(10, 180.0), [215], np.full(10, 225.0), np.full(10, 228.0)]), [0, 11, 21])
    assert np.all(after[11:] == 1.0)
    assert np.array_equal(fade_gains(np.concatenate([np.full(10, 230.0), [242, 244], np.full(5, 230.0)]), [0]),
                          np.ones((17, 2)))
    painted = np.full((4, 4, 3), 100.0, np.float32)
    assert np.array_equal(follow_fade(painted, (1.0, 1.0)), painted)
    assert follow_fade(painted, (0.5, 1.0)).mean() == 50.0 and follow_fade(painted, (1.0, 0.5)).mean() == 177.5


def test_repeated_frames_are_told_from_motion_through_a_real_encode(tmp_path):
    """Drawings shown twice each (animation on twos) through H.264: the repeats differ by codec
    noise alone and are found; the drawings move by 1.3 px at the working size, and none of those
    steps is taken for a repeat."""
    import subprocess

    import skimage.data

    from pipeline.media.frames import ffmpeg_exe, read_frames

    image = skimage.data.coffee()[..., ::-1]  # BGR for cv2.imwrite
    for index in range(16):
        step = index // 2
        cv2.imwrite(str(tmp_path / f"{index:02d}.png"), image[:, 2 * step:2 * step + 384])
    clip = tmp_path / "twos.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-framerate", "24", "-i", str(tmp_path / "%02d.png"),
                    "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(clip)], check=True)
    frames = list(read_frames(clip, 256))
    assert len(frames) == 16
    found = [repeats(frames[i], frames[i - 1]) for i in range(1, 16)]
    assert found == [i % 2 == 1 for i in range(1, 16)]
    # The same footage dark and flat (a twentieth of its contrast): motion changes it by less than
    # 3 grey levels at 48 px, and is still told from a repeat.
    dim = [128.0 + (frame - 128.0) * 0.05 for frame in frames]
    assert [repeats(dim[i], dim[i - 1]) for i in range(1, 16)] == found
    # A change of light of 4 grey levels is a change, not a repeat.
    assert not repeats(frames[0] + 4.0, frames[0])
    assert not repeats(frames[0], frames[0][:-2])  # another size is never a repeat


def test_a_repeated_frame_keeps_the_painting_of_the_frame_it_repeats(extractor, photo, painting):
    """Repeats take the painting unchanged and are not optimised; a slow drift, each step within
    the codec noise of the step before, is painted again once it has moved from the frame last painted."""
    config = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0, "video.settle_frames": 0,
                                        "video.first_frame_iterations": 12, "video.later_frame_iterations": 3})
    stylizer = Stylizer(config, extractor=extractor)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1.5, 1.5, photo.shape).astype(np.float32)  # codec noise of a repeat
    moved = np.roll(photo, 3, axis=1)
    frames = [photo, photo + noise, moved, moved - noise, moved + 2.0, moved + 4.0, moved + 6.0]
    held: list[int] = []
    painted: list[int] = []
    out = stylize_sequence(stylizer, frames, [painting], [1.0], config, "flow", on_held=held.append,
                           callback=lambda i, _r: painted.append(i))
    # Frame 4 is within 2 levels of frame 3 (and of frame 2, last painted): held. Frame 5 is 2 from
    # frame 4 but 4 from frame 2: painted. Frame 6 is 2 from frame 5: held.
    assert held == [1, 3, 4, 6]
    assert sorted(set(painted)) == [0, 2, 5]
    np.testing.assert_array_equal(out[1], out[0])
    np.testing.assert_array_equal(out[3], out[2])
    np.testing.assert_array_equal(out[4], out[2])
    np.testing.assert_array_equal(out[6], out[5])
    assert float(np.abs(out[5] - out[4]).mean()) > 0.5
    # Without holding, each repeat is painted again, and its painting moves.
    config = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0, "video.settle_frames": 0,
                                        "video.first_frame_iterations": 12, "video.later_frame_iterations": 3,
                                        "video.hold_frames": False})
    again = stylize_sequence(Stylizer(config, extractor=extractor), frames[:2], [painting], [1.0], config, "flow",
                             on_held=held.append)
    assert held == [1, 3, 4, 6] and float(np.abs(again[1] - again[0]).mean()) > 0.2


def test_after_a_repeat_the_chain_goes_on_from_the_frame_it_repeats(extractor, photo, painting):
    """The frame after a held repeat is carried from the painted frame along the motion from that
    frame's content, as if the repeat had not been there; "off" paints every frame apart."""
    config = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0, "video.settle_frames": 0,
                                        "video.first_frame_iterations": 12, "video.later_frame_iterations": 3})
    stylizer = Stylizer(config, extractor=extractor)
    moved = np.roll(photo, 3, axis=1)
    brighter = photo + 2.5  # within a repeat's noise of the frame painted, but not the same picture
    held: list[int] = []
    through = stylize_sequence(stylizer, [photo, brighter, moved], [painting], [1.0], config, "flow",
                               on_held=held.append)
    direct = stylize_sequence(stylizer, [photo, moved], [painting], [1.0], config, "flow")
    assert held == [1]
    np.testing.assert_allclose(through[2], direct[1], atol=0.5)
    # Continued in a new call from the frame painted, as a chunk after the repeat is.
    continued = stylize_sequence(stylizer, [moved], [painting], [1.0], config, "flow",
                                 previous_stylized=through[1], previous_content=photo)
    np.testing.assert_allclose(continued[0], direct[1], atol=0.5)
    off: list[int] = []
    stylize_sequence(stylizer, [photo, photo], [painting], [1.0], config, "off", on_held=off.append)
    assert off == []
