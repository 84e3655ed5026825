"""`nst eval`: the warping error of a stylized video against its source, both decoded here."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2

from pipeline.core.metrics import warping_error
from pipeline.errors import VideoError
from pipeline.media.cuts import detect_cuts
from pipeline.media.frames import probe, read_frames, working_size

log = logging.getLogger(__name__)


def video_warping_errors(source_path: Path, stylized_path: Path, size: int = 384, max_frames: int | None = None,
                         cut_threshold: float = 0.15, min_shot: int = 1) -> dict[str, float | int]:
    """Warping error of a stylized video and of its source, both read at the same working size."""
    src_info = probe(source_path)
    probe(stylized_path)  # a bad stylized file fails here, named, before any decoding
    wh = working_size(src_info.width, src_info.height, size)
    source = list(read_frames(source_path, size, stop=max_frames))
    output = [cv2.resize(f, wh, interpolation=cv2.INTER_AREA) if f.shape[1::-1] != wh else f
              for f in read_frames(stylized_path, size, stop=max_frames)]
    count = min(len(source), len(output))
    if count < 2:
        raise VideoError(stylized_path, "need at least two decodable frames in both videos")
    if len(source) != len(output):
        log.warning("%s has %d frames, %s has %d; comparing the first %d", source_path, len(source),
                    stylized_path, len(output), count)
    cuts = detect_cuts(source[:count], cut_threshold, min_shot)
    return {"frames": count, "pairs": count - 1 - (len(cuts) - 1),
            "stylized": warping_error(source[:count], output[:count], cuts),
            "source": warping_error(source[:count], source[:count], cuts)}
