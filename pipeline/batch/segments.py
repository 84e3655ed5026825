"""Video work units: shots split into segments that run in parallel, and how their frames join.

A shot (cut detection) never shares a temporal chain with its neighbours. A long shot is cut into
pieces that run on different workers. Pieces pair up around key frames: a backward piece and a
forward piece both start by stylizing the same key frame (the same computation on both workers)
and propagate away from it, one towards the shot's start and one towards its end, so the two
chains meet at one frame computed alike instead of at a seam between independent solutions. With
two workers a shot has no seam at all. Where a forward piece meets the backward piece of the next
key frame, the forward piece runs ``overlap`` frames further and the result cross-fades linearly
from one chain to the other over those frames. A dissolve between two shots is joined the same way:
the first shot's chain runs on through it, and the next shot's runs back over it from its first frame.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import fit_name, write_bytes_atomic
from pipeline.batch.ledger import SegmentSpec, state_dir

log = logging.getLogger(__name__)

MIN_AUTO_SEGMENT = 8  # shorter automatic segments spend more on warm-up than they save


def auto_segment_frames(total_frames: int, workers: int, overlap: int) -> int:
    """Segment length so one long video keeps every worker busy (0 in the config means this)."""
    if workers <= 1:
        return max(total_frames, 1)
    length = math.ceil(total_frames / workers)
    return max(length, MIN_AUTO_SEGMENT, overlap + 1)


def plan_segments(total_frames: int, shot_starts: Sequence[int], segment_frames: int,
                  overlap: int, dissolves: Sequence[tuple[int, int]] = ()) -> list[SegmentSpec]:
    """Segments covering every frame, never across a cut; see the module docstring for the layout.

    Piece j of P in a shot runs backward when P - j is even, so the last piece always runs forward
    and an odd piece count starts with a forward piece from the shot's first frame.

    ``dissolves``: (first, last) frames of cross-fades between two shots. The next shot starts
    after the dissolve, fresh, and a backward chain from its first frame runs over the dissolve (its
    first piece, lengthened, or a piece of its own sharing that key frame), cross-faded with the
    chain of the shot before, which runs on to the dissolve's end. A dissolve with a cut inside is
    left to the cut.
    """
    cuts = {s for s in shot_starts if 0 <= s < total_frames} | {0}
    leads = {last + 1: first for first, last in dissolves
             if 0 < first <= last < total_frames - 1 and not any(first < c <= last for c in cuts)}
    bounds = sorted(cuts | set(leads)) + [total_frames]
    specs: list[SegmentSpec] = []
    for shot_start, shot_stop in itertools.pairwise(bounds):
        # Before a dissolve into the next shot the pieces share the frames up to the dissolve; its
        # frames go to the last piece, so the next shot's chain fades in over all of them.
        length = max(1, leads.get(shot_stop, shot_stop) - shot_start)
        pieces = max(1, round(length / segment_frames)) if segment_frames > 0 else 1
        pieces = min(pieces, length)
        # Equal pieces, so a shot of 50 with length 24 becomes 25+25, not 24+24+2.
        cores = [shot_start + round(i * length / pieces) for i in range(pieces + 1)]
        # The cross-fade must stay inside the backward piece it runs into.
        shot_overlap = max(0, min(overlap, length // pieces - 1))
        # Over a dissolve, after the frame where the previous shot's last chain starts (a key frame
        # another piece shares): every frame is in at most two chains. That frame is before the
        # dissolve unless the dissolve starts the previous shot.
        lead = max(leads[shot_start], specs[-1].start + 1) if shot_start in leads else shot_start
        if lead < shot_start and pieces % 2 == 1:  # the shot starts forward: a backward piece of its own
            specs.append(SegmentSpec(len(specs), lead, shot_start + 1, shot_start, reverse=True))
        for j, (a, b) in enumerate(itertools.pairwise(cores)):
            if (pieces - j) % 2 == 0:  # backward from b, the key frame it shares with the next piece
                specs.append(SegmentSpec(len(specs), lead if j == 0 else a, b + 1, shot_start, reverse=True))
            else:
                stop = min(shot_stop, b + shot_overlap) if j + 1 < pieces else shot_stop
                specs.append(SegmentSpec(len(specs), a, stop, shot_start))
    return specs


def planned_dissolves(specs: Sequence[SegmentSpec]) -> list[tuple[int, int]]:
    """Frames [first, stop) over which a shot's chain runs back into the shot before: its dissolves."""
    return sorted({(s.start, s.shot_start) for s in specs if s.start < s.shot_start})


def segment_key(spec: SegmentSpec) -> int:
    """The frame a segment's chain starts from: its last frame when it runs backward, else its first."""
    return spec.stop - 1 if spec.reverse else spec.start


def shot_keys(spec: SegmentSpec, specs: Sequence[SegmentSpec]) -> list[int]:
    """Key frames of the segment's shot in time order, up to and including the segment's own."""
    own = segment_key(spec)
    return sorted({segment_key(s) for s in specs if s.shot_start == spec.shot_start and segment_key(s) <= own})


def settle_stop(key: int, specs: Sequence[SegmentSpec], settle_frames: int) -> int:
    """End (exclusive) of the frames after ``key`` that settle it: inside the forward segment
    starting there, so both segments sharing the key frame settle it through the same frames."""
    partner = next(s for s in specs if not s.reverse and s.start == key)
    return min(key + 1 + settle_frames, partner.stop)


def frames_dir(out_dir: Path, item_id: str) -> Path:
    """Where a video's finished segment frames wait for the final encode."""
    safe = item_id.replace(os.sep, "__").replace("/", "__")
    return state_dir(out_dir) / "frames" / fit_name(safe)  # a deep folder's path can outgrow one name


def segment_dir(out_dir: Path, item_id: str, idx: int) -> Path:
    return frames_dir(out_dir, item_id) / f"seg{idx:04d}"


def encode_png(frame: np.ndarray) -> bytes:
    """RGB [0, 255] array to PNG bytes (what workers send back to the driver)."""
    rgb8 = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)


def chunk_range(spec: SegmentSpec, done: int, chunk_frames: int) -> tuple[int, int]:
    """Frames [lo, hi) of the chunk that follows the first ``done`` frames of the segment's chain.

    A chain runs from the segment's key frame: forward from ``start``, or backward from ``stop - 1``.
    """
    count = spec.stop - spec.start
    step = min(chunk_frames, count - done)
    if step <= 0:
        raise ValueError(f"segment {spec.idx}: nothing left after {done} of {count} frames")
    if spec.reverse:
        return spec.stop - done - step, spec.stop - done
    return spec.start + done, spec.start + done + step


def chain_previous(spec: SegmentSpec, lo: int, hi: int) -> int | None:
    """The frame the chunk [lo, hi) continues from (the one before it in chain order), if any."""
    if spec.reverse:
        return hi if hi < spec.stop else None
    return lo - 1 if lo > spec.start else None


def write_segment_frames(out_dir: Path, item_id: str, spec: SegmentSpec, pngs: Sequence[bytes],
                         lo: int | None = None) -> Path:
    """Frames lo, lo+1, ... (default: the whole segment) as NNNNNN.png, the global frame index; a
    rerun of the segment overwrites, never adds."""
    whole = lo is None
    lo = spec.start if lo is None else lo
    if (whole and len(pngs) != spec.stop - spec.start) or lo < spec.start or lo + len(pngs) > spec.stop:
        raise ValueError(f"segment {spec.idx}: {len(pngs)} frames from {lo} for [{spec.start}, {spec.stop})")
    folder = segment_dir(out_dir, item_id, spec.idx)
    for offset, data in enumerate(pngs):
        write_bytes_atomic(folder / f"{lo + offset:06d}.png", data)
    return folder


def read_segment_frame(out_dir: Path, item_id: str, spec: SegmentSpec, index: int) -> np.ndarray:
    path = segment_dir(out_dir, item_id, spec.idx) / f"{index:06d}.png"
    return decode_png(path.read_bytes())


# A long freeze (a title card, a slideshow) is one run of repeats: each chunk walks back over at
# most this many frames. Stopped short, it starts from a repeat, within a repeat's noise of the frame
# painted, instead of that frame.
ANCHOR_WALK = 256


def painted_anchor(out_dir: Path, item_id: str, spec: SegmentSpec, index: int) -> int:
    """The frame whose painting frame ``index`` of the segment's chain carries: itself, or, when it
    was held as a repeat (the same pixels), the frame painted before it in chain order."""
    step = 1 if spec.reverse else -1
    frame = read_segment_frame(out_dir, item_id, spec, index)
    for _ in range(ANCHOR_WALK):
        if not (spec.start <= index + step < spec.stop
                and np.array_equal(read_segment_frame(out_dir, item_id, spec, index + step), frame)):
            break
        index += step
    return index


def frame_weights(index: int, specs: Sequence[SegmentSpec]) -> list[tuple[SegmentSpec, float]]:
    """The segments that computed frame ``index`` and their weights in the final frame.

    Two segments share a frame only where they meet: over the shared frames the weight moves
    linearly from the lower-numbered segment to the higher one (a shared key frame is their mean).
    """
    covering = [s for s in specs if s.start <= index < s.stop]
    if len(covering) == 1:
        return [(covering[0], 1.0)]
    if len(covering) != 2:
        raise ValueError(f"frame {index} is in {len(covering)} segments")
    first, second = sorted(covering, key=lambda s: s.idx)
    lo, hi = second.start, first.stop
    w = (index - lo + 1) / (hi - lo + 1)
    return [(first, 1.0 - w), (second, w)]


# Where two chains meet they were painted independently, so their brush strokes differ. A linear
# cross-fade of two unrelated textures keeps 1/sqrt(2) of their contrast half way (their sum's
# energy is w1^2 + w2^2 of theirs, not w1 + w2): on a pan at 192 px the seam's frames had 2.2x the
# style distance of either chain. ``blend_shared`` fades the picture (what a Gaussian of
# side/SEAM_SCALE px keeps) linearly and scales the texture above it back to the two chains'
# weighted local energy (Heitz and Neyret's variance-preserving blend, with the gain measured rather
# than assumed, so strokes the chains share are not sharpened): 1.45x instead of 2.2x on that pan,
# whose seam still flickers less than one unbroken chain over the same frames (README, Workers).
SEAM_SCALE = 96
SEAM_MAX_GAIN = 2.0


def blend_shared(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Frames of one index from two chains, weights summing to 1, cross-faded keeping the texture's
    contrast (see ``SEAM_SCALE``). Identical or flat frames come out as the linear blend."""
    sigma = max(parts[0][0].shape[:2]) / SEAM_SCALE
    frames = [np.asarray(frame, np.float32) for frame, _ in parts]
    lows = [cv2.GaussianBlur(frame, (0, 0), sigma) for frame in frames]
    highs = [frame - low for frame, low in zip(frames, lows, strict=True)]
    low = sum(w * x for (_, w), x in zip(parts, lows, strict=True))
    high = sum(w * x for (_, w), x in zip(parts, highs, strict=True))

    def energy(texture: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(np.mean(np.square(texture), axis=-1), (0, 0), 2 * sigma)

    expected = sum(w * energy(x) for (_, w), x in zip(parts, highs, strict=True))
    gain = np.sqrt(expected / np.maximum(energy(high), 1e-6))
    gain = np.clip(gain, 1.0, SEAM_MAX_GAIN)[..., None]
    return np.clip(low + gain * high, 0, 255)


def assembled_frames(out_dir: Path, item_id: str, specs: Sequence[SegmentSpec],
                     repeats: list[int] | None = None) -> Iterator[np.ndarray]:
    """Final frames in order, one per source frame; shared frames blended, read lazily from disk.

    A frame that every chain covering it held as a repeat of the frame before (the same pixels) is
    delivered as that frame, also where two chains are cross-faded (their weights differ from one
    frame to the next); ``repeats`` collects the indices of such frames."""
    before: dict[int, np.ndarray] = {}  # segment -> its frame before
    delivered: np.ndarray | None = None
    for index in range(frame_count(specs)):
        parts = frame_weights(index, specs)
        painted = {spec.idx: read_segment_frame(out_dir, item_id, spec, index) for spec, _ in parts}
        if delivered is not None and all(idx in before and np.array_equal(before[idx], frame)
                                         for idx, frame in painted.items()):
            if repeats is not None:
                repeats.append(index)
        elif len(parts) == 1:
            delivered = painted[parts[0][0].idx]
        else:
            delivered = blend_shared([(painted[spec.idx], w) for spec, w in parts])
        before = painted
        yield delivered


def frame_count(specs: Sequence[SegmentSpec]) -> int:
    return max((s.stop for s in specs), default=0)
