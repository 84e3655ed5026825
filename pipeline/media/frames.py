"""Video sources and sinks: probe, decode at a working size, encode H.264 with the source audio.

Decoding uses OpenCV; the pip build of OpenCV has no H.264 encoder, so frames go to a
near-lossless intermediate (FFV1, or MJPEG at full quality) through cv2.VideoWriter and ffmpeg
transcodes that to libx264 at the source's exact rational frame rate, copying its audio.
ffmpeg is always called with an argument list, never through a shell.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.atomic import atomic_target
from pipeline.errors import VideoError

log = logging.getLogger(__name__)

# The decoder's own messages about a damaged stream would repeat per packet; read_frames' caller
# reports the frames lost, once.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv",
                              ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".ogv"})
_STREAM_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<rest>.*)")
_STREAM_AUDIO = re.compile(r"Stream #\d+:\d+.*?: Audio: ")
_RATE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<k>k?) (?P<unit>fps|tbr)\b")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_TIME = re.compile(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)")


class VideoOpenFailure(VideoError):
    """The file is missing, not a video, or no decoder opens it."""


class FrameRateUnavailable(VideoError):
    """The container reports no usable frame rate."""


class VideoDecodeError(VideoError):
    """Decoding produced no frames, or failed part-way."""


class VideoEncodeError(VideoError):
    """Writing the intermediate file or the ffmpeg transcode failed."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frame_count: int
    fps: Fraction
    width: int
    height: int
    has_audio: bool


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
    return rates.get("fps") or rates.get("tbr")


def probe(path: Path | str) -> VideoInfo:
    """Checks the file opens as a video with frames, a size and a frame rate; raises VideoError."""
    path = Path(path)
    if not path.exists():
        raise VideoOpenFailure(path, "file not found")
    if path.is_dir():
        raise VideoOpenFailure(path, "is a directory, not a video")
    if path.stat().st_size == 0:
        raise VideoOpenFailure(path, "empty file (0 bytes)")
    info = ffmpeg_info(path)
    if not _STREAM_VIDEO.search(info):
        reason = "not a video (no video stream)"
        if "Invalid data found" in info:
            reason = "not a video (ffmpeg finds no known container in it)"
        raise VideoOpenFailure(path, reason)
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise VideoOpenFailure(path, "OpenCV cannot open this video")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        measured = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise VideoOpenFailure(path, f"no usable frame size ({width}x{height})")
    fps = recover_rate(_parse_rate(info), measured)
    if fps is None or fps <= 0:
        raise FrameRateUnavailable(path, "unknown or zero frame rate")
    if count <= 0:
        raise VideoDecodeError(path, "the container reports zero frames")
    return VideoInfo(path, count, fps, width, height, bool(_STREAM_AUDIO.search(info)))


def working_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the longest side = size and both sides even (H.264 4:2:0 needs even sides)."""
    factor = size / max(width, height)
    w = max(2, round(width * factor / 2) * 2)
    h = max(2, round(height * factor / 2) * 2)
    return w, h


def read_frames(path: Path | str, size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """RGB float32 [0, 255] frames at the working size, frames [start, stop) of the file.

    Stops quietly where the decoder stops; callers compare the count with ``probe`` to warn.
    """
    path = Path(path)
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise VideoOpenFailure(path, "OpenCV cannot open this video")
    try:
        wh = working_size(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                          int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), size)
        index = 0
        if start > 0:
            # Seeking by frame number is inexact for long-GOP codecs; decoding through is exact.
            while index < start and capture.grab():
                index += 1
            if index < start:
                return
        while stop is None or index < stop:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                return
            index += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            shrinking = wh[0] * wh[1] < rgb.shape[0] * rgb.shape[1]
            rgb = cv2.resize(rgb, wh, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
            yield rgb.astype(np.float32)
    finally:
        capture.release()


class FrameCursor:
    """Reads ranges of one video's frames in increasing order, decoding each frame once.

    ``read_frames`` decodes from the start of the file to reach a range (seeking is inexact for
    long-GOP codecs); the chunks of a forward chain ask for consecutive ranges, each beginning
    with the last frame of the one before, which this serves from one open decoder.
    """

    def __init__(self, path: Path | str, size: int) -> None:
        self.path, self.size = Path(path), size
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
            self._frames = read_frames(self.path, self.size, start)
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
def _even(frame: np.ndarray) -> np.ndarray:
    """Pads odd sides by one replicated row/column (4:2:0 chroma needs even sides)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def _open_intermediate(folder: Path, stem: str, fps: Fraction, wh: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
    attempts = (("FFV1", ".mkv", None), ("MJPG", ".avi", 100))
    for fourcc, suffix, quality in attempts:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=f".intermediate{suffix}")
        os.close(fd)
        writer = cv2.VideoWriter(tmp, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), float(fps), wh)
        if writer.isOpened():
            if quality is not None:
                writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
            return writer, Path(tmp)
        writer.release()
        Path(tmp).unlink(missing_ok=True)
    raise VideoEncodeError(folder / stem, "OpenCV's VideoWriter opens neither FFV1 nor MJPEG here")


def _transcode(intermediate: Path, out_tmp: Path, fps: Fraction, audio_source: Path | None, crf: int,
               audio_codec: str) -> subprocess.CompletedProcess:
    rate = f"{fps.numerator}/{fps.denominator}"
    # -r before -i regenerates the intermediate's timestamps at the exact rational rate.
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-r", rate,
            "-i", str(intermediate)]
    if audio_source is not None:
        args += ["-i", str(audio_source), "-map", "0:v:0", "-map", "1:a?"]
    else:
        args += ["-map", "0:v:0"]
    args += ["-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
             "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-r", rate, "-movflags", "+faststart"]
    if audio_source is not None:
        args += ["-c:a", audio_codec] + (["-b:a", "192k"] if audio_codec == "aac" else [])
    args += ["-f", "mp4", str(out_tmp)]
    return subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)


def encode_video(frames: Iterable[np.ndarray], out_path: Path, fps: Fraction, audio_source: Path | None,
                 crf: int = 18) -> Path:
    """Writes RGB [0, 255] frames as H.264 MP4 at ``fps`` with the audio of ``audio_source``, atomically."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer: cv2.VideoWriter | None = None
    intermediate: Path | None = None
    try:
        count = 0
        for frame in frames:
            frame = _even(np.asarray(frame))
            if writer is None:
                writer, intermediate = _open_intermediate(out_path.parent, out_path.name, fps,
                                                          (frame.shape[1], frame.shape[0]))
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise VideoEncodeError(out_path, f"frame {count + 1} is {frame.shape[1]}x{frame.shape[0]}, "
                                                 f"the first was {size[1]}x{size[0]}")
            bgr = cv2.cvtColor(np.clip(np.rint(frame), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
            writer.write(bgr)
            count += 1
        if writer is None:
            raise VideoEncodeError(out_path, "no frames to write")
        writer.release()
        writer = None
        with atomic_target(out_path, suffix=".part.mp4") as out_tmp:
            proc = _transcode(intermediate, out_tmp, fps, audio_source, crf, "copy")
            if proc.returncode != 0 and audio_source is not None:
                log.info("%s: audio stream copy refused (%s); re-encoding the audio as AAC",
                         audio_source, proc.stderr.strip().splitlines()[-1:] or "")
                proc = _transcode(intermediate, out_tmp, fps, audio_source, crf, "aac")
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
                raise VideoEncodeError(out_path, f"ffmpeg could not encode H.264: {last}")
        log.debug("wrote %s: %d frames at %s fps", out_path, count, fps)
        return out_path
    finally:
        if writer is not None:
            writer.release()
        if intermediate is not None:
            Path(intermediate).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- reading results back
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
