"""Still images in and out: every mode Pillow reads becomes RGB [0, 255] (+ alpha); writes are atomic."""
from __future__ import annotations

import io
import logging
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from pipeline.atomic import atomic_target, write_bytes_atomic
from pipeline.errors import InputError

log = logging.getLogger(__name__)

try:  # HEIC/HEIF from phones; optional so a missing wheel only disables those files
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the platform's wheel
    HEIF_SUPPORTED = False

try:  # camera RAW through LibRaw; optional like HEIF
    import rawpy

    RAW_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the platform's wheel
    RAW_SUPPORTED = False

# Camera RAW files, developed by LibRaw (camera white balance, sRGB) and written as JPEG.
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf",
                            ".orf", ".rw2", ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf",
                            ".kdc", ".dcr", ".mrw", ".mos", ".mef"})

# Output format per input extension when image.format is "auto": formats Pillow cannot write well
# (BMP, GIF: 8-bit palette) become PNG, HEIC/HEIF/AVIF become JPEG (widely readable; EXIF kept).
EXTENSION_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".jfif": "jpeg", ".png": "png", ".webp": "webp", ".tif": "tiff",
                     ".tiff": "tiff", ".bmp": "png", ".gif": "png", ".heic": "jpeg", ".heif": "jpeg",
                     ".avif": "jpeg",
                     **dict.fromkeys(RAW_EXTENSIONS, "jpeg")}
FORMAT_SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif", "png16": ".png", "tiff16": ".tif"}
# 16 bits per channel, written from the float result without an 8-bit step (smooth gradients keep
# their levels); Pillow writes no 16-bit RGB, so OpenCV encodes these.
HIGH_BIT_FORMATS = frozenset({"png16", "tiff16"})
IMAGE_EXTENSIONS = frozenset(EXTENSION_FORMATS)
_SRGB = ImageCms.createProfile("sRGB")
# A TIFF's tags come back from getexif() with the camera tags: its size, strips, compression and
# sample layout describe the source pixels and would corrupt a written file, so they are dropped.
_STRUCTURE_TAGS = frozenset({256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325,
                             338, 339, 340, 341, 530, 531, 532, 34675})


@dataclass
class LoadedImage:
    path: Path
    rgb: np.ndarray  # float32 (H, W, 3) in [0, 255], EXIF orientation applied, sRGB
    alpha: np.ndarray | None  # uint8 (H, W) or None
    exif: bytes | None  # original EXIF with the orientation reset to 1
    source_format: str  # Pillow's format name, e.g. "JPEG"
    source_mode: str
    frames: int  # > 1 for animated GIF/WebP/PNG (only the first is used)
    original_size: tuple[int, int] = (0, 0)  # (W, H) of the file after orientation, before any reduction

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    @property
    def note(self) -> str:
        """What the user should know about how this file was read ("" when nothing)."""
        if self.frames > 1 and self.source_format in ("GIF", "WEBP", "PNG"):  # not MPO's stereo/preview frames
            return (f"animated {self.source_format} with {self.frames} frames: only the first frame is painted "
                    f"(nst video paints every frame)")
        if self.frames > 1 and self.source_format == "TIFF":
            return f"TIFF of {self.frames} pages: only the first page is painted"
        return ""


def _tiff_pages(opened: Image.Image) -> int:
    """The pages of a multi-page TIFF (a scanned document, a fax) as big as its first: smaller
    images after the first are the previews scanners and cameras add, not pages."""
    first = opened.size[0] * opened.size[1]
    pages = 0
    try:
        for index in range(opened.n_frames):
            opened.seek(index)
            pages += opened.size[0] * opened.size[1] * 4 >= first
    except (OSError, ValueError, EOFError):
        pass  # a damaged later page: what was counted stands
    finally:
        opened.seek(0)
    return max(pages, 1)


# Image.MAX_IMAGE_PIXELS is process-global; the lock keeps threads from restoring each other's value.
_LIMIT_LOCK = threading.Lock()


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Colour part (RGB, CMYK, L, or a high-bit grey mode) and the alpha channel, if any."""
    if image.mode == "LA":
        return image.convert("L"), image.getchannel("A")
    if image.mode in ("RGBA", "RGBa", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    if image.mode in ("RGB", "CMYK", "L") or image.mode.startswith("I") or image.mode == "F":
        return image, None
    return image.convert("RGB"), None


def _to_srgb(image: Image.Image) -> Image.Image:
    """Converts the colour part through its embedded ICC profile to sRGB; keeps the mode's alpha.

    Works on RGB, RGBA, CMYK, L and LA (the profile's colour space must match the pixels, as the
    ICC standard requires; a mismatched or broken profile is ignored with a warning)."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    colour, alpha = _split_alpha(image)
    if colour.mode not in ("RGB", "CMYK", "L"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = source.profile.xcolor_space.strip()
        expected = {"RGB": "RGB", "CMYK": "CMYK", "L": "GRAY"}[colour.mode]
        if space != expected:
            raise ValueError(f"a {space} profile on {colour.mode} pixels")
        converted = ImageCms.profileToProfile(colour, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, KeyError) as exc:
        log.warning("%s: ignoring an unusable ICC profile (%s)", getattr(image, "filename", "image"), exc)
        return image
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _high_bit_to_float(image: Image.Image, source_format: str = "") -> np.ndarray:
    """16-bit and 32-bit grey modes, scaled to [0, 255] by their real range."""
    data = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and source_format in ("PNG", "TIFF")):
        peak = 65535.0  # 16-bit files: a dark picture must not be mistaken for an 8-bit one
    elif image.mode == "F" and data.size and data.max() <= 1.0:
        peak = 1.0
    else:
        peak = 65535.0 if data.size and data.max() > 255 else 255.0
    return np.clip(data / peak * 255.0, 0, 255).astype(np.float32)


def _unsigned_32(tiff: Image.Image) -> bool:
    """A TIFF of 32-bit unsigned samples, which Pillow reads as signed (mode "I")."""
    tags = getattr(tiff, "tag_v2", {})
    return tuple(tags.get(258, ())) == (32,) and tags.get(339, 1) in (1, (1,))


def _unsigned_32_as_float(image: Image.Image) -> Image.Image:
    """The samples read back as unsigned and scaled to [0, 1] (mode "F"): read as signed, the upper
    half of the range came out negative and the picture black."""
    unsigned = np.asarray(image, np.int32).view(np.uint32)
    return Image.fromarray((unsigned / 4294967295.0).astype(np.float32), "F")


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    factor = longest / max(size)
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Image.open (header only) with the pixel count checked against our limit before any decoding."""
    with _LIMIT_LOCK, warnings.catch_warnings():
        previous_limit = Image.MAX_IMAGE_PIXELS
        # Our own limit is checked below; Pillow's would refuse some sizes the config allows.
        Image.MAX_IMAGE_PIXELS = None
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous_limit
    width, height = opened.size
    if width * height > max_pixels:
        opened.close()
        raise InputError(path, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                               f"(image.max_pixels); refused before decoding as a possible decompression bomb")
    return opened


def _unreadable(path: Path, otherwise: str) -> str:
    """Why Pillow identified no image: a TIFF header names the file's kind, and then the layout
    (32-bit float colour, planes stored apart, a rare compression) is what it cannot read."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return otherwise
    if head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ("a TIFF in a layout Pillow cannot decode (such as 32-bit float colour or colour planes stored "
                "apart); save it as 8- or 16-bit TIFF")
    return otherwise


def probe_image(path: Path | str, max_pixels: int = 200_000_000) -> tuple[int, int]:
    """(width, height) from the header alone; InputError when it is no image, or too large."""
    path = Path(path)
    if path.suffix.lower() in RAW_EXTENSIONS:
        with _open_raw(path, max_pixels) as raw:
            return _raw_size(raw)
    try:
        with _open_checked(path, max_pixels) as opened:
            return opened.size
    except UnidentifiedImageError as exc:
        raise InputError(path, _unreadable(path, "not an image: the content is not a format Pillow reads "
                                                 "(wrong extension or not a picture)")) from exc
    except PermissionError as exc:
        raise InputError(path, "permission denied") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InputError(path, f"corrupt image header ({exc})") from exc


def load_image(path: Path | str, max_pixels: int = 200_000_000, max_side: int | None = None) -> LoadedImage:
    """Reads any image Pillow can; raises InputError naming the file and the reason.

    The pixel count is checked on the header, before any pixel is decoded. With ``max_side`` a
    larger picture is reduced while still 8-bit (JPEG decodes straight at 1/2, 1/4 or 1/8 scale),
    so a 24 MP photo never exists as a float array; ``original_size`` keeps the file's size.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "broken symbolic link" if path.is_symlink() else "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if path.suffix.lower() in RAW_EXTENSIONS:
        return _load_raw(path, max_pixels, max_side)
    try:
        opened = _open_checked(path, max_pixels)
        with opened:
            width, height = opened.size
            frames = getattr(opened, "n_frames", 1)
            source_format, source_mode = opened.format or "?", opened.mode
            if source_format == "TIFF" and frames > 1:
                frames = _tiff_pages(opened)
            if max_side and source_format == "JPEG" and max(width, height) > max_side:
                # draft keeps both sides >= the request, so the working size never gets upscaled
                opened.draft(opened.mode, (max_side, max_side))
            opened.load()
            exif = opened.getexif()
            orientation = exif.get(0x0112, 1)
            image = ImageOps.exif_transpose(opened)
            if source_format == "TIFF" and image.mode == "I" and _unsigned_32(opened):
                image = _unsigned_32_as_float(image)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(path, _unreadable(path, "not an image Pillow can read (unknown format, or an extension "
                                                 "that lies)")) from exc
    except PermissionError as exc:
        raise InputError(path, "permission denied") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InputError(path, f"corrupt or truncated image ({exc})") from exc
    original_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    image = _to_srgb(image)
    colour, alpha_image = _split_alpha(image)
    if colour.mode.startswith("I") or colour.mode == "F":
        grey = _high_bit_to_float(colour, source_format)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    else:
        rgb = None
        colour = colour.convert("RGB")
    if max_side and max(colour.size) > max_side:
        target = _fit(colour.size, max_side)
        if rgb is None:
            colour = colour.resize(target, Image.LANCZOS, reducing_gap=3.0)
        else:
            rgb = cv2.resize(rgb, target, interpolation=cv2.INTER_AREA)
        if alpha_image is not None:
            alpha_image = alpha_image.resize(target, Image.LANCZOS, reducing_gap=3.0)
    if rgb is None:
        rgb = np.asarray(colour, np.float32)
    alpha = None if alpha_image is None else np.asarray(alpha_image, np.uint8).copy()
    if exif:
        exif[0x0112] = 1  # orientation already applied to the pixels
        for tag in _STRUCTURE_TAGS.intersection(exif):
            del exif[tag]
    return LoadedImage(path, np.ascontiguousarray(rgb), alpha, _exif_bytes(exif) if exif else None,
                       source_format, source_mode, frames, original_size)


def _open_raw(path: Path, max_pixels: int) -> rawpy.RawPy:
    """The RAW file opened (metadata only) with its size checked; InputError naming the reason."""
    if not RAW_SUPPORTED:
        raise InputError(path, "camera RAW needs the rawpy package (pip install rawpy)")
    try:
        try:
            raw = rawpy.imread(str(path))
        except UnicodeEncodeError:  # rawpy passes names on as UTF-8; this one's bytes are not
            with open(path, "rb") as handle:
                raw = rawpy.imread(handle)
    except rawpy.LibRawFileUnsupportedError as exc:
        raise InputError(path, "not a camera RAW file LibRaw reads (unknown camera, or an extension that "
                               "lies)") from exc
    except (rawpy.LibRawError, OSError) as exc:
        raise InputError(path, f"corrupt or truncated RAW file ({_libraw_reason(exc)})") from exc
    width, height = _raw_size(raw)
    if width * height > max_pixels:
        raw.close()
        raise InputError(path, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                               f"(image.max_pixels); refused before decoding as a possible decompression bomb")
    return raw


def _libraw_reason(exc: Exception) -> str:
    """LibRaw's message as text (rawpy passes it on as bytes)."""
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def _raw_size(raw: rawpy.RawPy) -> tuple[int, int]:
    """(width, height) as developed: LibRaw turns the picture by the camera's orientation flag."""
    sizes = raw.sizes
    return (sizes.height, sizes.width) if sizes.flip & 4 else (sizes.width, sizes.height)  # 4: axes swapped


_RAW_TAGS = frozenset({0x00FE, 0x0112, 0x014A, 0x0201, 0x0202, 0x02BC, 0x828D, 0x828E})
RAW_EXIF_BYTES = 1 << 20  # the IFDs of TIFF-based RAWs sit near the start, ahead of the sensor data


def _raw_exif(path: Path) -> bytes | None:
    """The camera's EXIF (date taken, camera, exposure) from RAW formats built on TIFF (DNG, CR2,
    NEF, ARW, PEF...), without the tags that describe the RAW's own layout; None for the others."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(RAW_EXIF_BYTES)
        if head[:4] not in (b"II*\0", b"MM\0*"):
            return None
        exif = Image.Exif()
        exif.load(head)
        details = exif.get_ifd(0x8769)  # exposure and date taken, carried along by tobytes()
        details.pop(0x927C, None)  # the maker note: private offsets into the RAW
        # Orientation is applied to the pixels; the rest point into the RAW (sub-images, its preview
        # JPEG, XMP with the old orientation) or describe its sensor (CFA pattern, DNG tags).
        for tag in [t for t in exif if t in _STRUCTURE_TAGS or t in _RAW_TAGS or t >= 0xC612]:
            del exif[tag]
        return exif.tobytes() if exif else None
    except Exception:  # noqa: BLE001 - a layout Pillow does not parse: no EXIF, nothing worse
        return None


def develop_raw(raw: rawpy.RawPy, half: bool, bits: int = 8) -> np.ndarray:
    """The opened RAW developed: the camera's white balance, sRGB (LibRaw's default curve is BT.709's,
    2.222 and 4.5; sRGB's is 2.4 and 12.92), turned by the camera's orientation flag; ``half``: each
    2x2 Bayer block one pixel, four times faster and no demosaicking."""
    return raw.postprocess(use_camera_wb=True, half_size=half, output_bps=bits, gamma=(2.4, 12.92))


def _load_raw(path: Path, max_pixels: int, max_side: int | None) -> LoadedImage:
    """A camera RAW developed by LibRaw (``develop_raw``) at 16 bits per channel; at half size when
    the working size is at most half the sensor's."""
    with _open_raw(path, max_pixels) as raw:
        width, height = _raw_size(raw)
        half = bool(max_side) and max(width, height) >= 2 * max_side
        try:
            developed = develop_raw(raw, half, 16)
        except (rawpy.LibRawError, OSError, ValueError) as exc:
            raise InputError(path, f"corrupt or truncated RAW file ({_libraw_reason(exc)})") from exc
    rgb = developed.astype(np.float32) * np.float32(255 / 65535)
    if max_side and max(rgb.shape[:2]) > max_side:
        rgb = cv2.resize(rgb, _fit((rgb.shape[1], rgb.shape[0]), max_side), interpolation=cv2.INTER_AREA)
    return LoadedImage(path, np.ascontiguousarray(rgb), None, _raw_exif(path), "RAW", "RGB;16", 1, (width, height))


def load_mask(path: Path | str, max_pixels: int = 200_000_000) -> np.ndarray:
    """A style mask: float32 (H, W) in [0, 1] from any image Pillow reads (white = the style applies).

    Colour files count by their luminance; a transparent pixel covers nothing (grey times alpha),
    so a cut-out on a transparent background works as well as white on black. 16-bit masks keep
    their levels. Raises InputError naming the file when it is not an image.
    """
    loaded = load_image(path, max_pixels)
    rgb = loaded.rgb
    grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    mask = np.clip(grey / 255.0, 0, 1).astype(np.float32)
    if loaded.alpha is not None:
        mask *= loaded.alpha.astype(np.float32) / 255.0
    if not mask.any():
        log.warning("%s: the mask is black everywhere; its style applies nowhere", loaded.path)
    return mask


def output_format(input_path: Path, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return EXTENSION_FORMATS.get(input_path.suffix.lower(), "png")


def atomic_save(image: Image.Image, path: Path, **save_kwargs: object) -> None:
    """Saves through a temp file beside ``path``: a crash never leaves a half file."""
    with atomic_target(path) as tmp:
        image.save(tmp, **save_kwargs)


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    image = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    if alpha is not None:
        if alpha.shape != rgb.shape[:2]:
            alpha = np.asarray(Image.fromarray(alpha).resize(image.size, Image.LANCZOS))
        image.putalpha(Image.fromarray(alpha))
    return image


def _png_with_exif(png: bytes, exif: bytes) -> bytes:
    """An eXIf chunk (PNG 1.5) inserted after IHDR, where readers look for it."""
    payload = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    ihdr_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4  # signature, IHDR length+type, data, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def encode_16bit(rgb: np.ndarray, fmt: str, alpha: np.ndarray | None = None) -> bytes:
    """PNG or TIFF bytes with 16 bits per channel from float RGB in [0, 255] (alpha uint8 or float).

    The float values are scaled straight to 0..65535, so levels between two 8-bit values survive.
    """
    levels = np.rint(np.clip(np.asarray(rgb, np.float64), 0, 255) * (65535.0 / 255.0)).astype(np.uint16)
    bgr = levels[..., ::-1]
    if alpha is not None:
        if alpha.shape != levels.shape[:2]:
            alpha = cv2.resize(np.asarray(alpha, np.float32), (levels.shape[1], levels.shape[0]),
                               interpolation=cv2.INTER_AREA)
        scaled = np.rint(np.clip(np.asarray(alpha, np.float64), 0, 255) * (65535.0 / 255.0)).astype(np.uint16)
        bgr = np.concatenate([bgr, scaled[..., None]], axis=-1)
    ok, encoded = cv2.imencode(".png" if fmt == "png16" else ".tif", np.ascontiguousarray(bgr))
    if not ok:
        raise OSError(f"OpenCV could not encode a {fmt} image of shape {levels.shape}")
    return encoded.tobytes()


def save_image(rgb: np.ndarray | Image.Image, path: Path, fmt: str = "png", alpha: np.ndarray | None = None,
               exif: bytes | None = None, quality: int = 95) -> Path:
    """Atomic write of encode_image's bytes."""
    write_bytes_atomic(Path(path), encode_image(rgb, fmt, alpha, exif, quality, name=str(path)))
    return Path(path)


def encode_image(rgb: np.ndarray | Image.Image, fmt: str = "png", alpha: np.ndarray | None = None,
                 exif: bytes | None = None, quality: int = 95, name: str = "image") -> bytes:
    """The file's bytes, in memory; RGBA keeps its alpha in PNG, WebP and TIFF, JPEG composites it over white.

    "png16" and "tiff16" write 16 bits per channel: pass the float result (not a PIL image, which
    is already 8-bit). EXIF is kept in png16; tiff16 is written without it.
    """
    if fmt in HIGH_BIT_FORMATS:
        if isinstance(rgb, Image.Image):
            if rgb.mode in ("RGBA", "LA", "PA"):
                alpha = np.asarray(rgb.getchannel("A"))
            rgb = np.asarray(rgb.convert("RGB"), np.float32)
        payload = encode_16bit(rgb, fmt, alpha)
        if exif and fmt == "png16":
            payload = _png_with_exif(payload, exif)
        elif exif:
            log.debug("%s: EXIF is not written to 16-bit TIFF", name)
        return payload
    image = rgb if isinstance(rgb, Image.Image) else to_pil(rgb, alpha)
    kwargs: dict = {"format": {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}[fmt]}
    if fmt == "jpeg":
        if image.mode == "RGBA":  # JPEG has no alpha: composite over white
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        kwargs.update(quality=quality, subsampling=0)
    if fmt == "webp":
        kwargs.update(quality=quality)
    if exif and fmt == "jpeg" and len(exif) > 65_000:  # one JPEG APP1 segment holds at most 64 KiB
        log.warning("%s: EXIF of %d bytes does not fit a JPEG segment; written without it", name, len(exif))
        exif = None
    if exif and fmt in ("jpeg", "webp", "png", "tiff"):
        kwargs["exif"] = exif
    buffer = io.BytesIO()
    try:
        image.save(buffer, **kwargs)
    except (struct.error, SyntaxError, ValueError, KeyError, OSError) as exc:
        if "exif" not in kwargs:
            raise
        # Tags the writer cannot lay out again (a BigTIFF's 64-bit offsets): the painting matters
        # more than its tags, and a retry would fail the same way.
        log.warning("%s: the source's EXIF could not be written (%s); written without it", name, exc)
        del kwargs["exif"]
        buffer = io.BytesIO()
        image.save(buffer, **kwargs)
    return buffer.getvalue()


def _exif_bytes(exif: Image.Exif) -> bytes:
    """EXIF as writers take it. A BigTIFF's comes out in its 64-bit layout, which no writer parses
    again: its top-level tags (camera, date, author) are then laid out afresh as classic TIFF."""
    data = exif.tobytes()
    if data[6:10] not in (b"II+\x00", b"MM\x00+"):
        return data
    plain = Image.Exif()
    for tag, value in exif.items():
        if tag not in (0x8769, 0x8825, 0xA005, 0x014A):  # sub-directory pointers: offsets in the old layout
            plain[tag] = value
    return plain.tobytes()
