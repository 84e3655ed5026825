"""Report thumbnails: one small JPEG per item, its source and its result side by side.

Made once, by the worker that made the result (it holds both in memory), and kept by the driver
under the output's state folder (.nst/thumbs), so the report never decodes an archive again. They
are kept PACK to a file, as a script the report page loads (``nstThumbs(name, {key: data URI})``):
creating a file costs this machine's file system about 0.4 ms of CPU, as much as the rest of the
driver's work on a photo, so one file per thumbnail would have doubled it.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.batch.files import write_atomic
from pipeline.batch.ledger import state_dir
from pipeline.media.frames import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

THUMB = 160  # px: each half fits in THUMB x THUMB
PACK = 64  # thumbnails per file
GAP = 8  # px of white between the halves


def thumb_key(item_id: str) -> str:
    """A short, file-system-safe name for an item's thumbnail (ids are paths of any characters)."""
    digest = hashlib.sha1(item_id.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{digest[:2]}/{digest[2:16]}"


def pack_path(out_dir: Path, name: str) -> Path:
    return state_dir(out_dir) / "thumbs" / f"{name}.js"


def data_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


class ThumbPacks:
    """This run's thumbnails, PACK to a file named ``<prefix>-NNNNNN``; ``add`` says which file holds one.

    The pack being filled is written again by ``flush`` (the live report calls it every few seconds):
    a driver killed in between loses those previews only, never an output or a record."""

    def __init__(self, out_dir: Path, prefix: str) -> None:
        self.out_dir, self.prefix = Path(out_dir), prefix
        self.seq = 0
        self.current: dict[str, str] = {}
        self.dirty = False

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.seq:06d}"

    def add(self, key: str, data: bytes) -> str:
        if len(self.current) >= PACK:
            self.flush()
            self.seq += 1
            self.current = {}
        self.current[key] = data_uri(data)
        self.dirty = True
        return self.name

    def flush(self) -> None:
        if not self.dirty:
            return
        text = f"nstThumbs({json.dumps(self.name)},{json.dumps(self.current, separators=(',', ':'))});\n"
        try:
            write_atomic(pack_path(self.out_dir, self.name), text.encode("ascii"), sync=False)
        except OSError as exc:  # previews only: the run goes on
            log.warning("cannot write thumbnails to %s (%s)", pack_path(self.out_dir, self.name), exc.strerror or exc)
            return
        self.dirty = False


def read_pack(out_dir: Path, name: str) -> dict[str, str]:
    """key -> data URI of a pack on disk ({} when it is missing or damaged)."""
    try:
        text = pack_path(out_dir, name).read_text(encoding="ascii")
        return json.loads(text[text.index(",") + 1:text.rindex(")")])
    except (OSError, ValueError):
        return {}


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I") or image.mode == "F":
        return ImageOps.autocontrast(image.convert("F").convert("L")).convert("RGB")
    return image.convert("RGB")


def _video_frame(path: Path, size: int) -> Image.Image | None:
    # The pipeline's own decoder: deinterlaced and with square pixels, as the video is shown.
    from pipeline.media.frames import read_frames

    frame = next(read_frames(path, size, glance=True), None)
    return None if frame is None else Image.fromarray(frame.astype(np.uint8))


def _developed_raw(source: bytes | Path) -> Image.Image | None:
    """A camera RAW developed at half size (each 2x2 Bayer block one pixel) by LibRaw, or None."""
    from pipeline.media.images import RAW_SUPPORTED, develop_raw

    if not RAW_SUPPORTED:
        return None
    import rawpy

    with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as handle, \
            rawpy.imread(handle) as raw:
        return Image.fromarray(develop_raw(raw, half=True))


def small(source: bytes | np.ndarray | Path | None, size: int = THUMB) -> Image.Image | None:
    """An RGB image of at most size x size from encoded bytes, an array or a file; None if it cannot be shown."""
    if source is None:
        return None
    try:
        if isinstance(source, np.ndarray):
            image = Image.fromarray(np.clip(source, 0, 255).astype(np.uint8))
        elif isinstance(source, Path) and source.suffix.lower() in VIDEO_EXTENSIONS:
            image = _video_frame(source, size)
            if image is None:
                return None
        else:
            try:
                opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            except UnidentifiedImageError:
                image = _developed_raw(source)  # a camera RAW Pillow does not read (DNG, CR3, RAF...)
                if image is None:
                    return None
            else:
                if opened.width * opened.height > 200_000_000:
                    return None
                opened.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
                image = ImageOps.exif_transpose(opened)
                image.load()
        image = _rgb(image)
        image.thumbnail((size, size), Image.LANCZOS)
        return image
    except Exception as exc:  # noqa: BLE001 - a file that cannot be shown gets a placeholder, never a failure
        log.debug("no thumbnail: %s", exc)
        return None


def pair(before: bytes | np.ndarray | Path | None, after: bytes | np.ndarray | Path | None) -> bytes | None:
    """One JPEG: the source on the left, the result on the right (a missing half stays grey)."""
    halves = [small(before), small(after)]
    if halves[0] is None and halves[1] is None:
        return None
    tallest = max(h.height for h in halves if h is not None)
    # A result made at a small working size is shown as large as its source, side by side.
    halves = [h.resize((max(1, round(h.width * tallest / h.height)), tallest), Image.BILINEAR)
              if h is not None and h.height < tallest else h for h in halves]
    w = sum(h.width if h is not None else THUMB for h in halves) + GAP
    height = max(h.height for h in halves if h is not None)
    canvas = Image.new("RGB", (w, height), (255, 255, 255))
    x = 0
    for half in halves:
        if half is None:
            canvas.paste((221, 221, 221), (x, 0, x + THUMB, height))
            x += THUMB + GAP
            continue
        canvas.paste(half, (x, 0))
        x += half.width + GAP
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
