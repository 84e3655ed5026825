"""Shot-cut detection on decoded frames (a content detector in the manner of PySceneDetect's), and
dissolve detection (cross-fades between shots) on the same frames."""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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


# ---------------------------------------------------------------- dissolves
# A frame m inside a dissolve is (1 - alpha) A + alpha B. Frames m - h and m + h, carried onto m along
# optical flow, explain it together (m ~= a W1 + b W2 + c, a + b ~= 1, both positive) but neither
# alone (each with its own gain and offset). The gain in R^2 is measured per tile and the median
# taken: a dissolve is global, a walker, an occluder or a flow failure local. Exposure and gamma
# ramps and fades through black are one frame under another gain: one end alone explains them.
# Measured on 20 dissolves of real shots and photo slideshows (0.3-2 s, 25 fps) and 19 stretches of
# real footage without one (pans, zooms, shake, walkers, exposure ramps, fades): 18 found, no false
# one; the strongest non-dissolve scored 0.032, the weakest dissolve found 0.086. Dissolves between
# two takes of nearly the same picture are not found (the painting barely needs to change there).
HALF_WINDOWS = (3, 5, 8, 12, 17, 25)  # frames at 25 fps: a 0.3-2 s dissolve has its ends outside one of them
GRID = 4  # tiles per side: a walker or an occluder covers a few of the 16, a dissolve all
TILE_MIN_STD = 4.0  # grey levels: flat tiles (sky, black bars) say nothing about mixing
MIN_TILES = 6  # informative tiles needed to judge a frame
DISSOLVE_THRESHOLD = 0.06  # median tile gain: midway (geometric) between the two figures above
WEIGHT_MIN = 0.05  # each end's weight: both must contribute
WEIGHT_SUM_TOL = 0.35  # |a + b - 1|: a mix keeps the sum near 1, a change of gain does not
MAX_GAP = 3  # frames: frames above the threshold this close belong to one dissolve
MIN_HITS = 2  # frames above the threshold per dissolve: one alone is noise
RAMP_MAX_RMS = 0.2  # the mixing weight's misfit to a ramp (a sanity check: a pan ramps too)
END_PAD = 8  # frames beyond the ends found, within the shot: the ramp fit sees pure A and pure B
DISSOLVE_LEAST_SIDE = 32  # px: smaller frames are not judged (a tile of 8 px; DIS flow needs 12)
DISSOLVE_BATCH = 16  # frames scored at once, spread over at most DISSOLVE_THREADS threads
DISSOLVE_THREADS = 4


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(frame, np.float32), cv2.COLOR_RGB2GRAY)


def _tiles(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    th, tw = h // GRID, w // GRID
    return image[:th * GRID, :tw * GRID].reshape(GRID, th, GRID, tw).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)


def _fit(y: np.ndarray, columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Least squares per row of y (tiles x pixels) on the columns and a constant: (R^2, coefficients)."""
    x = np.stack([*columns, np.ones_like(y)], -1).astype(np.float64)
    xtx = np.einsum("tnk,tnl->tkl", x, x) + 1e-3 * np.eye(x.shape[-1])
    coef = np.linalg.solve(xtx, np.einsum("tnk,tn->tk", x, y)[..., None])[..., 0]
    residual = y - np.einsum("tnk,tk->tn", x, coef)
    return 1.0 - (residual ** 2).sum(1) / (y.var(1) * y.shape[1] + 1e-6), coef


def _mix_gain(y: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> float:
    """Median over informative tiles of R^2(both ends) - max R^2(one end); 0 where the weights are no mix."""
    y, w1, w2 = _tiles(y), _tiles(w1), _tiles(w2)
    informative = y.std(1) > TILE_MIN_STD
    if informative.sum() < MIN_TILES:
        return 0.0
    both, coef = _fit(y, [w1, w2])
    one = np.maximum(_fit(y, [w1])[0], _fit(y, [w2])[0])
    a, b = coef[:, 0], coef[:, 1]
    mix = (a > WEIGHT_MIN) & (b > WEIGHT_MIN) & (np.abs(a + b - 1) < WEIGHT_SUM_TOL)
    return float(np.median(np.where(mix, both - one, 0.0)[informative]))


def _ramp(alpha: np.ndarray) -> tuple[int, int, float]:
    """Best (t0, t1, rms) with alpha ~= clip((t - t0) / (t1 - t0), 0, 1), t0 < t1 indices into alpha."""
    t = np.arange(len(alpha))
    best = (0, len(alpha) - 1, np.inf)
    for t0 in range(len(alpha) - 1):
        for t1 in range(t0 + 2, len(alpha)):
            rms = float(np.sqrt(np.mean((np.clip((t - t0) / (t1 - t0), 0, 1) - alpha) ** 2)))
            if rms < best[2]:
                best = (t0, t1, rms)
    return best


class DissolveFinder:
    """Streaming dissolve detector on small frames (longest side 160 px, as cut detection sees
    them): ``push`` each frame in order with whether it starts a shot, then ``spans``. Keeps only
    the frames its windows and the batch being scored still need (74 at 25 fps; up to about 160
    inside a long run of mixing). About 15 ms a frame on one core; ``threads`` (default: up to 4,
    as the machine has cores) score a batch of frames at once, and the result does not depend on them."""

    def __init__(self, fps: float = 25.0, threads: int | None = None) -> None:
        scale = max(1.0, float(fps) / 25.0)  # windows of the same duration at higher frame rates
        self.half_windows = sorted({round(h * scale) for h in HALF_WINDOWS})
        self.reach = self.half_windows[-1]
        self.gray: dict[int, np.ndarray] = {}
        self.u8: dict[int, np.ndarray] = {}
        self.cuts: list[int] = []
        self.scores: dict[int, tuple[float, int]] = {}
        self.count = self.scored = 0
        self.groups: list[list[int]] = []  # frames above the threshold, not yet turned into a span
        self.found: list[tuple[int, int]] = []
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        # Frames are scored DISSOLVE_BATCH at a time over threads (DIS flow and remap release the
        # GIL; one flow engine per thread): the glance pass waits on this before painting starts.
        self.threads = threads or min(DISSOLVE_THREADS, os.cpu_count() or 1)
        self._engines = threading.local()

    def push(self, frame: np.ndarray, starts_shot: bool = False) -> None:
        index, self.count = self.count, self.count + 1
        if starts_shot and index > 0:
            self.cuts.append(index)
        self.gray[index] = _gray(_small(frame))
        self.u8[index] = np.clip(np.rint(self.gray[index]), 0, 255).astype(np.uint8)
        if self._grid is None:
            h, w = self.gray[index].shape
            self._grid = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        if self.count - self.reach - self.scored >= DISSOLVE_BATCH:  # every window of these frames has arrived
            self._score_until(self.count - self.reach)
        self._settle(final=False)
        # a group's span reaches END_PAD frames before its windows, and a group may start at any later frame
        keep = min(g[0] for g in self.groups[:1] or [[self.scored]]) - self.reach - END_PAD
        for old in [i for i in self.gray if i < keep]:
            del self.gray[old], self.u8[old]

    def spans(self) -> list[tuple[int, int]]:
        """(first frame showing the next shot, last frame showing the one before) of each dissolve."""
        self._score_until(self.count)
        self._settle(final=True)
        return list(self.found)

    def _onto(self, src: int, dst: int) -> np.ndarray:
        """Frame ``src`` carried onto frame ``dst``'s grid along the flow between them."""
        engine = getattr(self._engines, "dis", None)
        if engine is None:
            engine = self._engines.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            engine.setFinestScale(1)  # half resolution: ~1 ms a flow at 160x90, enough to carry a tile
        flow = engine.calc(self.u8[dst], self.u8[src], None)
        xs, ys = self._grid
        return cv2.remap(self.gray[src], xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def _best(self, m: int) -> tuple[float, int]:
        """Frame m's score (the best median tile gain over its windows) and that window's half width."""
        best = (0.0, 0)
        for h in self.half_windows if min(self.gray[m].shape) >= DISSOLVE_LEAST_SIDE else ():
            if m - h < 0 or m + h >= self.count or any(m - h < c <= m + h for c in self.cuts):
                continue
            best = max(best, (_mix_gain(self.gray[m], self._onto(m - h, m), self._onto(m + h, m)), h))
        return best

    def _score_until(self, stop: int) -> None:
        frames = range(self.scored, stop)
        if self.threads > 1 and len(frames) > 1:
            # a pool per batch: nothing to shut down when a decode fails half way (thread starts are
            # microseconds against a batch's ~0.2 s)
            with ThreadPoolExecutor(min(self.threads, len(frames)), thread_name_prefix="dissolves") as pool:
                scores = list(pool.map(self._best, frames))
        else:
            scores = [self._best(m) for m in frames]
        for m, best in zip(frames, scores, strict=True):
            self._record(m, best)

    def _record(self, m: int, best: tuple[float, int]) -> None:
        self.scores[m] = best
        self.scored = m + 1
        if best[0] > DISSOLVE_THRESHOLD:
            group = self.groups[-1] if self.groups else None
            # Never across a cut, and never longer than a dissolve can be seen (its frames and both
            # windows): back-to-back mixes would otherwise keep every frame and make the ramp fit slow.
            if (group is not None and m - group[-1] <= MAX_GAP and m - group[0] <= 3 * self.reach
                    and not any(group[-1] < c <= m for c in self.cuts)):
                group.append(m)
            else:
                self.groups.append([m])

    def _settle(self, final: bool) -> None:
        """Groups no later frame can join, whose ends have arrived, become spans (or are dropped)."""
        while self.groups:
            group = self.groups[0]
            last_end = max(m + self.scores[m][1] for m in group) + END_PAD
            if not final and (self.scored <= group[-1] + MAX_GAP or self.count <= last_end):
                return
            self.groups.pop(0)
            if len(group) < MIN_HITS:
                continue
            # the ends: before any of the next shot, after all of the one before, inside the shot
            first_end = min(m - self.scores[m][1] for m in group) - END_PAD
            e1 = max([first_end, 0] + [c for c in self.cuts if c <= group[0]])
            e2 = min([last_end, self.count - 1] + [c - 1 for c in self.cuts if c > group[-1]])
            alpha = np.array([0.0] + [self._weight(t, e1, e2) for t in range(e1 + 1, e2)] + [1.0])
            t0, t1, rms = _ramp(alpha)
            first, last = e1 + t0 + 1, e1 + t1 - 1
            # The fit's last weight is set, not measured. A ramp that reaches the next shot only there
            # saw no frame of it alone: a stray pair of frames before a dissolve (or its start, which
            # would cut it short), or a mix that goes on to a cut or the video's end (fog or smoke
            # drifting over a scene). (At the fit's start a dark or slow dissolve's ramp may begin at
            # once and still be one: 2 of the 20 measured did.)
            unseen = t1 == len(alpha) - 1
            # one picture mixing into the next and on into a third (a slideshow that never holds
            # still) can fit overlapping ramps: the first stands, a chain cannot start inside it
            if rms <= RAMP_MAX_RMS and not unseen and not (self.found and first <= self.found[-1][1]):
                self.found.append((first, last))

    def _weight(self, t: int, e1: int, e2: int) -> float:
        """The share of end ``e2`` in frame ``t`` (a whole-frame fit on both ends carried onto it)."""
        _, coef = _fit(self.gray[t].reshape(1, -1), [self._onto(e1, t).reshape(1, -1),
                                                      self._onto(e2, t).reshape(1, -1)])
        a, b = coef[0, 0], coef[0, 1]
        return float(np.clip(b / (a + b), -0.5, 1.5)) if a + b > 0.3 else 0.5


def find_dissolves(frames: Sequence[np.ndarray], fps: float = 25.0,
                   shot_starts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """``DissolveFinder`` over a whole list of frames."""
    finder = DissolveFinder(fps)
    starts = set(shot_starts)
    for index, frame in enumerate(frames):
        finder.push(frame, index in starts)
    return finder.spans()
