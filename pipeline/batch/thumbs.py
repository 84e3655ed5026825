"""Report thumbnails: one small JPEG per item, its source and its result side by side.

Made once, by the worker that made the result (it holds both in memory), and written by the driver
under the output's state folder (.nst/thumbs), so the report never decodes an archive again.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.batch.ledger import state_dir

log = logging.getLogger(__name__)

THUMB = 160  # px: each half fits in THUMB x THUMB
GAP = 8  # px of white between the halves
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


def thumb_key(item_id: str) -> str:
    """A short, file-system-safe name for an item's thumbnail (ids are paths of any characters)."""
    digest = hashlib.sha1(item_id.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{digest[:2]}/{digest[2:16]}"


def thumb_path(out_dir: Path, key: str) -> Path:
    return state_dir(out_dir) / "thumbs" / f"{key}.jpg"


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I") or image.mode == "F":
        return ImageOps.autocontrast(image.convert("F").convert("L")).convert("RGB")
    return image.convert("RGB")


def _video_frame(path: Path) -> Image.Image | None:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read()
    finally:
        capture.release()
    return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) if ok and frame is not None else None


def small(source: bytes | np.ndarray | Path | None, size: int = THUMB) -> Image.Image | None:
    """An RGB image of at most size x size from encoded bytes, an array or a file; None if it cannot be shown."""
    if source is None:
        return None
    try:
        if isinstance(source, np.ndarray):
            image = Image.fromarray(np.clip(source, 0, 255).astype(np.uint8))
        elif isinstance(source, Path) and source.suffix.lower() in VIDEO_SUFFIXES:
            image = _video_frame(source)
            if image is None:
                return None
        else:
            opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
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


def write_thumb(out_dir: Path, key: str, data: bytes) -> None:
    """Temp file then rename (a reader never sees half a thumbnail); no fsync: a thumbnail lost to a
    power cut is only a missing preview, and the fsync would cost more than the whole item's bookkeeping."""
    path = thumb_path(out_dir, key)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
    os.replace(tmp, path)
