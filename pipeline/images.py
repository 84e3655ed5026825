"""Still images in and out: every mode Pillow reads becomes RGB [0, 255] (+ alpha); writes are atomic."""
from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from pipeline.errors import InputError

log = logging.getLogger(__name__)

try:  # HEIC/HEIF from phones; optional so a missing wheel only disables those files
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the platform's wheel
    HEIF_SUPPORTED = False

EXTENSION_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".tif": "tiff",
                     ".tiff": "tiff", ".bmp": "png", ".gif": "png", ".heic": "jpeg", ".heif": "jpeg"}
FORMAT_SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif"}
IMAGE_EXTENSIONS = frozenset(EXTENSION_FORMATS)
_SRGB = ImageCms.createProfile("sRGB")


@dataclass
class LoadedImage:
    path: Path
    rgb: np.ndarray  # float32 (H, W, 3) in [0, 255], EXIF orientation applied, sRGB
    alpha: np.ndarray | None  # uint8 (H, W) or None
    exif: bytes | None  # original EXIF with the orientation reset to 1
    source_format: str  # Pillow's format name, e.g. "JPEG"
    source_mode: str
    frames: int  # > 1 for animated GIF/WebP (only the first is used)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def _to_srgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        mode = "RGB" if image.mode not in ("CMYK",) else image.mode
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB" if mode else None)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.warning("%s: ignoring an unusable ICC profile (%s)", getattr(image, "filename", "image"), exc)
        return image


def _high_bit_to_float(image: Image.Image) -> np.ndarray:
    """16-bit and 32-bit grey modes, scaled to [0, 255] by their real range."""
    data = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or data.max() > 255 else 255.0
    if image.mode == "F" and data.max() <= 1.0:
        peak = 1.0
    return np.clip(data / peak * 255.0, 0, 255).astype(np.float32)


def load_image(path: Path | str, max_pixels: int = 200_000_000) -> LoadedImage:
    """Reads any image Pillow can; raises InputError naming the file and the reason."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise InputError(path, f"{width}x{height} pixels exceeds the limit of {max_pixels} "
                                           f"(image.max_pixels)")
                frames = getattr(opened, "n_frames", 1)
                source_format, source_mode = opened.format or "?", opened.mode
                exif = opened.getexif()
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(path, f"refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(path, "not an image Pillow can read (unknown or lying file format)") from exc
    except PermissionError as exc:
        raise InputError(path, "permission denied") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(path, f"corrupt or truncated image ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    image = _to_srgb(image)
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), np.uint8).copy()
        rgb = np.asarray(rgba.convert("RGB"), np.float32)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _high_bit_to_float(image)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    elif image.mode in ("RGB;16", "RGBA;16") or image.mode.startswith("RGB") and image.mode not in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(image.convert("RGB"), np.float32)
    else:
        rgb = np.asarray(image.convert("RGB"), np.float32)
    if exif:
        exif[0x0112] = 1  # orientation already applied to the pixels
    return LoadedImage(path, np.ascontiguousarray(rgb), alpha, exif.tobytes() if exif else None,
                       source_format, source_mode, frames)


def output_format(input_path: Path, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return EXTENSION_FORMATS.get(input_path.suffix.lower(), "png")


def atomic_save(image: Image.Image, path: Path, **save_kwargs: object) -> None:
    """Writes to a temp file beside ``path`` and renames it: a crash never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        image.save(tmp, **save_kwargs)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    image = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    if alpha is not None:
        if alpha.shape != rgb.shape[:2]:
            alpha = np.asarray(Image.fromarray(alpha).resize(image.size, Image.LANCZOS))
        image.putalpha(Image.fromarray(alpha))
    return image


def save_image(rgb: np.ndarray, path: Path, fmt: str = "png", alpha: np.ndarray | None = None,
               exif: bytes | None = None, quality: int = 95) -> Path:
    image = to_pil(rgb, alpha)
    kwargs: dict = {"format": {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}[fmt]}
    if fmt == "jpeg":
        if image.mode == "RGBA":  # JPEG has no alpha: composite over white
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        kwargs.update(quality=quality, subsampling=0)
    if fmt == "webp":
        kwargs.update(quality=quality)
    if exif and fmt in ("jpeg", "webp", "png", "tiff"):
        kwargs["exif"] = exif
    atomic_save(image, path, **kwargs)
    return path
