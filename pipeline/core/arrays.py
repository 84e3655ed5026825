"""Image arrays (H, W, 3) float32 in [0, 255]: sizes, resampling, colour transfer. NumPy and OpenCV only."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import cv2
import numpy as np

MIN_SIDE = 32  # four 2x2 poolings before conv5_1 leave at least 2x2 positions
COLOR_MATCH_METHODS = ("eig", "chol")
MATCH_PASSES = 20  # at most, when clipping into [0, 255] pulls the matched colours away (see match_colors)
MATCH_MEAN_TOLERANCE = 0.5  # grey levels, per channel
MATCH_COV_TOLERANCE = 0.01  # relative Frobenius norm of the covariance error
_STATS_CHUNK = 1 << 20  # pixels per float64 chunk when summing colour statistics of a large style
_BLOCK = re.compile(r"^block(\d+)_")


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


def resize(image: np.ndarray, size_hw: tuple[int, int], enlarge: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Area averaging when reducing (no aliasing of fine texture), ``enlarge`` (an OpenCV
    interpolation) when enlarging; clipped to [0, 255]."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image.astype(np.float32, copy=False)
    shrinking = h * w < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrinking else enlarge
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


def colour_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and covariance (3, 3) of the RGB values, summed in float64 chunk by chunk
    (a 100 MB style would otherwise need a float64 copy of itself)."""
    pixels = np.asarray(image).reshape(-1, 3)
    total = np.zeros(3)
    outer = np.zeros((3, 3))
    for start in range(0, len(pixels), _STATS_CHUNK):
        chunk = pixels[start:start + _STATS_CHUNK].astype(np.float64)
        total += chunk.sum(axis=0)
        outer += chunk.T @ chunk
    n = max(len(pixels), 1)
    mean = total / n
    return mean, outer / n - np.outer(mean, mean)


def _sqrt_and_inverse_sqrt(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 0.0)
    return (vectors * np.sqrt(values)) @ vectors.T, (vectors / np.sqrt(values)) @ vectors.T


def _linear_match(image: np.ndarray, source: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray],
                  method: str, eps: float) -> np.ndarray:
    mu_s, cov_s = source
    mu_c, cov_c = target
    cov_s = cov_s + eps * np.eye(3)
    if method == "eig":
        root_c, _ = _sqrt_and_inverse_sqrt(cov_c)
        _, inv_root_s = _sqrt_and_inverse_sqrt(cov_s)
        transform = root_c @ inv_root_s
    else:
        transform = np.linalg.cholesky(cov_c + eps * np.eye(3)) @ np.linalg.inv(np.linalg.cholesky(cov_s))
    shift = mu_c - transform @ mu_s
    # cv2.transform applies the 3x4 affine map per pixel ~10x faster than a (N, 3) @ (3, 3) product.
    affine = np.hstack([transform, shift[:, None]])
    pixels = np.ascontiguousarray(image, np.float32).reshape(-1, 1, 3)
    return cv2.transform(pixels, affine).reshape(np.shape(image))


def _stats_close(stats: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray]) -> bool:
    return bool(np.abs(stats[0] - target[0]).max() < MATCH_MEAN_TOLERANCE
                and np.linalg.norm(stats[1] - target[1]) <= MATCH_COV_TOLERANCE * np.linalg.norm(target[1]))


def match_colors(style: np.ndarray, content: np.ndarray, method: str = "eig", eps: float = 1e-2,
                 clip: bool = True, passes: int = MATCH_PASSES) -> np.ndarray:
    """The style's RGB values moved by x' = A x + b onto the content's colour mean and covariance.

    Gatys et al. 2016 ("Preserving colour in neural artistic style transfer", section 2.1): with
    A Sigma_S A^T = Sigma_C and b = mu_C - A mu_S, the transformed style has exactly the content's
    mean and covariance. ``eig`` takes A = Sigma_C^(1/2) Sigma_S^(-1/2) with symmetric square
    roots (the "image analogies" variant, Gatys' own default, which rotates colours least); ``chol``
    takes A = L_C L_S^(-1) from Cholesky factors. ``eps`` (grey levels squared) is added to the
    style's diagonal so a grey or flat style does not make A singular (and, for ``chol``, to the
    content's, whose factor needs it too): without clipping the match is exact up to that.

    With ``clip`` the result is an image again, in [0, 255]. This departs from the paper's code,
    which clips once: a saturated style matched to a dark photo then lands several grey levels
    and tens of percent of covariance away from the photo (6 levels and 29% for the swirls on
    scikit-image's coffee). Matching the clipped result again, up to ``passes`` times, until the
    mean is within MATCH_MEAN_TOLERANCE and the covariance within MATCH_COV_TOLERANCE, brings it
    back (in about ten passes there; each pass is two sweeps over the style).
    """
    if method not in COLOR_MATCH_METHODS:
        raise ValueError(f"colour matching method {method!r}: expected one of {', '.join(COLOR_MATCH_METHODS)}")
    target = colour_stats(content)
    out = _linear_match(style, colour_stats(style), target, method, eps)
    if not clip:
        return out
    out = np.clip(out, 0, 255)
    for _ in range(passes - 1):
        stats = colour_stats(out)
        if _stats_close(stats, target):
            break
        # The corrections use the symmetric map whatever the first one was: it is the smallest
        # change that fixes the statistics, where a Cholesky map also turns the colours a little
        # each time and can stall away from the target.
        out = np.clip(_linear_match(out, stats, target, "eig", eps), 0, 255)
    return out


def feature_grid(height: int, width: int, layer: str) -> tuple[int, int]:
    """(h, w) of a VGG layer's feature map for an input of (height, width).

    Block N sits behind N - 1 poolings of 2x2 with stride 2 and no padding, each of which floors
    an odd side (Keras' MaxPooling2D / AveragePooling2D with padding="valid").
    """
    match = _BLOCK.match(layer)
    if not match:
        raise ValueError(f"{layer!r} is not a VGG layer name like block3_conv1")
    for _ in range(int(match.group(1)) - 1):
        height, width = height // 2, width // 2
    return height, width


def check_mask(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    """A style mask as float32 (H, W) in [0, 1]; a (H, W, 1) array is accepted, anything else is refused."""
    array = np.asarray(mask, np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"{what} has shape {np.shape(mask)}; expected (H, W) values in [0, 1]")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError(f"{what} holds values outside [0, 1]")
    return array


def mask_to_grid(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A mask of any size on an (h, w) grid: area average when shrinking (each cell gets the covered
    fraction of its pixels), linear when growing; float32 in [0, 1]."""
    h, w = size_hw
    if mask.shape == (h, w):
        return mask.astype(np.float32, copy=False)
    shrinking = h * w < mask.shape[0] * mask.shape[1]
    out = cv2.resize(mask.astype(np.float32, copy=False), (w, h),
                     interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.clip(out, 0, 1).reshape(h, w)
