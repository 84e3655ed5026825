"""Records the optimisation takes and returns (no TensorFlow import: the driver reads them too)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


@dataclass(frozen=True)
class Iterate:
    """One progress record handed to callbacks (never printed from here)."""

    scale: int
    scales: int
    size: tuple[int, int]
    iteration: int
    iterations: int
    loss: float
    elapsed: float


class StyleMasks(NamedTuple):
    """Where each style applies, on every style layer's grid (a NamedTuple: tf.function takes it whole)."""

    masks: dict[str, Any]  # layer -> tf.Tensor [S, h, w, 1] in [0, 1], one mask per style
    shares: Any  # tf.Tensor [S]: each style's weight over the sum of the weights


@dataclass
class Targets:
    content: dict[str, Any]  # layer -> tf.Tensor
    # layer -> tf.Tensor: the blended Gram [1, C, C], or with style_masks each style's own [S, C, C]
    grams: dict[str, Any]
    style_masks: StyleMasks | None = None


@dataclass
class TemporalTarget:
    """Warped previous stylized frame (H, W, 3 in [0, 255]) and reliability mask (H, W) in [0, 1]."""

    warped: np.ndarray
    mask: np.ndarray


@dataclass
class StylizeResult:
    image: np.ndarray  # float32 (H, W, 3) in [0, 255]
    evaluations: int
    seconds: float
    final_loss: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (evals, seconds, loss)
