"""Shot-cut detection on decoded frames (a content detector in the manner of PySceneDetect's)."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def hsv_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute HSV difference in [0, 1], each channel scaled by its range (ContentDetector's score)."""
    ha = cv2.cvtColor(np.clip(a, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hb = cv2.cvtColor(np.clip(b, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    diff = np.abs(ha - hb)
    # OpenCV hue is 0..179 and circular: the short way round.
    diff[..., 0] = np.minimum(diff[..., 0], 180.0 - diff[..., 0]) / 90.0
    diff[..., 1:] /= 255.0
    return float(diff.reshape(-1, 3).mean(axis=0).mean())


class CutDetector:
    """Streaming shot-cut detector: feed frames in order, ``push`` says whether a new shot starts."""

    def __init__(self, threshold: float, min_shot: int) -> None:
        self.threshold, self.min_shot = threshold, max(1, min_shot)
        self._previous: np.ndarray | None = None
        self._index = -1
        self._last_cut = 0
        self.scores: list[float] = []

    def push(self, frame: np.ndarray) -> bool:
        self._index += 1
        small = _small(frame)
        previous, self._previous = self._previous, small
        if previous is None:
            return True
        score = hsv_difference(previous, small)
        self.scores.append(score)
        if score >= self.threshold and self._index - self._last_cut >= self.min_shot:
            self._last_cut = self._index
            return True
        return False


def _small(frame: np.ndarray, longest: int = 160) -> np.ndarray:
    """Cut scores on a small copy: the mean difference barely changes, the cost falls a lot."""
    h, w = frame.shape[:2]
    if max(h, w) <= longest:
        return np.asarray(frame, np.float32)
    factor = longest / max(h, w)
    return cv2.resize(np.asarray(frame, np.float32), (max(1, round(w * factor)), max(1, round(h * factor))),
                      interpolation=cv2.INTER_AREA)


def detect_cuts(frames: Sequence[np.ndarray], threshold: float, min_shot: int) -> list[int]:
    """Indices where a new shot starts, always including 0 (if there are frames)."""
    detector = CutDetector(threshold, min_shot)
    return [i for i, frame in enumerate(frames) if detector.push(frame)]
