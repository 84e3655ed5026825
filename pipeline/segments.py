"""Video work units: shots split into overlapping segments, and the cross-fade that joins them.

A shot (cut detection) never shares a temporal chain with its neighbours. A long shot is cut into
segments that run in parallel on different workers; each segment but a shot's first starts
``overlap`` frames early, so its chain is already warm when it reaches its own frames, and over
those overlap frames the result fades linearly from the previous segment to this one.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import write_bytes_atomic
from pipeline.ledger import SegmentSpec, state_dir

log = logging.getLogger(__name__)

MIN_AUTO_SEGMENT = 8  # shorter automatic segments spend more on warm-up than they save


def auto_segment_frames(total_frames: int, workers: int, overlap: int) -> int:
    """Segment length so one long video keeps every worker busy (0 in the config means this)."""
    if workers <= 1:
        return max(total_frames, 1)
    length = math.ceil(total_frames / workers)
    return max(length, MIN_AUTO_SEGMENT, overlap + 1)


def plan_segments(total_frames: int, shot_starts: Sequence[int], segment_frames: int,
                  overlap: int) -> list[SegmentSpec]:
    """Segments covering every frame; within a shot, segment k>0 starts ``overlap`` frames early."""
    starts = sorted({s for s in shot_starts if 0 <= s < total_frames} | {0})
    bounds = starts + [total_frames]
    specs: list[SegmentSpec] = []
    for shot_start, shot_stop in zip(bounds, bounds[1:]):
        length = shot_stop - shot_start
        pieces = max(1, round(length / segment_frames)) if segment_frames > 0 else 1
        # Equal pieces, so a shot of 50 with length 24 becomes 25+25, not 24+24+2.
        cores = [shot_start + round(i * length / pieces) for i in range(pieces + 1)]
        # An overlap longer than a piece would reach into the segment before the previous one.
        shot_overlap = max(0, min(overlap, length // pieces - 1))
        for a, b in zip(cores, cores[1:]):
            start = max(shot_start, a - shot_overlap) if a > shot_start else a
            specs.append(SegmentSpec(len(specs), start, b, shot_start))
    return specs


def frames_dir(out_dir: Path, item_id: str) -> Path:
    """Where a video's finished segment frames wait for the final encode."""
    safe = item_id.replace(os.sep, "__").replace("/", "__")
    return state_dir(out_dir) / "frames" / safe


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


def write_segment_frames(out_dir: Path, item_id: str, spec: SegmentSpec, pngs: Sequence[bytes]) -> Path:
    """Each frame as NNNNNN.png (global frame index); a rerun of the segment overwrites, never adds."""
    if len(pngs) != spec.stop - spec.start:
        raise ValueError(f"segment {spec.idx}: {len(pngs)} frames for [{spec.start}, {spec.stop})")
    folder = segment_dir(out_dir, item_id, spec.idx)
    for offset, data in enumerate(pngs):
        write_bytes_atomic(folder / f"{spec.start + offset:06d}.png", data)
    return folder


def read_segment_frame(out_dir: Path, item_id: str, spec: SegmentSpec, index: int) -> np.ndarray:
    path = segment_dir(out_dir, item_id, spec.idx) / f"{index:06d}.png"
    return decode_png(path.read_bytes())


def blend_weight(index: int, spec: SegmentSpec, previous: SegmentSpec) -> float:
    """Weight of ``spec`` (the later segment) at an overlap frame: linear from ~0 to ~1."""
    overlap = previous.stop - spec.start
    return (index - spec.start + 1) / (overlap + 1)


def assembled_frames(out_dir: Path, item_id: str, specs: Sequence[SegmentSpec]) -> Iterator[np.ndarray]:
    """Final frames in order, one per source frame; overlaps cross-faded, read lazily from disk."""
    specs = sorted(specs, key=lambda s: s.idx)
    for k, spec in enumerate(specs):
        previous = specs[k - 1] if k > 0 and specs[k - 1].shot_start == spec.shot_start else None
        own_from = previous.stop if previous is not None else spec.start
        if previous is not None:
            for index in range(spec.start, previous.stop):
                w = blend_weight(index, spec, previous)
                old = read_segment_frame(out_dir, item_id, previous, index)
                new = read_segment_frame(out_dir, item_id, spec, index)
                yield (1.0 - w) * old + w * new
        # frames this segment owns; the next segment's overlap (if any) is emitted by the next one
        following = specs[k + 1] if k + 1 < len(specs) and specs[k + 1].shot_start == spec.shot_start else None
        own_to = following.start if following is not None else spec.stop
        for index in range(own_from, own_to):
            yield read_segment_frame(out_dir, item_id, spec, index)


def frame_count(specs: Sequence[SegmentSpec]) -> int:
    return max((s.stop for s in specs), default=0)
