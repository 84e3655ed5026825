"""Style masks, histogram colour matching, intermediate images, 16-bit output and the contact sheet."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.core.arrays import (
    MATCH_COV_TOLERANCE,
    MATCH_MEAN_TOLERANCE,
    colour_stats,
    feature_grid,
    fit_longest,
    mask_to_grid,
    match_colors,
    resize,
)
from pipeline.errors import InputError
from pipeline.media.images import FORMAT_SUFFIX, HIGH_BIT_FORMATS, load_mask, output_format, save_image
from tests.conftest import write_png

STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")


def make(extractor, **overrides):
    from pipeline.core.stylizer import Stylizer

    base = {"image.scales": [1.0], "optim.tolerance": 0.0}
    base.update(overrides)
    return Stylizer(config_mod.load(overrides=base), extractor=extractor)


def stripes(size: int = 128) -> np.ndarray:
    """A second style unlike the swirls: hard diagonal stripes of saturated yellow and violet."""
    yy, xx = np.mgrid[0:size, 0:size]
    band = ((xx + yy) // 6) % 2 == 0
    image = np.where(band[..., None], np.array([250, 220, 30], np.float32), np.array([90, 20, 150], np.float32))
    return image.astype(np.float32)


# --- 1. spatial style masks ------------------------------------------------------------------------

def half_masks(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros(hw, np.float32)
    left[:, : hw[1] // 2] = 1.0
    return left, 1.0 - left


def masked_style_distance(extractor, image: np.ndarray, mask: np.ndarray, style: np.ndarray) -> float:
    """Fixed evaluator: relative distance between the Gram of ``image``'s features under ``mask`` and
    the whole style's Gram (style at the image's scale), averaged over conv1_1..conv5_1."""
    from pipeline.core import losses
    from pipeline.core.tfsetup import tf

    style = resize(style, fit_longest(style, max(image.shape[:2])))
    feats = extractor(tf.constant(image[None], tf.float32))
    style_feats = extractor(tf.constant(style[None], tf.float32))
    distances = []
    for name in STYLE_LAYERS:
        grid = mask_to_grid(mask, feature_grid(*image.shape[:2], name))
        current = losses.masked_gram(feats[name], tf.constant(grid[None, ..., None]))
        target = losses.gram(style_feats[name])
        distances.append(float(tf.reduce_sum(tf.square(current - target)) / tf.reduce_sum(tf.square(target))))
    return float(np.mean(distances))


def test_complementary_masks_give_each_half_its_own_style(extractor, photo, painting):
    stylizer = make(extractor, **{"optim.iterations": 40})
    swirls, bands = painting, stripes()
    left, right = half_masks(photo.shape[:2])
    result = stylizer.stylize(photo, [swirls, bands], [1.0, 1.0], masks=[left, right])
    near = {half: {name: masked_style_distance(extractor, result.image, mask, style)
                   for name, style in (("swirls", swirls), ("bands", bands))}
            for half, mask in (("left", left), ("right", right))}
    # Each half is clearly nearer its own style than the other one (the photo itself is near neither).
    assert near["left"]["swirls"] < 0.5 * near["left"]["bands"], near
    assert near["right"]["bands"] < 0.5 * near["right"]["swirls"], near


def test_a_full_mask_computes_the_unmasked_loss(extractor, photo, painting):
    stylizer = make(extractor)
    image = np.clip(photo + np.random.default_rng(1).normal(0, 20, photo.shape), 0, 255).astype(np.float32)
    plain = stylizer.evaluate(image, stylizer.targets(photo, [painting], [1.0]))
    masked = stylizer.evaluate(image, stylizer.targets(photo, [painting], [1.0],
                                                       [np.ones((7, 9), np.float32)]))
    assert masked[1]["style"] == pytest.approx(plain[1]["style"], rel=1e-4)
    assert np.abs(masked[2] - plain[2]).max() <= 1e-3 * np.abs(plain[2]).max()


def test_feature_grids_match_the_network(extractor):
    from pipeline.core.tfsetup import tf

    for hw in ((43, 64), (37, 53)):
        feats = extractor(tf.zeros((1, *hw, 3)))
        for name in STYLE_LAYERS:
            assert tuple(feats[name].shape[1:3]) == feature_grid(*hw, name), (hw, name)


def test_masks_are_checked(extractor, photo, painting, tmp_path):
    stylizer = make(extractor, **{"optim.iterations": 2})
    with pytest.raises(ValueError, match="2 style masks for 1 styles"):
        stylizer.stylize(photo, [painting], masks=[None, None])
    with pytest.raises(ValueError, match="outside"):
        stylizer.stylize(photo, [painting], masks=[np.full((8, 8), 2.0)])
    not_image = tmp_path / "sky.png"
    not_image.write_text("this is no picture")
    with pytest.raises(InputError, match="sky.png"):
        load_mask(not_image)
    grey = write_png(tmp_path / "half.png", np.dstack([np.tile(np.r_[np.zeros(4), np.full(4, 255)], (6, 1))] * 3))
    mask = load_mask(grey)
    assert mask.shape == (6, 8) and mask.dtype == np.float32
    assert mask[:, :4].max() == 0 and mask[:, 4:].min() == 1


# --- 2. colour preservation by histogram matching ----------------------------------------------------

@pytest.mark.parametrize("method", ["eig", "chol"])
def test_matched_style_has_the_content_colour_mean_and_covariance(photo, painting, method):
    mu_c, cov_c = colour_stats(photo)
    exact = match_colors(painting, photo, method, clip=False)
    mu, cov = colour_stats(exact)
    # Unclipped, the transform is exact up to the eps (0.01 grey levels^2) on the style's diagonal.
    assert np.abs(mu - mu_c).max() < 0.01
    assert np.abs(cov - cov_c).max() < 1e-3 * np.abs(cov_c).max()
    # Clipped into [0, 255] (what the optimisation sees): the documented tolerances after re-matching.
    # A single clip leaves 6 grey levels and 29% of the covariance here (a saturated style, a dark photo).
    clipped = match_colors(painting, photo, method)
    assert clipped.min() >= 0 and clipped.max() <= 255
    mu, cov = colour_stats(clipped)
    assert np.abs(mu - mu_c).max() < MATCH_MEAN_TOLERANCE, (mu, mu_c)
    assert np.linalg.norm(cov - cov_c) <= MATCH_COV_TOLERANCE * np.linalg.norm(cov_c), (cov, cov_c)


def test_histogram_mode_keeps_the_photo_palette(extractor, photo, painting):
    from pipeline.core.stylizer import color_mode

    assert [color_mode(v) for v in (False, True, "luminance", "histogram", None)] == [
        "off", "luminance", "luminance", "histogram", "off"]
    stylizer = make(extractor, **{"optim.iterations": 20})
    matched = stylizer.stylize(photo, [painting], preserve_colors="histogram")
    free = stylizer.stylize(photo, [painting], preserve_colors=False)
    mu_c = colour_stats(photo)[0]
    assert (np.abs(colour_stats(matched.image)[0] - mu_c).max()
            < 0.5 * np.abs(colour_stats(free.image)[0] - mu_c).max())


# --- 3. intermediate images ---------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_intermediate_images_at_multiples_of_save_every(extractor, photo, painting, optimizer):
    content = resize(photo, (64, 64))  # two scales: 32 px, then 64 px
    stylizer = make(extractor, **{"optim.iterations": 25, "optim.coarse_iterations": 5,
                                  "optim.optimizer": optimizer, "image.scales": [0.5, 1.0],
                                  "image.min_scale_size": 32})
    seen: list[tuple[int, np.ndarray]] = []
    result = stylizer.stylize(content, [painting], save_every=10,
                              on_image=lambda i, image: seen.append((i, image.copy())))
    # Only the final scale counts, so the numbers are those of optim.iterations; the result comes last.
    assert [i for i, _ in seen] == [10, 20, 25]
    assert all(image.shape == content.shape for _, image in seen)
    np.testing.assert_array_equal(seen[-1][1], result.image)
    assert not np.array_equal(seen[0][1], seen[1][1])


# --- 4. 16-bit output -----------------------------------------------------------------------------------

def png_bit_depth(path: Path) -> int:
    data = path.read_bytes()
    assert data[12:16] == b"IHDR"
    return data[24]


@pytest.mark.parametrize("fmt", sorted(HIGH_BIT_FORMATS))
def test_16_bit_files_keep_a_smooth_gradient(tmp_path, fmt):
    ramp = np.linspace(0.0, 255.0, 1024, dtype=np.float32)
    rgb = np.stack([np.tile(ramp, (8, 1)), np.tile(ramp[::-1], (8, 1)), np.full((8, 1024), 100.3, np.float32)], -1)
    path = tmp_path / f"out{FORMAT_SUFFIX[fmt]}"
    assert output_format(Path("photo.jpg"), fmt) == fmt
    save_image(rgb, path, fmt)
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (8, 1024, 3)
    assert len(np.unique(written[..., 2])) > 256  # red channel (BGR order): more levels than 8 bits hold
    np.testing.assert_allclose(written[..., ::-1] / 257.0, rgb, atol=0.5 / 257 + 1e-6)
    if fmt == "png16":
        assert png_bit_depth(path) == 16
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the atomic temp file is gone


def test_png16_keeps_alpha_and_exif(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    rgb = np.full((4, 5, 3), 128.5, np.float32)
    alpha = np.full((4, 5), 200, np.uint8)
    path = save_image(rgb, tmp_path / "a.png", "png16", alpha=alpha, exif=exif.tobytes())
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (4, 5, 4)
    assert int(written[0, 0, 0]) == round(128.5 * 257) and int(written[0, 0, 3]) == 200 * 257
    with Image.open(path) as opened:
        assert opened.getexif().get(0x010F) == "Maker"
    assert struct.unpack(">I", path.read_bytes()[8:12])[0] == 13  # still a well-formed IHDR first


# --- 5. style x strength contact sheet -------------------------------------------------------------

def test_contact_sheet_has_one_distinct_cell_per_style_and_strength(extractor, photo, painting, tmp_path):
    from pipeline.batch.grid import GAP, LABEL_HEIGHT, contact_sheet, write_sheet_html

    stylizer = make(extractor)
    traces: list[int] = []
    sheet = contact_sheet(photo, [("swirls", painting), ("bands", stripes())], [0.1, 1.0, 10.0], stylizer,
                          size=64, iterations=8, on_cell=lambda cell: traces.append(stylizer.trace_count))
    assert len(sheet.cells) == 6
    assert traces[1:] == [traces[0]] * 5  # one trace serves every strength and style
    h, w = photo.shape[:2]
    assert sheet.sheet.shape == (2 * (h + LABEL_HEIGHT) + 3 * GAP, 4 * w + 5 * GAP, 3)
    assert sheet.sheet.dtype == np.uint8

    def differ(a, b) -> float:
        return float(np.abs(sheet.cell(*a).image - sheet.cell(*b).image).mean())

    for style in sheet.styles:
        for s0, s1 in zip(sheet.strengths, sheet.strengths[1:]):
            assert differ((style, s0), (style, s1)) > 1.0, (style, s0, s1)
    for strength in sheet.strengths:
        assert differ(("swirls", strength), ("bands", strength)) > 1.0, strength
    page = write_sheet_html(tmp_path / "sheet.html", sheet)
    text = page.read_text()
    assert text.count("<img ") == 6 and "swirls  x10" in text
