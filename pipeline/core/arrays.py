"""Image arrays (H, W, 3) float32 in [0, 255]: sizes, resampling, colour transfer. NumPy and OpenCV only."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import cv2
import numpy as np

MIN_SIDE = 32  # four 2x2 poolings before conv5_1 leave at least 2x2 positions


def scale_sizes(height: int, width: int, scales: Sequence[float], min_side: int) -> list[tuple[int, int]]:
    """Coarse-to-fine (h, w) sizes; coarse levels whose short side would fall under min_side are dropped."""
    sizes: list[tuple[int, int]] = []
    for i, scale in enumerate(scales):
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        last = i == len(scales) - 1
        if not last and min(h, w) < min_side:
            continue
        if sizes and sizes[-1] == (h, w):
            continue
        sizes.append((h, w))
    return sizes


def resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image.astype(np.float32, copy=False)
    shrinking = h * w < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    out = cv2.resize(image.astype(np.float32, copy=False), (w, h), interpolation=interp)
    return np.clip(out, 0, 255)


def fit_longest(image: np.ndarray, longest: int) -> tuple[int, int]:
    h, w = image.shape[:2]
    factor = longest / max(h, w)
    return max(1, round(h * factor)), max(1, round(w * factor))


def luminance(image: np.ndarray) -> np.ndarray:
    return image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114


def to_luminance_rgb(image: np.ndarray, match: np.ndarray | None = None) -> np.ndarray:
    """Grey RGB from luminance; with ``match``, its mean and spread matched to match's luminance."""
    y = luminance(image.astype(np.float32))
    if match is not None:
        ref = luminance(match.astype(np.float32))
        y = (y - y.mean()) / (y.std() + 1e-6) * ref.std() + ref.mean()
    return np.repeat(np.clip(y, 0, 255)[..., None], 3, axis=-1)


def recombine_colors(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance of the stylized image with the content's chroma (Gatys et al. 2016, colour preservation)."""
    content_ycc = cv2.cvtColor(np.clip(content, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2YCrCb)
    styled_y = cv2.cvtColor(np.clip(stylized, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2YCrCb)[..., 0]
    content_ycc[..., 0] = styled_y
    return np.clip(cv2.cvtColor(content_ycc, cv2.COLOR_YCrCb2RGB) * 255.0, 0, 255)


def array_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
