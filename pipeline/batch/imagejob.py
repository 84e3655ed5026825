"""One image in, one stylized image out: the unit of work shared by every executor.

TensorFlow-free at import: the stylizer is handed in by the worker that owns it.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from pipeline.atomic import fit_name, write_bytes_atomic
from pipeline.config import Config
from pipeline.core.arrays import MIN_SIDE, fit_longest, resize
from pipeline.core.types import Iterate
from pipeline.errors import ConfigError, InputError
from pipeline.media.images import FORMAT_SUFFIX, HIGH_BIT_FORMATS, encode_image, load_image, output_format, to_pil

if TYPE_CHECKING:  # the driver imports this module and must not load TensorFlow
    from pipeline.core.stylizer import Stylizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageJob:
    source: Path
    output: Path


@dataclass
class ImageOutcome:
    job: ImageJob
    ok: bool
    reason: str = ""
    skipped: bool = False
    seconds: float = 0.0
    evaluations: int = 0
    size: tuple[int, int] = (0, 0)
    extra: dict = field(default_factory=dict)
    intermediates: list[tuple[int, bytes]] = field(default_factory=list)  # (iteration, encoded image), --save-every


def load_styles(paths: Sequence[Path], max_pixels: int) -> list[np.ndarray]:
    """Style images as RGB arrays; an unreadable style stops the run (nothing can be done without it)."""
    return [load_image(p, max_pixels).rgb for p in paths]


def check_style_weights(styles: Sequence[Path], weights: Sequence[float] | None) -> list[float]:
    if not styles:
        raise ConfigError("no style given: pass --style PAINTING")
    if not weights:
        return [1.0] * len(styles)
    if len(weights) != len(styles):
        raise ConfigError(f"{len(weights)} --style-weight values for {len(styles)} --style images; "
                       f"give one weight per style")
    # NaN passes both comparisons and would blend the styles into NaN losses.
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError("--style-weight values must be finite, non-negative and not all zero")
    return list(weights)


def output_path_for(source: Path, out_dir: Path, fmt: str, taken: set[Path] | None = None,
                    relative_to: Path | None = None) -> Path:
    """Mirrored output path; a name already taken by another input gets a numbered suffix."""
    relative = source.relative_to(relative_to) if relative_to else Path(source.name)
    suffix = FORMAT_SUFFIX[output_format(source, fmt)]
    candidate = out_dir / relative.with_suffix(suffix)
    if taken is not None:
        stem, n = candidate.stem, 2
        while candidate in taken:
            candidate = candidate.with_name(f"{stem}-{n}{suffix}")
            n += 1
        taken.add(candidate)
    return candidate


def stylize_file(stylizer: Stylizer, job: ImageJob, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                 config: Config, init: np.ndarray | None = None,
                 callback: Callable[[Iterate], None] | None = None,
                 masks: Sequence[np.ndarray | None] | None = None) -> ImageOutcome:
    """stylize_to_bytes, then atomic writes to ``job.output`` (and its intermediate images)."""
    payload, outcome = stylize_to_bytes(stylizer, job, styles, style_weights, config, init, callback, masks)
    for iteration, data in outcome.intermediates:
        write_bytes_atomic(intermediate_path(job.output, iteration), data)
    write_bytes_atomic(job.output, payload)
    return outcome


def intermediate_path(output: Path, iteration: int) -> Path:
    """photo.jpg -> photo.iter00050.jpg: beside the output, sorting in iteration order."""
    return output.with_name(fit_name(f"{output.stem}.iter{iteration:05d}{output.suffix}"))


def stylize_to_bytes(stylizer: Stylizer, job: ImageJob, styles: Sequence[np.ndarray],
                     style_weights: Sequence[float], config: Config, init: np.ndarray | None = None,
                     callback: Callable[[Iterate], None] | None = None,
                     masks: Sequence[np.ndarray | None] | None = None) -> tuple[bytes, ImageOutcome]:
    """Loads, stylizes at the working size and encodes the output file in memory; errors name the file.

    The photo is reduced while decoding (see load_image), so a 24 MP file costs little memory;
    with image.keep_resolution the result is upscaled back to the file's size in 8-bit. Only the
    driver writes into the output folder (workers hand it these bytes)."""
    start = time.perf_counter()
    loaded = load_image(job.source, config.image.max_pixels, max_side=config.image.size)
    hw = fit_longest(loaded.rgb, config.image.size)
    if min(hw) < MIN_SIDE:
        width, height = loaded.original_size
        raise InputError(job.source, f"too small: {width}x{height} becomes "
                                     f"{hw[1]}x{hw[0]} at image.size {config.image.size}; VGG needs at "
                                     f"least {MIN_SIDE} px on the short side")
    content = resize(loaded.rgb, hw)
    del loaded.rgb  # the float photo is not needed while the optimisation runs
    fmt = output_format(job.source, config.image.format)

    def encode(rgb: np.ndarray) -> tuple[bytes, tuple[int, int]]:
        alpha = _alpha_for(loaded.alpha, rgb.shape[:2])
        if fmt in HIGH_BIT_FORMATS:  # from the float result: no 8-bit step on the way
            if config.image.keep_resolution and rgb.shape[1::-1] != tuple(loaded.original_size):
                rgb = np.clip(cv2.resize(rgb, loaded.original_size, interpolation=cv2.INTER_LANCZOS4), 0, 255)
                alpha = _alpha_for(loaded.alpha, rgb.shape[:2])
            return (encode_image(rgb, fmt, alpha=alpha, exif=loaded.exif, name=str(job.output)),
                    (rgb.shape[1], rgb.shape[0]))
        image = to_pil(rgb, alpha)
        if config.image.keep_resolution and image.size != loaded.original_size:
            image = image.resize(loaded.original_size, Image.LANCZOS)
        return encode_image(image, fmt, exif=loaded.exif, quality=config.image.jpeg_quality,
                            name=str(job.output)), image.size

    intermediates: list[tuple[int, bytes]] = []
    every = config.optim.save_every or None
    result = stylizer.stylize(content, styles, style_weights, init=init, callback=callback, masks=masks,
                              save_every=every, on_image=(lambda i, rgb: intermediates.append(
                                  (i, encode(rgb)[0]))) if every else None)
    payload, size = encode(result.image)
    return payload, ImageOutcome(job, True, reason=loaded.note, seconds=time.perf_counter() - start,
                                 evaluations=result.evaluations, size=size, intermediates=intermediates,
                                 extra={"final_loss": result.final_loss, "note": loaded.note,
                                        "source_size": loaded.original_size, "source_mode": loaded.source_mode,
                                        "source_format": loaded.source_format})


def _alpha_for(alpha: np.ndarray | None, hw: tuple[int, int]) -> np.ndarray | None:
    if alpha is None or alpha.shape == hw:
        return alpha
    return cv2.resize(alpha, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
