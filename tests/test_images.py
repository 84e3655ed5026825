"""Reading every kind of photo an archive holds: formats, orientation, colour profiles, bit depth, limits."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputError
from pipeline.media.images import load_image, probe_image, save_image

D50 = (0.9642, 1.0, 0.8249)
SRGB_D50 = {"r": (0.4361, 0.2225, 0.0139), "g": (0.3851, 0.7169, 0.0971), "b": (0.1431, 0.0606, 0.7141)}


# --- small ICC v2 profiles built byte by byte (no profile files exist on this machine) -----------------

def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * 8 + b"\0" * 3 + b"\0" * 67


def _curv(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def build_icc(colour_space: bytes, pcs: bytes, device_class: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    offset = 128 + 4 + 12 * len(tags)
    body, entries = b"", []
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        entries.append((sig, offset + len(body), len(data)))
        body += data
    header = (struct.pack(">I", offset + len(body)) + b"lcms" + struct.pack(">I", 0x02100000) + device_class
              + colour_space + pcs + b"\0" * 12 + b"acsp" + b"APPL" + b"\0" * 24 + _s15(D50[0]) + _s15(D50[1])
              + _s15(D50[2]) + b"lcms" + b"\0" * 44)
    assert len(header) == 128
    table = struct.pack(">I", len(tags)) + b"".join(struct.pack(">4sII", *e) for e in entries)
    return header + table + body


def swapped_rgb_profile() -> bytes:
    """An RGB profile whose red primary is sRGB's green and whose green is sRGB's red."""
    return build_icc(b"RGB ", b"XYZ ", b"mntr", [
        (b"desc", _desc("swapped")), (b"wtpt", _xyz(*D50)), (b"cprt", b"text\0\0\0\0none\0"),
        (b"rXYZ", _xyz(*SRGB_D50["g"])), (b"gXYZ", _xyz(*SRGB_D50["r"])), (b"bXYZ", _xyz(*SRGB_D50["b"])),
        (b"rTRC", _curv(2.2)), (b"gTRC", _curv(2.2)), (b"bTRC", _curv(2.2))])


def twisted_cmyk_profile() -> bytes:
    """A CMYK profile (2-point lut8 to Lab) where C absorbs blue and Y absorbs red: the reverse of
    the naive conversion, so a result that ignored the profile is easy to tell apart."""
    from skimage.color import rgb2lab

    clut = []
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    rgb = ((1 - y) * (1 - k), (1 - m) * (1 - k), (1 - c) * (1 - k))
                    lab = rgb2lab(np.array([[rgb]], float), illuminant="D50")[0, 0]
                    clut += [round(lab[0] / 100 * 255), round(lab[1] + 128), round(lab[2] + 128)]
    ramp = bytes(range(256))
    lut = (b"mft1" + b"\0" * 4 + bytes([4, 3, 2, 0]) + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + ramp * 4 + bytes(int(np.clip(v, 0, 255)) for v in clut) + ramp * 3)
    return build_icc(b"CMYK", b"Lab ", b"prtr", [
        (b"desc", _desc("twisted cmyk")), (b"wtpt", _xyz(*D50)), (b"cprt", b"text\0\0\0\0none\0"),
        (b"A2B0", lut)])


# --- PNG written byte by byte: 16-bit samples, and a header that lies about its size -------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path: Path, samples: np.ndarray) -> Path:
    """(H, W), (H, W, 3) or (H, W, 4) uint16 as a real 16-bit PNG."""
    samples = samples if samples.ndim == 3 else samples[..., None]
    h, w, c = samples.shape
    raw = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(h))
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid-looking PNG (correct CRCs) claiming 10^10 pixels; its data would decode to ~30 GB."""
    idat = zlib.compress(b"\0" * 1024)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 10:20:30"  # DateTimeOriginal
    return exif.tobytes()


def left_red_right_blue(width: int, height: int) -> Image.Image:
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (220, 30, 30)
    array[:, width // 2:] = (30, 30, 220)
    return Image.fromarray(array)


# XYZ (D65) -> linear sRGB, as a DNG's ColorMatrix1: a test camera whose sensor RGB is linear sRGB.
_XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))


def write_dng(path: Path, rgb: np.ndarray, orientation: int = 1, white: int = 4095) -> Path:
    """A real camera RAW as a DNG: ``rgb`` (uint8 sRGB) sampled through an RGGB Bayer mosaic, 12 bits,
    with its orientation, a capture date and the colour tags LibRaw develops it with."""
    import tifffile
    linear = (np.asarray(rgb, np.float64) / 255.0) ** 2.2 * white
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
    cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
    cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
    cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
    matrix = [n for v in np.ravel(_XYZ_TO_SRGB) for n in (round(v * 10000), 10000)]
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50707, "B", 4, (1, 1, 0, 0), True),  # DNG versions
            (33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True),  # CFA: RGGB
            (50708, "s", 0, "nst test camera", True), (271, "s", 0, "nst", True), (272, "s", 0, "test camera", True),
            (274, "H", 1, (orientation,), True), (306, "s", 0, "2019:07:14 10:20:30", True),
            (50721, "2i", 9, tuple(matrix), True), (50778, "H", 1, (21,), True),  # ColorMatrix1, D65
            (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True), (50717, "H", 1, (white,), True)]  # neutral, white level
    tifffile.imwrite(path, cfa, photometric=32803, extratags=tags, subfiletype=0)
    return path


# --- tests -----------------------------------------------------------------------------------------------

def test_exif_orientation_applied_and_exif_kept_with_orientation_reset(tmp_path):
    path = tmp_path / "rotated.jpg"
    left_red_right_blue(80, 60).save(path, exif=exif_bytes(6), quality=95)
    loaded = load_image(path)
    assert loaded.size == (60, 80) and loaded.original_size == (60, 80)
    # Orientation 6 means "rotate 90 degrees clockwise to view": the stored left (red) ends on top.
    assert loaded.rgb[5, 30, 0] > 150 and loaded.rgb[75, 30, 2] > 150
    out = save_image(loaded.rgb, tmp_path / "out.jpg", "jpeg", exif=loaded.exif)
    with Image.open(out) as written:
        exif = written.getexif()
        assert written.size == (60, 80)
        assert exif[0x0112] == 1 and exif[0x010F] == "Canon"
        assert exif.get_ifd(0x8769)[0x9003] == "2019:07:14 10:20:30"


def test_rgb_icc_profile_is_converted_to_srgb(tmp_path):
    path = tmp_path / "swapped.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path, icc_profile=swapped_rgb_profile())
    assert load_image(path).rgb[0, 0].tolist() == pytest.approx([0, 255, 0], abs=3)


def test_rgba_with_icc_profile_keeps_alpha(tmp_path):
    path = tmp_path / "swapped_alpha.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 100)).save(path, icc_profile=swapped_rgb_profile())
    loaded = load_image(path)
    assert loaded.rgb[0, 0].tolist() == pytest.approx([0, 255, 0], abs=3)
    assert loaded.alpha is not None and loaded.alpha[0, 0] == 100


def test_cmyk_jpeg_uses_its_profile_and_falls_back_without_one(tmp_path):
    cyan_ink = Image.new("CMYK", (16, 8), (255, 0, 0, 0))
    cyan_ink.save(tmp_path / "profiled.jpg", icc_profile=twisted_cmyk_profile(), quality=100)
    cyan_ink.save(tmp_path / "plain.jpg", quality=100)
    profiled = load_image(tmp_path / "profiled.jpg").rgb[4, 8]
    plain = load_image(tmp_path / "plain.jpg").rgb[4, 8]
    assert profiled[0] > 200 and profiled[1] > 200 and profiled[2] < 100  # the profile says yellow
    assert plain[0] < 40 and plain[1] > 200 and plain[2] > 200  # no profile: the naive cyan


def test_profile_for_another_colour_space_is_ignored(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (8, 8), 90).save(path, icc_profile=swapped_rgb_profile())
    assert load_image(path).rgb[0, 0].tolist() == [90, 90, 90]


def test_16bit_grey_png_scaled_by_its_full_range(tmp_path):
    samples = np.full((6, 8), 1000, np.uint16)
    samples[0, 0] = 65535
    loaded = load_image(write_png16(tmp_path / "grey16.png", samples))
    assert loaded.source_mode.startswith("I")
    assert loaded.rgb[0, 0].tolist() == [255, 255, 255]
    assert loaded.rgb[3, 3, 0] == pytest.approx(1000 / 65535 * 255, abs=0.01)


def test_dark_16bit_grey_png_is_not_mistaken_for_8bit(tmp_path):
    loaded = load_image(write_png16(tmp_path / "dark16.png", np.full((6, 8), 200, np.uint16)))
    assert loaded.rgb.max() < 1.0  # 200 / 65535 of full scale, not 200 / 255


def test_16bit_rgb_and_rgba_png(tmp_path):
    samples = np.zeros((6, 8, 3), np.uint16)
    samples[...] = (60000, 300, 32768)
    rgb = load_image(write_png16(tmp_path / "rgb16.png", samples)).rgb[0, 0]
    assert rgb.tolist() == pytest.approx([60000 / 257, 300 / 257, 32768 / 257], abs=1.0)
    rgba = load_image(write_png16(tmp_path / "rgba16.png", np.full((6, 8, 4), 30000, np.uint16)))
    assert rgba.rgb[0, 0, 0] == pytest.approx(30000 / 257, abs=1.0)
    assert rgba.alpha[0, 0] == pytest.approx(30000 / 257, abs=1.0)


def test_palette_gif_reads_first_frame_and_says_so(tmp_path):
    frames = [Image.new("RGB", (20, 10), colour).convert("P") for colour in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    loaded = load_image(tmp_path / "anim.gif")
    assert loaded.frames == 2 and "first frame" in loaded.note
    assert loaded.rgb[0, 0, 0] > 150 and loaded.rgb[0, 0, 1] < 50


def test_transparent_palette_and_grey_alpha(tmp_path):
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 250, 250, 0] + [0] * 762)
    palette.paste(1, (0, 0, 5, 10))
    palette.save(tmp_path / "p.png", transparency=0)
    loaded = load_image(tmp_path / "p.png")
    assert loaded.alpha[0, 0] == 255 and loaded.alpha[0, 9] == 0
    grey = Image.merge("LA", (Image.new("L", (10, 10), 70), Image.new("L", (10, 10), 33)))
    grey.save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert loaded.rgb[0, 0].tolist() == [70, 70, 70] and loaded.alpha[0, 0] == 33


def test_heic_reads_with_orientation(tmp_path):
    pytest.importorskip("pillow_heif")
    left_red_right_blue(80, 60).save(tmp_path / "phone.heic", format="HEIF", exif=exif_bytes(6))
    loaded = load_image(tmp_path / "phone.heic")
    assert loaded.size == (60, 80)
    assert loaded.rgb[5, 30, 0] > 150 and loaded.rgb[75, 30, 2] > 150


def test_camera_raw_is_developed_turned_and_keeps_its_exif(tmp_path):
    pytest.importorskip("rawpy")
    path = write_dng(tmp_path / "IMG_0001.dng", np.asarray(left_red_right_blue(96, 64)), orientation=6)
    assert probe_image(path) == (64, 96)  # turned by the camera's orientation flag, as developed
    loaded = load_image(path)
    assert loaded.size == (64, 96) and loaded.original_size == (64, 96) and loaded.source_format == "RAW"
    # The stored left (red) ends on top; the colours survive the mosaic and LibRaw's development.
    top, bottom = loaded.rgb[10, 32], loaded.rgb[86, 32]
    assert top[0] > 150 > max(top[1:]) and bottom[2] > 150 > max(bottom[:2])
    exif = Image.Exif()
    exif.load(loaded.exif)
    assert exif[0x0132] == "2019:07:14 10:20:30" and exif[0x0110] == "test camera"
    assert 0x0112 not in exif and not [t for t in exif if t >= 0xC612]  # nothing of the RAW's own layout
    # A working size at most half the sensor's is developed at half size, then reduced.
    small = load_image(path, max_side=40)
    assert small.size == (27, 40) and small.original_size == (64, 96)
    assert small.rgb[5, 13, 0] > 150 and small.rgb[35, 13, 2] > 150
    out = save_image(loaded.rgb, tmp_path / "out.jpg", "jpeg", exif=loaded.exif)
    with Image.open(out) as written:
        assert written.getexif()[0x0132] == "2019:07:14 10:20:30"
    from pipeline.batch.thumbs import small

    thumb = np.asarray(small(path.read_bytes()))  # the report's "before" half, from the bytes a worker has
    assert thumb.shape == (48, 32, 3) and thumb[5, 16, 0] > 150 > thumb[5, 16, 2]


def test_camera_raw_whose_name_is_not_utf8_is_read(tmp_path):
    pytest.importorskip("rawpy")
    made = write_dng(tmp_path / "made.dng", np.asarray(left_red_right_blue(96, 64)))
    path = tmp_path / os.fsdecode(b"caf\xe9 \xff.dng")  # Latin-1 bytes from an old camera card or share
    made.rename(path)
    assert probe_image(path) == (96, 64)
    assert load_image(path).size == (96, 64)


@pytest.mark.parametrize("content, reason", [
    (b"these are my holiday notes\n" * 10, "not a camera RAW file LibRaw reads"),
    (None, "corrupt or truncated RAW file"),
])
def test_bad_camera_raw_is_a_clear_error(tmp_path, content, reason):
    pytest.importorskip("rawpy")
    path = tmp_path / "IMG_0002.nef"
    if content is None:  # a real RAW cut short: the header is there, the sensor data is not
        write_dng(tmp_path / "whole.dng", np.zeros((64, 96, 3), np.uint8) + 128)
        path = tmp_path / "IMG_0002.dng"
        path.write_bytes((tmp_path / "whole.dng").read_bytes()[:600])
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as info:
        load_image(path)
    assert str(path) in info.value.message


def test_bomb_header_refused_before_decoding(tmp_path):
    path = write_bomb_png(tmp_path / "bomb.png")
    with pytest.raises(InputError, match=r"100000x100000 .* exceeds the limit"):
        load_image(path, max_pixels=200_000_000)


def test_max_pixels_setting_is_applied(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match="image.max_pixels"):
        load_image(tmp_path / "a.png", max_pixels=5000)
    assert load_image(tmp_path / "a.png", max_pixels=10_000).size == (100, 100)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"these are my holiday notes\n", "not an image"),
])
def test_not_images(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as info:
        load_image(path)
    assert str(path) in info.value.message


def test_truncated_jpeg_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.jpg"
    left_red_right_blue(64, 48).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(path)


def test_large_jpeg_is_reduced_while_decoding(tmp_path):
    path = tmp_path / "big.jpg"
    left_red_right_blue(3000, 2000).save(path, quality=85)
    loaded = load_image(path, max_side=256)
    assert loaded.size == (256, 171) and loaded.original_size == (3000, 2000)
    assert loaded.rgb[80, 20, 0] > 150 and loaded.rgb[80, 240, 2] > 150


def test_save_keeps_alpha_where_the_format_can(tmp_path):
    rgb = np.full((8, 8, 3), 10, np.float32)
    alpha = np.zeros((8, 8), np.uint8)
    alpha[:, 4:] = 255
    for fmt, suffix in (("png", ".png"), ("webp", ".webp"), ("tiff", ".tif")):
        with Image.open(save_image(rgb, tmp_path / f"a{suffix}", fmt, alpha)) as written:
            assert written.mode == "RGBA" and written.getpixel((0, 0))[3] == 0
    with Image.open(save_image(rgb, tmp_path / "a.jpg", "jpeg", alpha)) as written:
        assert written.mode == "RGB"
        assert written.getpixel((0, 0))[0] > 245 and written.getpixel((7, 0))[0] < 30  # over white
    assert not list(tmp_path.glob(".*.part"))


def test_a_multi_page_tiff_says_only_its_first_page_is_painted_but_a_preview_page_is_no_page(tmp_path):
    rng = np.random.default_rng(3)
    pages = [Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)) for _ in range(3)]
    document = tmp_path / "fax.tif"
    pages[0].save(document, save_all=True, append_images=pages[1:])
    loaded = load_image(document)
    assert loaded.note == "TIFF of 3 pages: only the first page is painted"
    assert np.abs(loaded.rgb - np.asarray(pages[0], np.float32)).max() == 0  # the first page, not the last seen
    scan = tmp_path / "scan.tif"
    pages[0].save(scan, save_all=True, append_images=[pages[1].resize((20, 15))])  # a scanner's preview
    assert load_image(scan).note == ""


def test_an_avif_photo_is_read(tmp_path):
    from pipeline.batch.discover import discover

    photo = np.random.default_rng(4).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "in" / "phone.avif"
    path.parent.mkdir()
    Image.fromarray(photo).save(path)
    assert load_image(path).rgb.shape == (48, 64, 3)
    plan = discover([path.parent], tmp_path / "out")
    assert [i.output.name for i in plan.items] == ["phone.jpg"] and plan.refused == []


def test_a_bigtiff_is_painted_with_its_camera_tags(tmp_path):
    """A BigTIFF's EXIF (64-bit offsets) made the TIFF writer fail after the painting, three times."""
    from pipeline.media.images import encode_image

    exif = Image.Exif()
    exif[0x010F] = "ScanCo"
    exif[0x0132] = "2020:01:01 10:00:00"
    big = tmp_path / "big.tif"
    Image.fromarray(np.full((60, 90, 3), 90, np.uint8)).save(big, big_tiff=True, exif=exif)
    loaded = load_image(big)
    written = Image.open(io.BytesIO(encode_image(loaded.rgb, "tiff", None, loaded.exif)))
    tags = written.getexif()
    assert written.format == "TIFF" and tags[0x010F] == "ScanCo" and tags[0x0132] == "2020:01:01 10:00:00"


def test_a_tiff_pillow_cannot_decode_is_called_a_tiff_not_a_lying_extension(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "hdr.tif"
    tifffile.imwrite(path, np.full((20, 30, 3), 0.5, np.float32))
    for read in (probe_image, load_image):
        with pytest.raises(InputError, match=r"hdr.tif: a TIFF in a layout Pillow cannot decode"):
            read(path)


def test_a_32_bit_unsigned_grey_tiff_keeps_its_levels(tmp_path):
    """Read as signed, its upper half came out negative and the picture black."""
    tifffile = pytest.importorskip("tifffile")
    ramp = (np.arange(90, dtype=np.uint64)[None].repeat(60, 0) * (2 ** 32 - 1) // 89).astype(np.uint32)
    path = tmp_path / "grey32.tif"
    tifffile.imwrite(path, ramp)
    rgb = load_image(path).rgb
    assert np.allclose(rgb[0, :, 0], np.arange(90) * 255 / 89, atol=0.01), rgb[0, ::10, 0]
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
