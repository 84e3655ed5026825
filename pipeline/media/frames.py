"""Video sources and sinks: probe, decode at a working size, encode with the source's timing and tracks.

Frames are decoded by ffmpeg through a pipe (the binary bundled with imageio-ffmpeg), interlaced
ones deinterlaced (bwdif), and pixels that are not square (DV, DVD, HDV) made square at the working
size; OpenCV reads the container's announced frame count and rate, and resizes. What is painted
of a video with black bars is the picture inside them (``picture_bars``, ``frame_layout``). The pip
build of OpenCV has no H.264 encoder, so frames go to ffmpeg through a pipe as well: raw pixels (4:2:0
planes made here for H.264 and HEVC, RGB otherwise) at the exact rational rate when the source's
frames sit on a constant-rate grid, or a minimal Matroska stream that carries each frame's
presentation time when they do not (variable frame rate). A second ffmpeg pass adds the source's
audio tracks (copied where the container plays them, re-encoded where it does not), its subtitle
tracks, chapters and metadata. ffmpeg is always called with an argument list, never through a shell.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.atomic import atomic_target, stale_temps, temp_beside
from pipeline.errors import TransientError, VideoError

log = logging.getLogger(__name__)

# The decoder's own messages about a damaged stream would repeat per packet (probe opens the file
# with OpenCV); the frames lost are reported once, by read_frames' caller.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

# Phone, camera, camcorder (DV, HDV, AVCHD, MOD/TOD), disc (VOB), broadcast (MXF, TS) and web files.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv",
                              ".flv", ".f4v", ".ts", ".mts", ".m2ts", ".m2t", ".3gp", ".ogv", ".vob", ".mxf",
                              ".dv", ".m2v", ".mod", ".tod", ".asf", ".divx", ".y4m", ".rmvb"})
_STREAM_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<rest>.*)")
_STREAM_AUDIO = re.compile(r"Stream #\d+:\d+.*?: Audio: ")
# "Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, 5.1, fltp, 384 kb/s (default)"
_STREAM = re.compile(r"^\s*Stream #0:(?P<index>\d+)(?:\[[^\]]*\])?(?:\((?P<lang>[^)]*)\))?: "
                     r"(?P<kind>Video|Audio|Subtitle|Data|Attachment): (?P<codec>[\w-]+)(?P<rest>.*)$",
                     re.MULTILINE)
MAX_PLAUSIBLE_FPS = 1000
_INPUT_FORMAT = re.compile(r"^Input #0, (?P<format>[\w,]+), from ", re.MULTILINE)
_INDEXED_FORMATS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "avi"})  # ffmpeg's demuxer names
_RATE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<k>k?) (?P<unit>fps|tbr)\b")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_TIME = re.compile(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6,
                    "6.1": 7, "7.1": 8}


class VideoOpenFailure(VideoError):
    """The file is missing, not a video, or no decoder opens it."""


class VideoIndexMissing(VideoOpenFailure):
    """An MP4/MOV whose index (moov atom) is absent or cut: the recording stopped before it was written.

    Its own class because the remedy differs from "not a video": the frames are in the file, and a
    repair tool can rebuild the index from an intact clip recorded by the same device.
    """


class FrameRateUnavailable(VideoError):
    """The container reports no usable frame rate."""


class VideoDecodeError(VideoError):
    """Decoding produced no frames, or failed part-way."""


class FramesLost(VideoDecodeError):
    """Fewer frames decode than the container announces: the file is damaged or was cut short.

    Usually a warning rather than a failure (the frames that decode are usable); ``str()`` is the
    one line to show, naming the file.
    """

    def __init__(self, path: Path | str, decoded: int, expected: int) -> None:
        self.decoded, self.expected = decoded, expected
        super().__init__(path, f"decoded {decoded} of {expected} frames ({expected - decoded} lost; "
                               "the file is damaged or was cut short)")


class VideoEncodeError(VideoError):
    """Encoding or muxing failed."""


class DecoderStopped(TransientError):
    """The ffmpeg decoding a video was killed from outside (the out-of-memory killer, a signal
    meant for another process): no fault of the file, and another attempt may well succeed."""

    def __init__(self, path: Path | str, signal_number: int, frames: int) -> None:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        self.reason = f"ffmpeg decoding it was stopped by {name} after {frames} frames (not a fault of the file)"
        super().__init__(f"{path}: {self.reason}")


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a file as ffmpeg lists it."""

    index: int  # position in the file: ffmpeg's 0:<index>
    kind: str  # "video" | "audio" | "subtitle" | "data" | "attachment"
    codec: str  # ffmpeg's decoder name: "aac", "pcm_s16le", "subrip", "h264", ...
    language: str | None = None
    channels: int | None = None
    sample_rate: int | None = None
    attached_picture: bool = False  # cover art, not the video


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frame_count: int  # as the container announces it; a damaged file may decode fewer
    fps: Fraction
    width: int  # as displayed: rotation and the pixels' aspect ratio applied
    height: int
    has_audio: bool
    streams: tuple[StreamInfo, ...] = ()
    # MP4/MOV and AVI list every frame, so frame_count is a count; other containers (MPEG-TS and
    # PS, Matroska, WebM, fragmented MP4) state a duration, and the count is duration x rate,
    # which rounding and an audio track that runs longer put a frame or more off.
    frame_count_exact: bool = True

    def frames_missing(self, decoded: int) -> int:
        """Announced frames that did not decode: 0 unless more are missing than an estimated
        count can be off by (a second's worth)."""
        slack = 0 if self.frame_count_exact else math.ceil(self.fps)
        short = self.frame_count - decoded
        return short if short > slack else 0

    @property
    def audio_streams(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.kind == "audio")

    @property
    def subtitle_streams(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.kind == "subtitle")


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_info(path: Path) -> str:
    """The stream listing ffmpeg prints for ``-i path`` (stderr); ffmpeg exits 1 without outputs."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, errors="replace", timeout=60, check=False)
    return proc.stderr


def recover_rate(printed: str | None, measured: float | None) -> Fraction | None:
    """The exact rational rate from ffmpeg's rounded print ("29.97") and/or OpenCV's float.

    NTSC-style rates N*1000/1001 print as two decimals and would otherwise become 2997/100,
    which drifts against the audio by 0.1 s per hour.
    """
    if printed:
        value = float(printed)
        if value <= 0:
            return None
        if not value.is_integer():
            ntsc = Fraction(round(value * 1.001) * 1000, 1001)
            if f"{float(ntsc):.2f}" == f"{value:.2f}":
                return ntsc
            if measured and abs(measured - value) < 0.01:
                return Fraction(measured).limit_denominator(1001)
        return Fraction(printed).limit_denominator(1001)
    if measured and np.isfinite(measured) and measured > 0:
        return Fraction(measured).limit_denominator(1001)
    return None


def _parse_rate(info: str) -> str | None:
    match = _STREAM_VIDEO.search(info)
    if not match:
        return None
    rates = {m.group("unit"): str(float(m.group("value")) * (1000 if m.group("k") else 1))
             if m.group("k") else m.group("value") for m in _RATE.finditer(match.group("rest"))}
    # A raw DV file's average rate prints as its time base ("60k fps, 29.97 tbr"): no recording
    # plays at more than a thousand frames a second, so the rate ffmpeg guesses from the frames wins.
    plausible = [rates[unit] for unit in ("fps", "tbr") if unit in rates and float(rates[unit]) <= MAX_PLAUSIBLE_FPS]
    return plausible[0] if plausible else rates.get("fps") or rates.get("tbr")


def parse_streams(info: str) -> tuple[StreamInfo, ...]:
    """The streams of the first input in an ``ffmpeg -i`` listing."""
    streams = []
    for m in _STREAM.finditer(info):
        rest = m.group("rest")
        channels = sample_rate = None
        if m.group("kind") == "Audio":
            rate = re.search(r"(\d+) Hz", rest)
            sample_rate = int(rate.group(1)) if rate else None
            layout = re.search(r"Hz, ([^,]+)", rest)
            if layout:
                text = layout.group(1).strip()
                counted = re.match(r"(\d+) channels", text)
                channels = int(counted.group(1)) if counted else _LAYOUT_CHANNELS.get(text.split("(")[0])
        lang = m.group("lang")
        streams.append(StreamInfo(int(m.group("index")), m.group("kind").lower(), m.group("codec"),
                                  lang if lang and lang != "und" else None, channels, sample_rate,
                                  "(attached pic)" in rest))
    return tuple(streams)


# Top-level boxes that may open an ISO-BMFF (MP4, MOV, 3GP) file; anything else is not one.
_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof",
                         b"mfra", b"meta", b"pdin", b"styp", b"sidx", b"junk"})


def _top_level_boxes(path: Path) -> Iterator[tuple[int, bytes, int, int]]:
    """(offset, type, size, file size) of each top-level ISO-BMFF box, from the headers alone: a
    64-bit size where the 32-bit one says 1, the rest of the file where it says 0. Stops after a
    box whose size cannot be (under 8 bytes); a few reads, whatever the file size."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # runs to the end of the file
                box_size = size - offset
            yield offset, kind, box_size, size
            if box_size < 8:
                return
            offset += box_size


def mp4_index_problem(path: Path | str) -> str | None:
    """Why an MP4/MOV file has no whole index (moov box): "missing", "cut", or None (it has one,
    or the file is not MP4/MOV at all).

    Cameras and phones write the media data first and the index last, when recording stops; a
    battery or card that gives out, or a copy stopped early, leaves the data without the index.
    """
    seen_mdat = False
    for offset, kind, box_size, size in _top_level_boxes(Path(path)):
        if kind not in _BMFF_BOXES:
            return None if offset == 0 else ("missing" if seen_mdat else None)
        if box_size < 8:
            return "missing" if seen_mdat else None
        if kind == b"moov":
            return "cut" if offset + box_size > size else None
        seen_mdat = seen_mdat or kind == b"mdat"
    return "missing" if seen_mdat else None


def _index_failure(path: Path, problem: str) -> VideoIndexMissing:
    if problem == "cut":
        reason = ("MP4 index (moov atom) cut short: the file ends inside its index, so no frame can be located; "
                  "copy the file again from its source if there is one")
    else:
        reason = ("MP4 index (moov atom) missing: the file was cut short while recording (power loss, a full card "
                  "or an interrupted copy), so no frame can be located; a repair tool such as untrunc can "
                  "rebuild the index from an intact clip recorded by the same device")
    return VideoIndexMissing(path, reason)


def probe(path: Path | str) -> VideoInfo:
    """Checks the file opens as a video with frames, a size and a frame rate; raises VideoError.

    Cheap: reads headers only. ``frame_count`` is what the container announces; ``frame_timing``
    decodes the stream to say how many frames really decode and when each is shown.
    """
    path = Path(path)
    if not path.exists():
        raise VideoOpenFailure(path, "file not found")
    if path.is_dir():
        raise VideoOpenFailure(path, "is a directory, not a video")
    if path.stat().st_size == 0:
        raise VideoOpenFailure(path, "empty file (0 bytes)")
    info = ffmpeg_info(path)
    pictures_only = list(_STREAM_VIDEO.finditer(info))
    if pictures_only and all("(attached pic)" in m.group("rest") for m in pictures_only):
        raise VideoOpenFailure(path, "an audio file with a cover picture, not a video")
    demuxer = _INPUT_FORMAT.search(info)
    if demuxer is not None and (demuxer.group("format").endswith("_pipe") or demuxer.group("format") == "image2"):
        kind = demuxer.group("format").removesuffix("_pipe").upper()
        raise VideoOpenFailure(path, f"a single picture ({kind}) with a video's extension, not a video; "
                                     f"rename it to paint it as a photo")
    if demuxer is not None and demuxer.group("format") in _ANIMATION_DEMUXERS:
        return _probe_animation(path, info)
    if not _STREAM_VIDEO.search(info):
        problem = mp4_index_problem(path)
        if problem:
            raise _index_failure(path, problem)
        reason = "not a video (no video stream)"
        if "Invalid data found" in info:
            reason = "not a video (ffmpeg finds no known container in it)"
        raise VideoOpenFailure(path, reason)
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            problem = mp4_index_problem(path)
            if problem:
                raise _index_failure(path, problem)
            raise VideoOpenFailure(path, "OpenCV cannot open this video")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        measured = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise VideoOpenFailure(path, f"no usable frame size ({width}x{height})")
    pictures = picture_format(path)
    if pictures is not None:
        width, height = pictures.display_size
    fps = recover_rate(_parse_rate(info), measured)
    if fps is None or fps <= 0:
        raise FrameRateUnavailable(path, "unknown or zero frame rate")
    if count <= 0:
        raise VideoDecodeError(path, "the container reports zero frames")
    exact = _frames_indexed(path, info)
    if not exact and measured and np.isfinite(measured) and abs(measured / float(fps) - 1) > 0.01:
        count = max(1, round(count * float(fps) / measured))  # OpenCV estimated it from duration x its own rate
    return VideoInfo(path, count, fps, width, height, bool(_STREAM_AUDIO.search(info)), parse_streams(info),
                     frame_count_exact=exact)


# Animations that ffmpeg decodes and OpenCV's own FFmpeg does not open (animated WebP) or cannot
# count (APNG states no duration): their size comes from the first frame and their count from
# decoding them, which costs little at the sizes animations have.
_ANIMATION_DEMUXERS = frozenset({"webp_anim", "apng"})


def _probe_animation(path: Path, info: str) -> VideoInfo:
    pictures = picture_format(path)
    if pictures is None:
        raise VideoDecodeError(path, "no frame of the animation decodes")
    fps = recover_rate(_parse_rate(info), None)
    if fps is None or fps <= 0:
        raise FrameRateUnavailable(path, "unknown or zero frame rate")
    timing = frame_timing(path, expected=0)
    return VideoInfo(path, timing.decoded, fps, *pictures.display_size, bool(_STREAM_AUDIO.search(info)),
                     parse_streams(info), frame_count_exact=True)


def _frames_indexed(path: Path, info: str) -> bool:
    """Whether the container lists each frame (its announced count is a count, not an estimate)."""
    demuxer = _INPUT_FORMAT.search(info)
    names = set(demuxer.group("format").split(",")) if demuxer else set()
    if not names & _INDEXED_FORMATS:
        return False
    return "avi" in names or not _fragmented(path)


def _fragmented(path: Path) -> bool:
    """An MP4/MOV written in fragments (moof boxes; cameras and recorders that stream to disk):
    its index lists no frames, so the count is estimated from the duration."""
    for _, kind, box_size, _ in _top_level_boxes(path):
        if kind == b"moof":
            return True
        if box_size < 8 or kind not in _BMFF_BOXES:
            return False
    return False


# ---------------------------------------------------------------------------- frame timing
_FRAME_LINE = re.compile(r"^\d+,\s*-?\d+,\s*(?P<pts>-?\d+),\s*(?P<duration>-?\d+),", re.MULTILINE)
_TIME_BASE = re.compile(r"^#tb 0: (\d+)/(\d+)", re.MULTILINE)
GRID_TOLERANCE = Fraction(1, 1000)  # s: frames this close to the constant-rate grid are on it


@dataclass(frozen=True)
class FrameTiming:
    """When each decoded frame of a video is shown: what a variable-frame-rate copy must keep.

    ``pts`` are presentation times in ``time_base`` units, in the order frames leave the decoder
    (the order OpenCV yields them), measured from the start of the file (the origin its audio
    shares), so ``pts[0]`` may be above 0 when the video starts after the audio. Small and
    picklable: it can travel to another process.
    """

    time_base: Fraction
    pts: tuple[int, ...]
    last_duration: int  # time_base units the last frame is shown
    expected: int = 0  # frames the container announces; 0 when unknown

    @property
    def decoded(self) -> int:
        return len(self.pts)

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.decoded)

    @property
    def start(self) -> Fraction:
        """Seconds from the file's start to the first frame."""
        return self.pts[0] * self.time_base if self.pts else Fraction(0)

    def seconds(self) -> list[Fraction]:
        """Presentation time of each frame, exact, from the first frame."""
        return [(p - self.pts[0]) * self.time_base for p in self.pts]

    def on_grid(self, fps: Fraction) -> bool:
        """True when every frame sits on the constant-rate grid of ``fps`` (within a tick or 1 ms).

        Judged on the cumulative position, not the frame-to-frame steps: small steady deviations
        (a phone's "30 fps" that really runs at 29.98) add up to audio drift.
        """
        tolerance = max(self.time_base, GRID_TOLERANCE)
        # An animation's last frame often stays longer (a GIF that holds its end for 2 s); one
        # shorter than the rest (a recording stopped) is left to the grid, a fraction of a frame.
        return (all(abs(t - i / fps) <= tolerance for i, t in enumerate(self.seconds()))
                and self.last_duration * self.time_base <= 1 / fps + tolerance)

    def lost_frames(self, path: Path | str) -> FramesLost | None:
        """The one-line report of frames lost, when any were."""
        return FramesLost(path, self.decoded, self.expected) if self.lost else None


def frame_timing(path: Path | str, expected: int | None = None) -> FrameTiming:
    """Decodes the first video stream once (ffmpeg, no pixel copies) for every frame's time.

    This is also the honest frame count of a damaged file: ``decoded`` of ``expected``.
    ``expected`` defaults to the container's announced count (``probe``).
    """
    path = Path(path)
    if expected is None:
        expected = probe(path).frame_count
    tb, frames, errors = _frame_stamps(["-i", str(path)])
    if tb is None or not frames:
        last = (errors.strip().splitlines() or ["no frame decodes"])[-1]
        raise VideoDecodeError(path, f"no frame decodes ({last})")
    return FrameTiming(tb, tuple(p for p, _ in frames), max(frames[-1][1], 0), expected)


def _frame_stamps(where: list[str]) -> tuple[Fraction | None, list[tuple[int, int]], str]:
    """(time base, (pts, duration) of each frame, ffmpeg's complaints) of the first video stream of
    the input ``where`` names (with its seek and length options), decoded without pixel copies."""
    # passthrough: every decoded frame, none dropped or duplicated to a rate; demux: times in the
    # stream's own time base, unrounded; wrapped_avframe: no pixel conversion or copy.
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-noautorotate", *where,
                           "-map", "0:V:0", "-fps_mode", "passthrough", "-enc_time_base", "demux",
                           "-c:v", "wrapped_avframe", "-f", "framemd5", "-"],
                          capture_output=True, text=True, errors="replace", check=False)
    tb = _TIME_BASE.search(proc.stdout)
    frames = [(int(m.group("pts")), int(m.group("duration"))) for m in _FRAME_LINE.finditer(proc.stdout)]
    return (None if tb is None else Fraction(int(tb.group(1)), int(tb.group(2)))), frames, proc.stderr


def frames_lost(path: Path | str, decoded: int, expected: int) -> FramesLost | None:
    """The one-line report for a caller that counted its own decoded frames, when some were lost."""
    return FramesLost(path, decoded, expected) if decoded < expected else None


def working_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the longest side = size and both sides even (H.264 4:2:0 needs even sides)."""
    factor = size / max(width, height)
    w = max(2, round(width * factor / 2) * 2)
    h = max(2, round(height * factor / 2) * 2)
    return w, h


def delivered_size(width: int, height: int) -> tuple[int, int]:
    """(w, h) a video of the source's size is written at: its own, less a row or column where a side
    is odd (4:2:0 needs even sides; cropping a pixel beats the encoder's padding with a copied edge)."""
    return max(2, width - width % 2), max(2, height - height % 2)


_SHOWINFO = re.compile(r"\bsar:(?P<sn>\d+)/(?P<sd>\d+) s:(?P<w>\d+)x(?P<h>\d+) i:(?P<scan>[PTB?])")
_SHOWINFO_COLOUR = re.compile(r"color_range:(?P<range>\S+) color_space:(?P<matrix>\S+) "
                              r"color_primaries:(?P<primaries>\S+) color_trc:(?P<transfer>\S+)")
MAX_PROBLEMS_KEPT = 20  # lines of the decoder's complaints about a damaged file
PROBE_SECONDS = 120
PICTURES_INSPECTED = 8  # frames a source's pixel aspect, scan and colours are judged on
HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})  # PQ (HDR10, Dolby Vision) and HLG
# Where the brightness of diffuse white sits in HDR video (ITU-R BT.2408): mapped to SDR white.
HDR_REFERENCE_WHITE_NITS = 203


@dataclass(frozen=True)
class PictureFormat:
    """How a video's decoded pictures are to be shown: their shape, scan and colours."""

    width: int  # decoded, rotation applied, in stored pixels
    height: int
    sample_aspect: Fraction  # a stored pixel's width over its height: 8/9 for NTSC DV, 4/3 for HDV
    interlaced: bool  # each frame weaves two fields taken 1/50 or 1/60 s apart
    transfer: str = "unknown"  # as ffmpeg names them: "bt709", "smpte2084" (PQ), "arib-std-b67" (HLG)
    primaries: str = "unknown"  # "bt709", "bt2020", ...
    matrix: str = "unknown"
    colour_range: str = "unknown"  # "tv" (limited) or "pc" (full)

    @property
    def wide_colour(self) -> bool:
        """HDR or BT.2020 colours, which RGB conversion without a colour transform shows washed out
        (half the saturation or less)."""
        return self.transfer in HDR_TRANSFERS or self.primaries == "bt2020"

    @property
    def display_size(self) -> tuple[int, int]:
        """(w, h) as players show it: the width scaled by the pixels' aspect, as ffmpeg and VLC do."""
        return max(1, round(self.width * self.sample_aspect)), self.height


def _per_file_version(maxsize: int) -> Callable[[Callable[[Path], Any]], Callable[[Path | str], Any]]:
    """Caches what a function reads from a file by the file's version (path, mtime, size): every
    reader of a video asks, and a file edited since is read afresh."""
    def wrap(read: Callable[[Path], Any]) -> Callable[[Path | str], Any]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(path: str, _mtime_ns: int, _size: int) -> Any:
            return read(Path(path))

        @functools.wraps(read)
        def by_version(path: Path | str) -> Any:
            stat = Path(path).stat()
            return cached(str(path), stat.st_mtime_ns, stat.st_size)

        return by_version
    return wrap


@_per_file_version(maxsize=256)
def picture_format(path: Path) -> PictureFormat | None:
    """The video stream's pixel aspect, scan and colours, from its first decoded frames; None when
    none decodes."""
    # showinfo sees the frames after autorotation (which also turns the aspect ratio) and prints
    # each frame's own interlacing flag: DV and some MPEG-2 announce no field order in the header.
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:V:0",
                               "-frames:v", str(PICTURES_INSPECTED), "-vf", "showinfo", "-f", "null", "-"],
                              capture_output=True, text=True, errors="replace", timeout=PROBE_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise VideoOpenFailure(path, f"its first {PICTURES_INSPECTED} frames did not decode within "
                                     f"{PROBE_SECONDS} s (a stalled network share, or no decodable video)") from None
    frames = list(_SHOWINFO.finditer(proc.stderr))
    if not frames:
        return None
    first = frames[0]
    num, den = int(first.group("sn")), int(first.group("sd"))
    aspect = Fraction(num, den) if num > 0 and den > 0 else Fraction(1)  # 0/1: not stated, square
    if not Fraction(1, 4) <= aspect <= 4:  # no camera or disc format stores pixels this far from square
        aspect = Fraction(1)
    colour = _SHOWINFO_COLOUR.search(proc.stderr)
    tags = ({k: colour.group(k) for k in ("transfer", "primaries", "matrix")} | {"colour_range": colour.group("range")}
            if colour else {})
    return PictureFormat(int(first.group("w")), int(first.group("h")), aspect,
                         any(f.group("scan") in "TB" for f in frames), **tags)


# The names zscale accepts (as ffmpeg prints them); anything else gets the usual value.
_ZSCALE_TRANSFERS = frozenset({"bt709", "bt601", "smpte170m", "bt2020-10", "bt2020-12", "smpte2084", "arib-std-b67",
                               "iec61966-2-1", "linear"})
_ZSCALE_PRIMARIES = frozenset({"bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "bt2020", "smpte431",
                               "smpte432", "film", "jedec-p22"})
_ZSCALE_MATRICES = frozenset({"bt709", "fcc", "bt470bg", "smpte170m", "smpte240m", "ycgco", "bt2020nc", "bt2020c",
                              "chroma-derived-nc", "chroma-derived-c", "ictcp"})


def _to_sdr(pictures: PictureFormat) -> str:
    """The zscale filter that brings HDR or BT.2020 frames to SDR BT.709 as players tone-map them:
    diffuse white (BT.2408: 203 nits) to SDR white, brighter highlights clipped. Tags the file
    leaves unstated get the usual values for such video."""
    def stated(value: str, known: frozenset[str], usual: str) -> str:
        return value if value in known else usual  # unstated, or a name zscale does not know

    return (f"zscale=tin={stated(pictures.transfer, _ZSCALE_TRANSFERS, 'bt709')}"
            f":pin={stated(pictures.primaries, _ZSCALE_PRIMARIES, 'bt2020')}"
            f":min={stated(pictures.matrix, _ZSCALE_MATRICES, 'bt2020nc')}"
            f":rin={stated(pictures.colour_range, frozenset({'tv', 'pc'}), 'tv')}"
            f":t=bt709:p=bt709:m=bt709:r=tv:npl={HDR_REFERENCE_WHITE_NITS}")


def _shown_filters(pictures: PictureFormat) -> list[str]:
    """ffmpeg filters that make decoded frames look as a player shows them: whole frames (bwdif;
    progressive ones pass untouched) in SDR BT.709 colours."""
    filters = []
    if min(pictures.width, pictures.height) >= 3:  # bwdif's least size
        # Held at the first frame's size (and field order kept), so a stream that changes size
        # part-way does not rebuild the filters, which drops the frame bwdif holds back.
        filters += [f"scale={pictures.width}:{pictures.height}:interl=1",
                    "bwdif=mode=send_frame:parity=auto:deint=interlaced"]
    if pictures.wide_colour:
        filters.append(_to_sdr(pictures))
    return filters


# Black bars: letterboxed films, 4:3 programmes pillarboxed in 16:9, phone clips windowboxed. Painted
# as part of the picture they came out as a band of the style's texture around the film (Gatys's
# loss paints a black area in the style's light; mean grey 40-77 in the bars of three real shots).
# So the painting covers only the picture inside them, and the delivered frame puts them back.
BAR_SAMPLES = 12  # frames spread over the clip; a bar is dark in every one of them
BAR_LEVEL = 24  # a bar's decoded pixels stay at or below this grey level (coding noise on black)
BAR_CONTENT = 0.005  # a line with more than this share of its pixels above BAR_LEVEL holds picture
BAR_LEAST = 0.02  # of the side (4 px at least): thinner dark edges are not bars
BAR_PAIRING = 0.02  # the two bars of a pair differ by at most this share of the side (4 px at least)
BAR_LEAST_PICTURE = 0.4  # of each side: a smaller picture inside "bars" is a dark scene, not a frame
BAR_EDGE_FILLED = 0.5  # share of the picture's first line beyond a bar that is picture, in some sample


@dataclass(frozen=True)
class Bars:
    """The black bars around a video's picture, in stored pixels (rotation applied)."""

    left: int
    top: int
    right: int
    bottom: int


def _dark_edges(content: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom): how many lines at each edge of a frame's ``content`` mask hold no
    picture; None for a frame with none at all (a black frame says nothing about bars)."""
    rows = content.mean(axis=1) > BAR_CONTENT
    cols = content.mean(axis=0) > BAR_CONTENT
    if not rows.any() or not cols.any():
        return None
    return (int(np.argmax(cols)), int(np.argmax(rows)), int(np.argmax(cols[::-1])), int(np.argmax(rows[::-1])))


def _paired(first: int, second: int, side: int) -> tuple[int, int]:
    least, slack = max(4, round(BAR_LEAST * side)), max(4, round(BAR_PAIRING * side))
    if min(first, second) >= least and abs(first - second) <= slack:
        return first, second
    return 0, 0


def _framed(lines: Iterable[np.ndarray]) -> bool:
    """A picture's edge runs along a bar: in some sample the line next to it is mostly picture (a
    subject on a black ground leaves it mostly dark in all of them)."""
    return any(line.mean() >= BAR_EDGE_FILLED for line in lines)


def bars_of(contents: Sequence[np.ndarray]) -> Bars | None:
    """The bars in the ``content`` masks (pixels above BAR_LEVEL) of frames sampled over a clip:
    dark in every sample, top and bottom (or left and right) both and of about the same size, along
    a picture edge, around a picture of at least BAR_LEAST_PICTURE of each side."""
    edges = [found for found in map(_dark_edges, contents) if found is not None]
    if not edges or len(edges) < len(contents) // 2:  # mostly black samples: no judgement
        return None
    h, w = contents[0].shape
    left, top, right, bottom = (min(e[k] for e in edges) for k in range(4))
    left, right = _paired(left, right, w)
    top, bottom = _paired(top, bottom, h)
    inset = 2  # past a line blended with the bar by scaling or chroma subsampling
    if top and not (_framed(c[min(top + inset, h - 1)] for c in contents)
                    and _framed(c[max(h - 1 - bottom - inset, 0)] for c in contents)):
        top = bottom = 0
    if left and not (_framed(c[:, min(left + inset, w - 1)] for c in contents)
                     and _framed(c[:, max(w - 1 - right - inset, 0)] for c in contents)):
        left = right = 0
    if not (left or top):
        return None
    if w - left - right < BAR_LEAST_PICTURE * w or h - top - bottom < BAR_LEAST_PICTURE * h:
        return None
    # One line more to each bar: the picture's outermost line is blended with the bar by 4:2:0
    # chroma and scaling (a bar padded at 23 lines is found at 22, its 23rd line dark grey).
    def grown(bar: int) -> int:
        return bar + 1 if bar else 0

    return Bars(grown(left), grown(top), grown(right), grown(bottom))


@_per_file_version(maxsize=64)
def picture_bars(path: Path) -> Bars | None:
    """The black bars around the video's picture, judged on BAR_SAMPLES frames spread over it (a
    seek and one frame each); None when there are none, or the clip's length is not stated."""
    pictures = picture_format(path)
    length = _listed_seconds(ffmpeg_info(path))
    if pictures is None or not length:
        return None
    w, h = pictures.width, pictures.height
    filters = ",".join([*_shown_filters(pictures), f"scale={w}:{h}"])
    contents = []
    for k in range(BAR_SAMPLES):
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
                   "-ss", f"{(k + 0.5) * length / BAR_SAMPLES:.3f}", "-i", str(path), "-map", "0:V:0",
                   "-vf", filters, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        try:
            data = subprocess.run(command, capture_output=True, timeout=PROBE_SECONDS, check=False).stdout
        except subprocess.TimeoutExpired:
            return None
        if len(data) >= w * h * 3:
            contents.append(np.frombuffer(data[:w * h * 3], np.uint8).reshape(h, w, 3).max(axis=2) > BAR_LEVEL)
    if len(contents) < BAR_SAMPLES // 2:  # most samples undecodable: no judgement
        return None
    return bars_of(contents)


@dataclass(frozen=True)
class FrameLayout:
    """Where the picture inside a video's black bars lies in a whole frame at the working size."""

    size: tuple[int, int]  # (w, h) of the whole frame
    box: tuple[int, int, int, int]  # (x, y, w, h) of the picture in it


PICTURE_LEAST_SIDE = 32  # px: VGG-19's least input (pipeline.core.arrays.MIN_SIDE); a smaller picture is painted whole


def frame_layout(path: Path | str, size: int, least_side: int = PICTURE_LEAST_SIDE) -> FrameLayout | None:
    """The layout of the video's frames at working size ``size`` when it has black bars, else None
    (also when the picture inside them would be under ``least_side`` at that size, too small to
    paint)."""
    bars = picture_bars(path)
    pictures = picture_format(path)
    if bars is None or pictures is None:
        return None
    full = working_size(*pictures.display_size, size)
    sx, sy = full[0] / pictures.width, full[1] / pictures.height
    x0, x1 = round(bars.left * sx), round((pictures.width - bars.right) * sx)
    y0, y1 = round(bars.top * sy), round((pictures.height - bars.bottom) * sy)
    if min(x1 - x0, y1 - y0) < least_side <= min(full):
        return None
    return FrameLayout(full, (x0, y0, x1 - x0, y1 - y0))


def painted_size(path: Path | str, size: int, picture_only: bool = False) -> tuple[int, int] | None:
    """(w, h) of the frames ``read_frames`` gives at ``size``: the whole frame at the working size,
    or with ``picture_only`` the picture inside any black bars; None when no frame decodes."""
    pictures = picture_format(path)
    if pictures is None:
        return None
    layout = frame_layout(path, size) if picture_only else None
    return layout.box[2:] if layout is not None else working_size(*pictures.display_size, size)


BAR_LIT = 0.002  # share of a bar's pixels above BAR_LEVEL that says it holds picture (a subtitle, a logo)


def lit_bars(frame: np.ndarray, layout: FrameLayout) -> bool:
    """Whether a whole frame (at the layout's size) shows something in its bars. Judged on
    brightness, and two lines next to the picture left out: reduced to a glance, a saturated edge
    (a blue sky) bleeds a dark colour into them."""
    x, y, w, h = layout.box
    content = cv2.cvtColor(np.asarray(frame, np.float32), cv2.COLOR_RGB2GRAY) > BAR_LEVEL
    bars = [content[:max(0, y - 2)], content[y + h + 2:], content[:, :max(0, x - 2)], content[:, x + w + 2:]]
    return any(bar.size and bar.mean() > BAR_LIT for bar in bars)


def in_bars(picture: np.ndarray, layout: FrameLayout) -> np.ndarray:
    """A painted picture put back inside its black bars: the whole frame at the working size."""
    x, y, w, h = layout.box
    if picture.shape[:2] != (h, w):
        raise ValueError(f"a painted frame is {picture.shape[1]}x{picture.shape[0]}, its picture {w}x{h}")
    frame = np.zeros((layout.size[1], layout.size[0], 3), np.float32)
    frame[y:y + h, x:x + w] = picture
    return frame


def _decoded_pictures(path: Path, pictures: PictureFormat, skip: int, problems: list[str] | None = None,
                      times: FrameTimes | None = None, shrunk: tuple[int, int] | None = None,
                      bars: Bars | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames at the stored size (rotation applied), or at ``shrunk`` (w, h) reduced by
    ffmpeg, from frame ``skip`` on, until the decoder stops; with ``bars``, only the picture inside
    them. With the file's ``times``, a frame far into it is reached by seeking (exactly: the frame
    is found by its time stamp); without them, or if the seek misses, by decoding through.
    """
    seek = _seek_position(times, skip)
    if seek is not None and times is not None and times not in _SEEKS_MISSED:
        sought = _sought_pictures(path, pictures, seek, times.seconds(skip), shrunk, bars)
        first = next(sought, None)
        if first is not None:
            yield first
            yield from sought
            return
        _SEEKS_MISSED.add(times)  # one miss says the file does not seek well: do not pay for it again
        log.info("%s: a seek to frame %d missed it; decoding from the start instead", path, skip)
    yield from _pictures_through(path, pictures, skip, problems, shrunk, bars)


def _final_scale(pictures: PictureFormat, shrunk: tuple[int, int] | None,
                 bars: Bars | None = None) -> tuple[int, int, str]:
    """(w, h) of the frames piped out and the filters that make them: the stored size (the pixels
    OpenCV would give), or a reduction by area averaging inside ffmpeg; of the picture inside
    ``bars`` when given."""
    w, h, crop = pictures.width, pictures.height, ""
    if bars is not None:
        w, h = w - bars.left - bars.right, h - bars.top - bars.bottom
        crop = f"crop={w}:{h}:{bars.left}:{bars.top}:exact=1,"  # exact: not rounded to the chroma grid
    if shrunk is None:
        return w, h, f"{crop}scale={w}:{h}"
    return shrunk[0], shrunk[1], f"{crop}scale={shrunk[0]}:{shrunk[1]}:flags=area"


def _rgb_pipe(path: Path, before_input: list[str], filters: list[str]) -> list[str]:
    """The ffmpeg command that pipes the video stream's frames out as raw RGB through ``filters``:
    every decoded frame (passthrough), the filters never rebuilt part-way (a rebuild drops the
    frame bwdif holds back)."""
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", *before_input, "-reinit_filter", "0", "-i", str(path),
            "-map", "0:V:0", "-vf", ",".join(filters), "-fps_mode", "passthrough", "-f", "rawvideo",
            "-pix_fmt", "rgb24", "-"]


def _pictures_through(path: Path, pictures: PictureFormat, skip: int, problems: list[str] | None = None,
                      shrunk: tuple[int, int] | None = None, bars: Bars | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames at the stored size (rotation applied), from frame ``skip`` on, decoded
    from the file's start until the decoder stops.

    ffmpeg runs in a process group of its own: Ctrl-C reaches nst alone, which ends the decoder
    here; reaching ffmpeg too, it cut the frames short as if the file had ended.

    Decoded by ffmpeg, not OpenCV: the OpenCV wheel's converter fails on every frame flagged
    interlaced (DV, DVD, broadcast and 1080i camcorder files) and returns black or a stale picture,
    where bwdif makes each such frame whole (one frame out per frame in, so the count and frame
    times stay the source's; progressive frames pass untouched). HDR (PQ, HLG) and BT.2020 frames
    are brought to SDR BT.709, the colours the stylized file is tagged with. A stream whose size
    changes part-way is held at its first. Frames before ``skip`` are decoded and dropped inside
    ffmpeg (trim), not converted and piped. When the stream is read to its end, ffmpeg's
    complaints about damaged data (a truncated file, corrupt packets) go into ``problems``: an
    intact file decodes silently. If ffmpeg fails before a single frame, that is an error.
    """
    w, h, scale = _final_scale(pictures, shrunk, bars)
    command = _rgb_pipe(path, ["-loglevel", "error"],
                        [*_shown_filters(pictures), *([f"trim=start_frame={skip}"] if skip else []), scale])
    # stderr to a file, not a pipe: a badly damaged file can print more than a pipe holds.
    with tempfile.TemporaryFile() as messages:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=messages, process_group=0)
        assert proc.stdout is not None
        try:
            yielded = 0
            while len(data := proc.stdout.read(w * h * 3)) == w * h * 3:
                yield np.frombuffer(data, np.uint8).reshape(h, w, 3)
                yielded += 1
            failed = proc.wait() != 0
            if proc.returncode < 0:  # killed from outside: the frames that did not come say nothing of the file
                raise DecoderStopped(path, -proc.returncode, yielded)
            if problems is not None or (failed and not yielded):
                messages.seek(0)
                lines = [line.strip() for line in messages.read().decode(errors="replace").splitlines()
                         if line.strip()]
                if failed and not yielded and skip == 0:
                    raise VideoDecodeError(path, f"ffmpeg decodes no frame ({lines[-1] if lines else 'no reason given'})")
                if problems is not None:
                    problems.extend(lines[:MAX_PROBLEMS_KEPT])
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()


SEEK_AFTER_FRAMES = 96  # nearer the start, decoding through costs about what a seek does
SEEK_MARGIN_SECONDS = 2  # land this far before the frame wanted, so the key frame found precedes it
FRAME_TIMES_SECONDS = 3600  # a pass over the whole file; beyond this, reads decode through
_SHOWINFO_PTS = re.compile(r"\bn:\s*\d+ pts:\s*(?P<pts>-?\d+)\b.*?\biskey:(?P<key>\d)")
_SHOWINFO_TIME_BASE = re.compile(r"config in time_base: (?P<num>\d+)/(?P<den>\d+)")
_START = re.compile(r"Duration: [^,]*, start: (?P<start>-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class FrameTimes:
    """When each frame is shown, as the file stores it (ffmpeg -copyts), in decoding order: how a
    seek finds a frame by number. ``start`` is the file's start time, from which -ss counts."""

    time_base: Fraction
    pts: tuple[int, ...]
    start: Fraction

    def seconds(self, index: int) -> Fraction:
        return self.pts[index] * self.time_base


@_per_file_version(maxsize=16)
def frame_times(path: Path) -> FrameTimes | None:
    """Each frame's stored presentation time (one decoding pass without pixel conversion), or None
    when the times cannot find frames (none decode, or two frames share a time or run backwards)."""
    # A damaged file is not sought: decoding through conceals damage from the frames before it,
    # a seek from a key frame would not, and the frames would differ from those other reads saw.
    start = _START.search(ffmpeg_info(path))
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-copyts", "-i", str(path),
                               "-map", "0:V:0", "-fps_mode", "passthrough", "-enc_time_base", "demux",
                               "-c:v", "wrapped_avframe", "-f", "framemd5", "-"],
                              capture_output=True, text=True, errors="replace", timeout=FRAME_TIMES_SECONDS,
                              check=False)
    except subprocess.TimeoutExpired:  # a stalled share: reads decode through instead
        return None
    tb = _TIME_BASE.search(proc.stdout)
    pts = tuple(int(m.group("pts")) for m in _FRAME_LINE.finditer(proc.stdout))
    if (proc.returncode != 0 or proc.stderr.strip() or tb is None or start is None or not pts
            or any(b <= a for a, b in itertools.pairwise(pts))):
        return None
    return FrameTimes(Fraction(int(tb.group(1)), int(tb.group(2))), pts, Fraction(start.group("start")))


_SEEKS_MISSED: set[FrameTimes] = set()


def _seek_position(times: FrameTimes | None, skip: int) -> Fraction | None:
    """The -ss position that lands before frame ``skip`` with room for its key frame, or None when
    decoding through is as quick or the times do not cover the frame."""
    if times is None or not SEEK_AFTER_FRAMES <= skip < len(times.pts):
        return None
    position = times.seconds(skip) - times.start - SEEK_MARGIN_SECONDS
    return position if position > 0 else None


def _sought_pictures(path: Path, pictures: PictureFormat, position: Fraction, wanted: Fraction,
                     shrunk: tuple[int, int] | None = None, bars: Bars | None = None) -> Iterator[np.ndarray]:
    """Frames from the one shown at ``wanted`` seconds (stored time) on, after seeking ffmpeg to
    ``position``; yields nothing when the seek landed past that frame or lost track of it.

    The seek lands on a key frame before the one wanted (-noaccurate_seek keeps every frame from
    there, -copyts their stored times); showinfo, first in the filters, prints each frame's time
    (and whether it is a key frame) before that frame reaches the pipe, so each frame read is
    matched to its time and the ones before the wanted frame are dropped here. They still pass through bwdif, which so sees the
    same neighbours as when decoding through.
    """
    w, h, scale = _final_scale(pictures, shrunk, bars)
    command = _rgb_pipe(path, ["-nostats", "-loglevel", "info", "-noaccurate_seek", "-copyts",
                               "-ss", f"{float(position):.6f}"],
                        ["showinfo=checksum=0", *_shown_filters(pictures), scale])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
    assert proc.stdout is not None and proc.stderr is not None
    stamps: queue.Queue[tuple[Fraction, bool] | None] = queue.Queue()
    found = threading.Event()

    def listen(stream: Any) -> None:  # also drains stderr, so ffmpeg never blocks on it
        time_base = None
        for raw in stream:
            if found.is_set():
                continue
            line = raw.decode(errors="replace")
            if (config := _SHOWINFO_TIME_BASE.search(line)) is not None:
                time_base = Fraction(int(config.group("num")), int(config.group("den")))
            elif (frame := _SHOWINFO_PTS.search(line)) is not None and time_base is not None:
                stamps.put((int(frame.group("pts")) * time_base, frame.group("key") == "1"))
        stamps.put(None)

    listener = threading.Thread(target=listen, args=(proc.stderr,), name="seek-times", daemon=True)
    listener.start()
    try:
        first, yielded = True, 0
        while len(data := proc.stdout.read(w * h * 3)) == w * h * 3:
            if not found.is_set():
                try:
                    stamp = stamps.get(timeout=30)
                except queue.Empty:
                    return
                # The first frame must be a key frame: where a container marks a frame as one that
                # is not (an AVI index, say), MPEG-4 decoders paint it on grey, with its right time.
                if stamp is None or stamp[0] > wanted or (first and not stamp[1]):
                    return
                first = False
                if stamp[0] < wanted:
                    continue
                found.set()
            yield np.frombuffer(data, np.uint8).reshape(h, w, 3)
            yielded += 1
        if proc.wait() < 0:  # killed from outside, as in _pictures_through
            raise DecoderStopped(path, -proc.returncode, yielded)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        listener.join(timeout=5)
        proc.stderr.close()


def read_frames(path: Path | str, size: int, start: int = 0, stop: int | None = None,
                problems: list[str] | None = None, times: FrameTimes | None = None,
                glance: bool = False, picture_only: bool = False) -> Iterator[np.ndarray]:
    """RGB float32 [0, 255] frames at the working size, frames [start, stop) of the file.

    Interlaced frames are deinterlaced and pixels that are not square are made square, so the
    frames look as a player shows the source. Stops quietly where the decoder stops (none when
    no frame decodes). A caller that reads to the end and passes ``problems`` gets the decoder's
    complaints about damaged data there: fewer frames than ``probe``'s ``frame_count`` are lost
    frames only with those (an edit list, a packed AVI or a count estimated from the duration
    also give fewer, from an intact file). With the file's ``frame_times``, a range far into the
    file is reached by seeking rather than by decoding every frame before it.

    ``glance``: frames to judge, not to paint (cut detection, thumbnails). ffmpeg reduces them
    (area averaging) instead of piping every frame at full size to be reduced here: 7 ms a frame
    instead of 32-36 for a 4K clip read at 160 px. The pixels differ slightly from the default's.

    ``picture_only``: frames of the picture inside the video's black bars (``frame_layout``'s box at
    this size), when it has any; what is painted.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoOpenFailure(path, "file not found")
    pictures = picture_format(path)
    if pictures is None:
        return
    bars = picture_bars(path) if picture_only and frame_layout(path, size) is not None else None
    target = painted_size(path, size, picture_only)
    stored = _final_scale(pictures, None, bars)[:2]
    shrunk = target if glance and target[0] * target[1] < stored[0] * stored[1] else None
    source = _decoded_pictures(path, pictures, start, problems, times, shrunk, bars)
    try:
        for index, rgb in enumerate(source, start):
            if stop is not None and index >= stop:  # before the first frame: an empty range
                return
            h, w = rgb.shape[:2]
            if (w, h) != target:
                shrinking = target[0] * target[1] < w * h
                rgb = cv2.resize(rgb, target, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
            yield rgb.astype(np.float32)
            if stop is not None and index + 1 >= stop:  # not one frame more decoded than asked for
                return
    finally:
        source.close()


class FrameCursor:
    """Reads ranges of one video's frames in increasing order, decoding each frame once.

    The chunks of a forward chain ask for consecutive ranges, each beginning with the last frame of
    the one before, which this serves from one open decoder (opened by seeking when ``times``,
    the file's ``frame_times``, are given).
    """

    def __init__(self, path: Path | str, size: int, times: FrameTimes | None = None,
                 picture_only: bool = False) -> None:
        self.path, self.size, self.times, self.picture_only = Path(path), size, times, picture_only
        self._frames: Iterator[np.ndarray] | None = None
        self.position = 0  # index of the next frame the decoder yields
        self.last: np.ndarray | None = None  # frame position - 1
        self.opens = 0

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        """Frames [start, stop); fewer where the decoder stops early."""
        out: list[np.ndarray] = []
        if start >= stop:
            return out
        if self._frames is not None and self.last is not None and start == self.position - 1 < stop:
            out.append(self.last)
            start += 1
        if self._frames is None or start < self.position:
            self.close()
            self._frames = read_frames(self.path, self.size, start, times=self.times, picture_only=self.picture_only)
            self.position = start
            self.opens += 1
        for frame in self._frames:
            self.position += 1
            self.last = frame
            if self.position - 1 >= start:
                out.append(frame)
            if self.position >= stop:
                break
        return out

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()  # releases the decoder (read_frames' finally)
        self._frames, self.last = None, None


# ---------------------------------------------------------------------------- threads
_DONE = object()
_ABORT = object()


class Aborted(Exception):
    """The producer failed; the consumer must not finish its output."""


class BackgroundIterator:
    """Runs an iterator in a thread through a bounded queue; its errors are re-raised here."""

    def __init__(self, source: Iterable[Any], maxsize: int = 8, name: str = "decode") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterable[Any]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        finally:
            self._put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    break
                yield item
            if self._error is not None:
                raise self._error
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class BackgroundSink:
    """Feeds a consumer function from a bounded queue in a thread; errors surface on put/close."""

    def __init__(self, consume: Callable[[Iterator[Any]], Any], maxsize: int = 8, name: str = "encode") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self.result: Any = None
        self._thread = threading.Thread(target=self._run, args=(consume,), name=name, daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if item is _ABORT:
                raise Aborted
            yield item

    def _run(self, consume: Callable[[Iterator[Any]], Any]) -> None:
        try:
            self.result = consume(self._items())
        except BaseException as exc:  # noqa: BLE001 - handed to the producer
            self._error = exc
            while not isinstance(exc, Aborted):  # drain so the producer never blocks
                item = self._queue.get()
                if item is _DONE or item is _ABORT:
                    break

    def put(self, item: Any) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(item)

    def close(self) -> Any:
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        if self._error is not None and not isinstance(self._error, Aborted):
            raise self._error
        return self.result

    def abort(self) -> None:
        """Stops the consumer, which discards its work, without raising (the producer is failing)."""
        if self._thread.is_alive():
            self._queue.put(_ABORT)
            self._thread.join()


# ---------------------------------------------------------------------------- encoding
CODECS = ("h264", "hevc", "prores", "ffv1")
# The suffix each codec's output should carry; encode_video takes the container from the suffix.
CODEC_SUFFIX = {"h264": ".mp4", "hevc": ".mp4", "prores": ".mov", "ffv1": ".mkv"}
_CONTAINER_OF_SUFFIX = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
_CONTAINERS_OF_CODEC = {"h264": ("mp4", "mov", "matroska"), "hevc": ("mp4", "mov", "matroska"),
                        "prores": ("mov", "matroska"), "ffv1": ("matroska",)}

# H.264 defaults, chosen with benchmarks/bench_encode.py: how much the encoded video adds to the
# warping error of the frames it is made from. Stylized frames carry fine texture that x264
# re-synthesises differently in each frame: psy-rd does that on purpose (it keeps texture energy,
# not the texture), and trellis quantisation zeroes a different set of small coefficients in each
# frame (off: 7-9 points less added error at the same size), while veryslow's 16 reference frames
# and exhaustive motion search copy the texture along instead. Most of what was left came from
# 4:2:0 itself, which ``_yuv420`` now brings down (see there). Measured on real stylized frames
# (starry_night and the_scream, three clips); the table is in the benchmark's docstring.
# crf 12 rather than 16: x264 smooths the fine brush texture the style's Gram matrices see. On nine
# stylized shots (four styles, 192-320 px) the file as a player shows it had 1.72x the style distance
# of its frames at crf 16 (up to 2.12x), 1.49x at 12 (at 1.54x the size), 1.38x at 8 (2.31x the
# size); lossless 4:2:0 alone gives 1.14-1.36x. The added warping error falls a little too (mean
# +7.6% -> +6.8% as a player shows it).
H264_CRF = 12
H264_PRESET = "veryslow"
H264_TUNE: str | None = None
X264_PARAMS: str | None = "psy-rd=0.0,0.0:trellis=0"
# HEVC, same benchmark and 4:2:0: crf 16 adds -17..+12% on the real frames, at 1.16x H.264's size.
# The same nine shots at crf 12: the file's style distance 1.36x its frames', at 1.19x H.264's size.
HEVC_CRF = 12
HEVC_PRESET = "medium"

# Audio codecs each container plays well when copied; others are re-encoded to the fallback.
# MP4: what phones, browsers and editors decode in MP4 (PCM, FLAC or Vorbis in MP4 are not).
# MOV: an editor's container, PCM native. Matroska holds anything ffmpeg decodes.
_COPY_AUDIO = {"mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus"}),
               "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac"})}
_FALLBACK_AUDIO = {"mp4": "aac", "mov": "pcm_s24le", "matroska": "flac"}
_TEXT_SUBTITLES = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "microdvd", "subviewer",
                             "subviewer1", "jacosub", "sami", "realtext", "stl", "pjs", "mpl2", "vplayer",
                             "eia_608"})
_BT709 = ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]


def output_suffix(codec: str) -> str:
    """The file suffix for ``codec``'s default container (".mp4", ".mov" or ".mkv")."""
    if codec not in CODEC_SUFFIX:
        raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    return CODEC_SUFFIX[codec]


def _container(codec: str, out_path: Path) -> str:
    if codec not in CODECS:
        raise VideoEncodeError(out_path, f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    container = _CONTAINER_OF_SUFFIX.get(out_path.suffix.lower())
    if container not in _CONTAINERS_OF_CODEC[codec]:
        raise VideoEncodeError(out_path, f"{codec} cannot be written to a {out_path.suffix or 'suffix-less'} file; "
                                         f"use {CODEC_SUFFIX[codec]}")
    return container


def _video_args(codec: str, crf: int | None, preset: str | None) -> list[str]:
    """Encoder arguments. Frames arrive as sRGB; YUV outputs are converted with and tagged as
    BT.709 (untagged video is shown as BT.601 or BT.709 depending on the player and its height).
    H.264 and HEVC receive 4:2:0 planes made by ``_yuv420``; ProRes and FFV1 receive RGB."""
    if codec == "h264":
        args = ["-c:v", "libx264", "-preset", preset or H264_PRESET, "-crf", str(H264_CRF if crf is None else crf)]
        args += ["-tune", H264_TUNE] if H264_TUNE else []
        args += ["-x264-params", X264_PARAMS] if X264_PARAMS else []
        return [*args, "-pix_fmt", "yuv420p", *_BT709, "-chroma_sample_location", "center"]
    if codec == "hevc":
        # hvc1: the sample entry Apple's players require for HEVC in MP4/MOV.
        return ["-c:v", "libx265", "-preset", preset or HEVC_PRESET, "-crf", str(HEVC_CRF if crf is None else crf),
                "-x265-params", "log-level=error", "-tag:v", "hvc1", "-pix_fmt", "yuv420p", *_BT709,
                "-chroma_sample_location", "center"]
    # setparams: the encoder takes primaries and transfer from the frames, which scale leaves unset.
    if codec == "prores":
        # 422 HQ, 10 bit, the intermediate editors expect; apl0 makes Apple's tools treat it as their own.
        return ["-vf", ("scale=out_color_matrix=bt709:out_range=tv:flags=area+accurate_rnd+full_chroma_int,"
                        "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"),
                "-c:v", "prores_ks", "-profile:v", "3", "-vendor", "apl0", "-pix_fmt", "yuv422p10le", *_BT709]
    # FFV1 keeps the RGB frames bit-exact (an archival master); every frame a key frame for editing.
    return ["-vf", "setparams=color_primaries=bt709:color_trc=iec61966-2-1:colorspace=gbr:range=pc",
            "-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1", "-pix_fmt", "bgr0"]


def _yuv_input(codec: str) -> bool:
    return codec in ("h264", "hevc")


# 4:2:0 for H.264 and HEVC, made here rather than by ffmpeg's scale filter, whose 2x2 chroma
# average made 4:2:0 alone (lossless H.264) add 10-41% to stylized frames' warping error. Why:
# - Decoders differ in how they bring chroma back to full size. OpenCV, ffmpeg's default RGB output
#   and software paths repeat each chroma sample over its 2x2 block; GPU players interpolate it
#   (bilinear). Repeated chroma is a blocky grid fixed in the picture while the content moves under
#   it, so its error changes from frame to frame; decoded with interpolated chroma, the same
#   lossless files added -8..+5%.
# - The chroma lost to subsampling also shifts each pixel's luminance, which the full-resolution
#   luma plane can carry back: Y is chosen so that, with the chroma a decoder rebuilds, the RGB
#   comes as close as it can to the frame (luma adjustment, Strom et al. 2016). Its target is the
#   mean of repeated and interpolated chroma, to serve both kinds of decoder: 4-7 points less added
#   error with either, and 0.1-0.4 dB more PSNR with either.
# - A Gaussian low-pass before subsampling (sigma 0.7 pixels) leaves less chroma texture to alias
#   on the repeating decoders' grid: 4-9 points less added error there, for 0.4-0.5 dB less PSNR
#   with interpolated chroma. A sharper filter (Lanczos) aliases more than the 2x2 average.
# Chroma sits at the centre of each 2x2 block, as with ffmpeg's 2x2 average and where bilinear
# decoders (ffmpeg's included) put it, and the stream says so.
CHROMA_SIGMA = 0.7  # 0: the plain 2x2 average
LUMA_ADJUST = True
_KR, _KB = 0.2126, 0.0722  # BT.709
_KG = 1 - _KR - _KB
# RGB [0, 255] -> limited-range Y'CbCr (Y 16-235, Cb/Cr 16-240) and back, as 3x4 affine matrices
_TO_YCC = np.array([[_KR, _KG, _KB], [-_KR / (2 - 2 * _KB), -_KG / (2 - 2 * _KB), 0.5],
                    [0.5, -_KG / (2 - 2 * _KR), -_KB / (2 - 2 * _KR)]]) * np.array([[219], [224], [224]]) / 255
_RGB_TO_YCC = np.hstack([_TO_YCC, [[16], [128], [128]]]).astype(np.float32)
_YCC_TO_RGB = np.hstack([np.linalg.inv(_TO_YCC), -np.linalg.inv(_TO_YCC) @ [[16], [128], [128]]]).astype(np.float32)
# one luma step per 255/219 grey levels, along all three channels: the mean RGB residual in Y units
_RESIDUAL_TO_Y = np.full((1, 3), 219 / 255 / 3, np.float32)


def _chroma_kernel(sigma: float) -> np.ndarray:
    """Even-length taps centred between two pixels, where each chroma sample sits."""
    if sigma <= 0:
        return np.array([0.5, 0.5], np.float32)
    x = np.arange(-np.ceil(4 * sigma) + 0.5, np.ceil(4 * sigma))
    taps = np.exp(-x ** 2 / (2 * sigma ** 2))
    return (taps / taps.sum()).astype(np.float32)


def _yuv420(rgb: np.ndarray) -> list[np.ndarray]:
    """The Y, Cb and Cr planes (uint8, BT.709, limited range, chroma centre-sited) of an even-sided
    RGB uint8 frame; see the comment above ``CHROMA_SIGMA``."""
    h, w = rgb.shape[:2]
    target = rgb.astype(np.float32)
    ycc = cv2.transform(target, _RGB_TO_YCC)
    taps = _chroma_kernel(CHROMA_SIGMA)
    anchor = len(taps) // 2 - 1  # output x is centred on x + 0.5: sampling even x puts it mid-block
    chroma = cv2.sepFilter2D(np.ascontiguousarray(ycc[..., 1:]), -1, taps, taps, anchor=(anchor, anchor),
                             borderType=cv2.BORDER_REFLECT)[::2, ::2]
    chroma = np.clip(np.rint(chroma), 0, 255)
    luma = ycc[..., 0]
    if LUMA_ADJUST:
        # halfway between decoders that replicate chroma and those that interpolate it (centre-sited)
        decoded_chroma = (cv2.resize(chroma, (w, h), interpolation=cv2.INTER_NEAREST)
                          + cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR)) * np.float32(0.5)
        decoded = cv2.transform(cv2.merge([luma, decoded_chroma]), _YCC_TO_RGB)
        np.clip(decoded, 0, 255, out=decoded)  # what the decoder shows; a clipped channel cannot follow Y
        luma = luma + cv2.transform(target - decoded, _RESIDUAL_TO_Y)
    chroma = chroma.astype(np.uint8)
    return [np.clip(np.rint(luma), 0, 255).astype(np.uint8), np.ascontiguousarray(chroma[..., 0]),
            np.ascontiguousarray(chroma[..., 1])]


def _even(frame: np.ndarray) -> np.ndarray:
    """Pads odd sides by one replicated row/column (4:2:0 chroma needs even sides)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def _as_rgb24(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(_even(frame))


# A minimal Matroska writer: raw RGB frames with nanosecond timestamps, streamed to ffmpeg's stdin.
# ffmpeg reads no other format that carries an arbitrary time for each frame from a pipe (rawvideo
# and Y4M only know a constant rate), and a one-nanosecond clock maps back exactly onto any source
# time base coarser than a nanosecond once ffmpeg rounds to that base.
def _ebml(element_id: int, payload: bytes) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + (0x01 << 56 | len(payload)).to_bytes(
        8, "big") + payload


def _ebml_uint(element_id: int, value: int) -> bytes:
    return _ebml(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _mkv_header(width: int, height: int, fourcc: bytes) -> bytes:
    ebml = _ebml(0x1A45DFA3, _ebml_uint(0x4286, 1) + _ebml_uint(0x42F7, 1) + _ebml_uint(0x42F2, 4)
                 + _ebml_uint(0x42F3, 8) + _ebml(0x4282, b"matroska") + _ebml_uint(0x4287, 4)
                 + _ebml_uint(0x4285, 2))
    info = _ebml(0x1549A966, _ebml_uint(0x2AD7B1, 1) + _ebml(0x4D80, b"nst") + _ebml(0x5741, b"nst"))
    video = _ebml(0xE0, _ebml_uint(0xB0, width) + _ebml_uint(0xBA, height) + _ebml(0x2EB524, fourcc))
    track = _ebml(0xAE, _ebml_uint(0xD7, 1) + _ebml_uint(0x73C5, 1) + _ebml_uint(0x83, 1) + _ebml_uint(0x9C, 0)
                  + _ebml(0x22B59C, b"und") + _ebml(0x86, b"V_UNCOMPRESSED") + video)
    segment_unknown_size = bytes.fromhex("1853806701ffffffffffffff")
    return ebml + segment_unknown_size + info + _ebml(0x1654AE6B, track)


def _mkv_frame(planes: list[np.ndarray], time_ns: int, duration_ns: int) -> list[bytes | memoryview]:
    """One cluster holding one block (track 1, relative time 0) and its duration; the pixels
    are returned as separate buffers so they are never copied into a bytes object."""
    data = [memoryview(plane).cast("B") for plane in planes]
    block_header = b"\x81\x00\x00\x00"
    block_size = len(block_header) + sum(len(d) for d in data)
    block = bytes.fromhex("a1") + (0x01 << 56 | block_size).to_bytes(8, "big")
    duration = _ebml_uint(0x9B, duration_ns)
    group_size = len(block) + block_size + len(duration)
    group = bytes.fromhex("a0") + (0x01 << 56 | group_size).to_bytes(8, "big")
    timestamp = _ebml_uint(0xE7, time_ns)
    cluster_size = len(timestamp) + len(group) + group_size
    cluster = bytes.fromhex("1f43b675") + (0x01 << 56 | cluster_size).to_bytes(8, "big")
    return [cluster + timestamp + group + block + block_header, *data, duration]


class _FrameClock:
    """Each output frame's time and duration in nanoseconds, from the source's timing.

    Frames beyond the timing (the source decoded fewer here than in the caller's decoder) follow
    at the last frame's duration; times are kept strictly increasing.
    """

    def __init__(self, timing: FrameTiming, fps: Fraction) -> None:
        self.tb = timing.time_base
        self.ticks = [p - timing.pts[0] for p in timing.pts]
        nominal = max(1, round(1 / (fps * self.tb)))
        self.last = timing.last_duration or (self.ticks[-1] - self.ticks[-2] if len(self.ticks) > 1 else nominal)
        self.previous = -1

    def tick(self, index: int) -> int:
        if index < len(self.ticks):
            return self.ticks[index]
        return self.ticks[-1] + (index - len(self.ticks) + 1) * self.last

    def at(self, index: int) -> tuple[int, int]:
        now = max(self.tick(index), self.previous + 1)
        self.previous = now
        end = max(self.tick(index + 1), now + 1)
        return self._ns(now), self._ns(end) - self._ns(now)

    def _ns(self, ticks: int) -> int:
        return round(ticks * self.tb * 1_000_000_000)


def _audio_plan(streams: Iterable[StreamInfo], container: str, reencode_all: bool) -> list[str]:
    args: list[str] = []
    for k, stream in enumerate(s for s in streams if s.kind == "audio"):
        args += ["-map", f"1:{stream.index}"]
        keep = container == "matroska" or stream.codec in _COPY_AUDIO[container] or (
            container == "mov" and stream.codec.startswith("pcm_"))
        if keep and not reencode_all:
            args += [f"-c:a:{k}", "copy"]
            continue
        target = _FALLBACK_AUDIO[container]
        args += [f"-c:a:{k}", target]
        if target == "aac":
            channels = stream.channels or 2
            args += [f"-b:a:{k}", f"{max(128, min(512, 96 * channels))}k"]
            if stream.sample_rate and stream.sample_rate > 96000:  # the AAC encoder's ceiling
                args += [f"-ar:a:{k}", "48000"]
        log.info("audio track %d (%s) re-encoded as %s for %s", k + 1, stream.codec, target, container)
    return args


def _subtitle_plan(streams: Iterable[StreamInfo], container: str, out_path: Path) -> list[str]:
    args: list[str] = []
    k = 0
    for stream in (s for s in streams if s.kind == "subtitle"):
        text = stream.codec in _TEXT_SUBTITLES
        if container == "matroska":
            codec = "srt" if stream.codec == "mov_text" else "copy"
        elif text:
            codec = "mov_text"  # the only text subtitle format MP4 and MOV players read
        else:
            log.warning("%s: subtitle track %d (%s, pictures) has no place in %s; left out", out_path,
                        stream.index, stream.codec, container)
            continue
        args += ["-map", f"1:{stream.index}", f"-c:s:{k}", codec]
        k += 1
    return args


def _ffmpeg_failure(returncode: int, stderr: str, out_path: Path) -> str:
    """Why ffmpeg failed, in words a user can act on: a full disk and a file size limit say so."""
    if returncode < 0:
        if -returncode == signal.SIGXFSZ:
            return "the file size limit was reached (SIGXFSZ)"
        try:
            return f"ffmpeg was stopped by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"ffmpeg was stopped by signal {-returncode}"
    last = (stderr.strip().splitlines() or ["unknown error"])[-1]
    try:
        if shutil.disk_usage(out_path.parent).free == 0:
            return f"no space left on the device ({last})"
    except OSError:
        pass
    return last


def _run_ffmpeg(args: list[str], out_path: Path, what: str) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args],
                          capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        reason = _ffmpeg_failure(proc.returncode, proc.stderr, out_path)
        raise VideoEncodeError(out_path, f"ffmpeg could not {what}: {reason}")


_TIMECODE = re.compile(r"^\s*timecode\s*:\s*(\d\d:\d\d:\d\d[:;.]\d\d)\s*$", re.MULTILINE | re.IGNORECASE)


def source_timecode(path: Path | str) -> str | None:
    """The start timecode a file states (HH:MM:SS:FF, ';' before the frames for drop-frame), on
    its video stream, its timecode track or the file itself; None when it states none."""
    match = _TIMECODE.search(ffmpeg_info(Path(path)))
    return match.group(1) if match else None


def _mux(video: Path, source: Path, out_tmp: Path, out_path: Path, container: str, offset: Fraction,
         codec: str) -> None:
    """The encoded video with the source's audio and subtitle tracks, chapters and metadata.

    The video is copied; audio is copied where the container plays it, else re-encoded. If ffmpeg
    refuses a copy, every audio track is re-encoded; if it still fails, subtitles are left out.
    """
    streams = parse_streams(ffmpeg_info(source))
    shift = ["-itsoffset", f"{float(offset):.9f}"] if offset > 0 else []
    tail = ["-movflags", "+faststart"] if container in ("mp4", "mov") else []
    base = [*shift, "-i", str(video), "-i", str(source), "-map", "0:v:0", "-c:v", "copy",
            *(["-tag:v", "hvc1"] if codec == "hevc" else []),
            # global metadata (creation time, title, location) and chapters of the source; not its
            # file-type brands, which describe the source's container
            "-map_metadata", "1", "-map_chapters", "1", "-metadata", "major_brand=", "-metadata", "minor_version=",
            "-metadata", "compatible_brands="]
    if container == "matroska":
        base += ["-map", "1:t?", "-c:t", "copy"]  # fonts the subtitles use
    timecode = source_timecode(source)
    if timecode is not None:
        # A camera's or an edit's start timecode (a tmcd track in MOV/MP4), which editors conform
        # and relink by; the frames are the source's, from its first, so it applies unchanged.
        base += ["-timecode", timecode]
    attempts = [(False, True), (True, True), (True, False)]
    for n, (reencode_all, subtitles) in enumerate(attempts):
        args = [*base, *_audio_plan(streams, container, reencode_all),
                *(_subtitle_plan(streams, container, out_path) if subtitles else []), *tail, "-f", container,
                str(out_tmp)]
        try:
            _run_ffmpeg(args, out_path, "add the source's audio and subtitles")
            if not subtitles and any(s.kind == "subtitle" for s in streams):
                log.warning("%s: the source's subtitles could not be added; left out", out_path)
            return
        except VideoEncodeError as exc:
            if n == len(attempts) - 1:
                raise
            log.info("%s: %s; retrying with %s", source, exc.reason,
                     "every audio track re-encoded" if n == 0 else "subtitles left out")


def encode_video(frames: Iterable[np.ndarray], out_path: Path, fps: Fraction, audio_source: Path | None,
                 crf: int | None = None, *, codec: str = "h264", source: Path | str | None = None,
                 timing: FrameTiming | None = None, preset: str | None = None) -> Path:
    """Writes RGB [0, 255] frames as a video, atomically, and returns ``out_path``.

    ``codec`` is "h264" (default: yuv420p, what every player opens), "hevc", "prores" (422 HQ) or
    "ffv1" (lossless RGB); ``out_path``'s suffix picks the container and must suit the codec
    (``CODEC_SUFFIX``: .mp4, .mp4, .mov, .mkv; .mov and .mkv also take H.264/HEVC). ``crf`` and
    ``preset`` apply to H.264/HEVC (None: the measured defaults).

    Timing: frame i is shown at ``timing``'s i-th time when the source's frames are off a
    constant-rate grid (variable frame rate), else at i / ``fps`` exactly. With ``source`` and no
    ``timing``, the source's timing is decoded here.

    Tracks: every audio track, subtitle track, chapter and the global metadata of ``source`` (or,
    without it, of ``audio_source``) are carried over; see ``_mux`` for when audio is re-encoded.
    """
    out_path = Path(out_path)
    container = _container(codec, out_path)
    _remove_stale_temps(out_path)
    tracks_from = Path(source) if source is not None else (Path(audio_source) if audio_source is not None else None)
    if timing is None and source is not None:
        try:
            timing = frame_timing(source, expected=0)
        except VideoError as exc:
            log.warning("%s; writing frames at a constant %s fps", exc, fps)
    variable = timing is not None and not timing.on_grid(fps)
    offset = timing.start if timing is not None and tracks_from is not None else Fraction(0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = out_path.suffix.lower()
    video_tmp: Path | None = None
    try:
        with atomic_target(out_path, suffix=f".part{suffix}") as out_tmp:
            if tracks_from is None:
                target = out_tmp
            else:
                video_tmp = target = temp_beside(out_path, f".video{suffix}")
            count = _encode_frames(frames, target, out_path, container, codec, fps,
                                   timing if variable else None, crf, preset, final=tracks_from is None)
            if tracks_from is not None:
                _mux(target, tracks_from, out_tmp, out_path, container, offset, codec)
        log.debug("wrote %s: %d frames, %s", out_path, count,
                  "variable frame rate (source timestamps)" if variable else f"{fps} fps")
        return out_path
    finally:
        if video_tmp is not None:
            video_tmp.unlink(missing_ok=True)


def _remove_stale_temps(out_path: Path) -> None:
    """Deletes the temp files an encode of ``out_path`` killed part-way left beside it (each up to
    the size of the video). One process at a time writes an output folder (its lock), so a temp
    file of this output found here is no other encode's."""
    suffix = out_path.suffix.lower()
    for tail in (f".part{suffix}", f".video{suffix}"):
        for stale in stale_temps(out_path, tail):
            stale.unlink(missing_ok=True)


def _encode_frames(frames: Iterable[np.ndarray], target: Path, out_path: Path, container: str, codec: str,
                   fps: Fraction, timing: FrameTiming | None, crf: int | None, preset: str | None,
                   final: bool) -> int:
    """Streams the frames into ffmpeg: raw pixels at ``fps``, or Matroska with ``timing``'s times.
    The pixels are 4:2:0 planes from ``_yuv420`` for H.264/HEVC, else RGB."""
    proc: subprocess.Popen | None = None
    clock = _FrameClock(timing, fps) if timing is not None else None
    yuv = _yuv_input(codec)
    count = 0
    with tempfile.TemporaryFile() as errors:
        try:
            for frame in frames:
                rgb = _as_rgb24(frame)
                if rgb.ndim != 3 or rgb.shape[2] != 3:
                    raise VideoEncodeError(out_path, f"frame {count + 1} has shape {rgb.shape}, not (H, W, 3) RGB")
                h, w = rgb.shape[:2]
                if proc is None:
                    size = (h, w)
                    proc = _start_encoder(target, container, codec, fps, timing, crf, preset, final, (w, h), errors)
                    if clock is not None:
                        proc.stdin.write(_mkv_header(w, h, b"I420" if yuv else b"RGB\x18"))
                elif (h, w) != size:
                    raise VideoEncodeError(out_path, f"frame {count + 1} is {w}x{h}, the first was {size[1]}x{size[0]}")
                planes = _yuv420(rgb) if yuv else [rgb]
                if clock is not None:
                    proc.stdin.writelines(_mkv_frame(planes, *clock.at(count)))
                else:
                    proc.stdin.writelines(memoryview(plane).cast("B") for plane in planes)
                count += 1
            if proc is None:
                raise VideoEncodeError(out_path, "no frames to write")
            proc.stdin.close()
            returncode = proc.wait()
        except BrokenPipeError:
            returncode = proc.wait() if proc is not None else 1
        except BaseException:
            if proc is not None:
                proc.kill()
                proc.wait()
            raise
        if returncode != 0:
            errors.seek(0)
            reason = _ffmpeg_failure(returncode, errors.read().decode(errors="replace"), out_path)
            raise VideoEncodeError(out_path, f"ffmpeg could not encode {codec}: {reason}")
    return count


def _start_encoder(target: Path, container: str, codec: str, fps: Fraction, timing: FrameTiming | None,
                   crf: int | None, preset: str | None, final: bool, wh: tuple[int, int],
                   errors: Any) -> subprocess.Popen:
    # 4:2:0 input is already BT.709 limited range: said so, or ffmpeg would convert it again
    tags = _BT709 if _yuv_input(codec) else []
    if timing is None:
        rate = f"{fps.numerator}/{fps.denominator}"
        # a constant rate given to the raw input: frame i at exactly i / fps, the exact rational rate
        pix_fmt = "yuv420p" if _yuv_input(codec) else "rgb24"
        source = ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{wh[0]}x{wh[1]}", "-framerate", rate, *tags,
                  "-i", "pipe:0"]
    else:
        tb = timing.time_base
        # encode in the source's own time base, so each nanosecond time rounds back to its tick
        source = ["-f", "matroska", *tags, "-i", "pipe:0", "-enc_time_base", f"{tb.numerator}/{tb.denominator}"]
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *source, "-map", "0:v:0",
            "-fps_mode", "passthrough", *_video_args(codec, crf, preset)]
    if timing is not None and _yuv_input(codec) and len(timing.pts) > 1:
        step = timing.pts[-1] - timing.pts[-2]
        if (timing.last_duration - step) * timing.time_base > GRID_TOLERANCE:
            # A last frame held longer (an animation's end): MP4 takes the last frame's duration from
            # the last packet decoded, which B-frames make another frame's; without them it is its own.
            args += ["-bf", "0"]
    if final and container in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    args += ["-f", container, str(target)]
    # Its own process group, as the decoders': Ctrl-C in a terminal goes to nst alone, which stops
    # it and keeps the run resumable, rather than ending the encode as a failure of the video.
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, process_group=0)


# ---------------------------------------------------------------------------- reading results back
def listed_seconds(path: Path | str) -> float | None:
    """The length the container states, in seconds (None when it states none)."""
    return _listed_seconds(ffmpeg_info(Path(path)))


def _listed_seconds(info: str) -> float | None:
    match = _DURATION.search(info)
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3)) if match else None


def _frame_shown_at(source: Path, start: float, through: bool = False) -> float | None:
    """When the frame on screen at ``start`` seconds (from the file's start) begins: the last frame
    stamped at or before it, read off the frames around it (None when none decodes there). With
    ``through``, decoded from the file's start rather than after a seek."""
    sought = max(0.0, start - 2)
    seek = ["-ss", f"{sought:.6f}"]
    tb, frames, _ = _frame_stamps(["-i", str(source), *seek, "-t", "3"] if through
                                  else [*seek, "-i", str(source), "-t", "3"])
    if tb is None:
        return None
    # stamps come out counted from the time sought, which -ss counts from the file's start
    shown = [sought + float(pts * tb) for pts, _ in frames]
    before = [t for t in shown if t <= start + 1e-6]
    return max(0.0, max(before) - 1e-6) if before else start if shown else None


_SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{3})")


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _subtitle_part(source: Path, stream: StreamInfo, seek: float, stop: float | None, dest: Path) -> bool:
    """The cues of a text subtitle stream shown between ``seek`` and ``stop`` seconds, clipped to
    that span and counted from ``seek``, written to ``dest`` as SRT; False when none is (or the
    stream does not read as text)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(source),
                           "-map", f"0:{stream.index}", "-c:s", "srt", "-f", "srt", "-"],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", check=False)
    cues = []
    for block in re.split(r"\n\s*\n", proc.stdout.replace("\r\n", "\n").strip()):
        lines = block.split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        ends = [_SRT_TIME.search(side) for side in lines[timing].split("-->")[:2]]
        text = "\n".join(lines[timing + 1:]).strip()
        if None in ends or not text:
            continue
        begin, end = (int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) + int(m.group(4)) / 1000
                      for m in ends)
        if end > seek and (stop is None or begin < stop):
            cues.append((max(begin, seek) - seek, (end if stop is None else min(end, stop)) - seek, text))
    if proc.returncode != 0 or not cues:
        return False
    dest.write_text("".join(f"{n}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n\n"
                            for n, (a, b, text) in enumerate(cues, 1)), encoding="utf-8")
    return True


def cut_excerpt(source: Path | str, dest: Path, start: float, duration: float | None) -> Path:
    """The part of a video from ``start`` seconds on, ``duration`` seconds long (to its end when
    None), as a Matroska file that plays as the source is shown.

    Its frames are re-encoded from exactly the frame on screen at ``start`` (near-losslessly: H.264
    4:4:4 at crf 6), deinterlaced, in SDR colours and square pixels at the displayed size, with
    their own times (a variable frame rate kept); every audio track is cut to the sample (FLAC, or
    24-bit PCM above eight channels) and every subtitle track and attachment (subtitle fonts) kept.
    Written atomically; raises VideoError when the file is no video or nothing of it lies in the
    range. A file whose seek lands where nothing decodes (an MPEG-TS with key frames far apart) is
    decoded from its start instead.
    """
    source, dest = Path(source), Path(dest)
    info = probe(source)
    pictures = picture_format(source)
    if pictures is None:
        raise VideoDecodeError(source, "no frame decodes")
    length = _listed_seconds(ffmpeg_info(source))
    if length is not None and start >= length:
        raise VideoError(source, f"the excerpt starts at {start:g} s, after the clip's end ({length:.2f} s)")
    w, h = pictures.display_size
    shown = [*_shown_filters(pictures), f"scale={w + w % 2}:{h + h % 2}", "setsar=1"]
    for through in (False, True):
        # From the frame on screen at ``start``: ffmpeg keeps the frames stamped at or after the
        # time sought, so a start between two frames lost the one shown then.
        seek = (_frame_shown_at(source, start, through) if start > 0 else 0.0)
        if seek is None:
            continue
        stop = None if duration is None else start + duration
        span = ["-ss", f"{seek:.6f}"] + (["-t", f"{stop - seek:.6f}"] if stop is not None else [])
        with tempfile.TemporaryDirectory(prefix="nst-subtitles-") as folder:
            inputs = [*([] if through else span[:2]), "-i", str(source), *([] if through else span[2:])]
            subtitles: list[str] = []  # the output's subtitle tracks: their maps, codecs and languages
            extra = k = 0  # inputs after the source; subtitle tracks so far
            for stream in info.subtitle_streams:
                part = Path(folder) / f"{stream.index}.srt"
                if stream.codec in _TEXT_SUBTITLES:
                    # Taken apart here: with a seek, ffmpeg kept cues from before the part and
                    # stretched others past it. Decoding through, the output's -ss drops cues
                    # before it without moving the rest, so they are left out then.
                    if through:
                        log.warning("%s: subtitle track %d left out of the part (decoded through)", source,
                                    stream.index)
                        continue
                    if not _subtitle_part(source, stream, seek, stop, part):
                        continue  # no cue in the part
                    extra += 1
                    inputs += ["-i", str(part)]
                    subtitles += ["-map", f"{extra}:0", f"-c:s:{k}", "srt"]
                    if stream.language:
                        subtitles += [f"-metadata:s:s:{k}", f"language={stream.language}"]
                else:  # pictures (DVD, Blu-ray), kept as they come
                    subtitles += ["-map", f"0:{stream.index}", f"-c:s:{k}", "copy"]
                k += 1
            args = [*inputs, *(span if through else []), "-map", "0:V:0", "-vf", ",".join(shown),
                    "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", "-crf", "6"]
            for k, stream in enumerate(info.audio_streams):
                codec = "flac" if (stream.channels or 2) <= 8 else "pcm_s24le"
                args += ["-map", f"0:{stream.index}", f"-c:a:{k}", codec]
            args += [*subtitles, "-map", "0:t?", "-c:t", "copy", "-map_metadata", "0", "-map_chapters", "-1",
                     "-metadata", "timecode=", "-f", "matroska"]  # the source's start timecode is not the part's
            with atomic_target(dest) as tmp:
                _run_ffmpeg([*args, str(tmp)], dest, "cut the excerpt")
        try:  # a range past the last frame (the audio may run on) leaves a file with no frame
            first = next(read_frames(dest, 16), None)
        except VideoError:
            first = None
        if first is not None:
            return dest
        dest.unlink(missing_ok=True)
        if start == 0:
            break
    raise VideoError(source, f"no frame is shown between {start:g} s and "
                             f"{'its end' if duration is None else f'{start + duration:g} s'}")


def decoded_seconds(path: Path, stream: str = "a") -> float | None:
    """Duration of one stream kind ("a" or "v") as ffmpeg decodes it (None if absent)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", f"0:{stream}:0",
                           "-f", "null", "-"], capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        return None
    times = _TIME.findall(proc.stderr)
    if not times:
        return None
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)
