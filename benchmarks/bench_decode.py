"""What decoding costs, and what it gives, for the kinds of video people bring.

    .venv/bin/python benchmarks/bench_decode.py [--frames 60] [--size 512] [--repeat 2] [--seek-seconds 60]

The pipeline decodes with ffmpeg through a pipe (``read_frames``): interlaced frames deinterlaced
(bwdif), pixels that are not square made square, HDR brought to SDR. The OpenCV wheel decodes the
same files itself (``cv2.VideoCapture``, then the same resize); it is timed beside it on the same
files, alternating. For frames flagged interlaced OpenCV's converter fails ("Cannot convert
interlaced to progressive frames") and hands back whatever its buffer held: black, or a stale
picture that does not move. So for each decoder the benchmark prints how much consecutive frames
differ (the pattern moves: a working decoder shows change) and how far OpenCV's frames are from the
pipeline's.

Clips (generated here with the bundled ffmpeg, a moving test pattern): 1080p H.264 (phones,
cameras), 1080i H.264 (camcorders, broadcast), 1080p HLG HEVC 10-bit (a phone's HDR clip), NTSC DV
in AVI (MiniDV tapes), and 720x480 anamorphic 16:9 MPEG-2 (DVD). Prints ms per frame for each
decoder, their ratio (pipeline / OpenCV, each pair timed in one run), the frames' shape, the mean
change between consecutive frames from each, and OpenCV's distance from the pipeline's frames.

Then reaching a range far into a video (a backward chain's chunk, a later key frame): 64 frames at
the middle and near the end of a 1080p H.264 clip (``--seek-seconds`` long, GOP 2 s), decoded
through from the start against sought with the file's ``frame_times`` (measured once per video,
also timed), and whether both give the same pixels.
"""
from __future__ import annotations

import argparse
import itertools
import subprocess
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import cv2
import numpy as np

from pipeline.media.frames import ffmpeg_exe, frame_times, read_frames, working_size

PATTERN = "testsrc2=size={size}:rate={rate}"
CLIPS = {
    "1080p H.264": ("1920x1080", "30", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], ".mp4"),
    "1080i H.264": ("1920x1080", "60", ["-vf", "interlace=scan=tff", "-flags", "+ildct+ilme", "-c:v", "libx264",
                                        "-preset", "veryfast", "-pix_fmt", "yuv420p"], ".mp4"),
    "1080p HLG HEVC": ("1920x1080", "30", [
        "-vf", ("zscale=tin=bt709:pin=bt709:min=bt709:rin=tv:t=arib-std-b67:p=bt2020:m=bt2020nc:r=tv:npl=203,"
                "format=yuv420p10le"), "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
        "-color_trc", "arib-std-b67", "-color_primaries", "bt2020", "-colorspace", "bt2020nc"], ".mp4"),
    "NTSC DV (AVI)": ("720x480", "60000/1001", ["-vf", "interlace=scan=bff,setsar=8/9", "-c:v", "dvvideo",
                                                "-pix_fmt", "yuv411p"], ".avi"),
    "DVD 16:9": ("720x480", "60000/1001", ["-vf", "interlace=scan=tff,setsar=32/27", "-c:v", "mpeg2video",
                                           "-flags", "+ildct+ilme", "-b:v", "8M"], ".mpg"),
}


def make(folder: Path, name: str, frames: int) -> Path:
    size, rate, args, suffix = CLIPS[name]
    # interlaced clips weave two pictures into each frame: twice the pictures for the same frames
    pictures = frames * 2 if "interlace=" in " ".join(args) else frames
    path = folder / (name.replace(" ", "_").replace(":", "").replace("(", "").replace(")", "") + suffix)
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    PATTERN.format(size=size, rate=rate), "-frames:v", str(pictures), *args, "-frames:v",
                    str(frames), str(path)], check=True)
    return path


def opencv_frames(path: Path, size: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    out = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        wh = working_size(rgb.shape[1], rgb.shape[0], size)
        out.append(cv2.resize(rgb, wh, interpolation=cv2.INTER_AREA).astype(np.float32))
    capture.release()
    return out


def timed(read, path: Path, size: int) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    frames = list(read(path, size))
    return time.perf_counter() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=512, help="working size (longest side)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seek-seconds", type=int, default=60, help="length of the seeking clip (0: skip it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        print(f"{'clip':16s} {'pipeline ms/fr':>14s} {'OpenCV ms/fr':>12s} {'ratio':>6s}  {'pipeline frames':>16s} "
              f"{'moves':>6s}  {'OpenCV frames':>16s} {'moves':>6s}  {'OpenCV vs pipeline':>18s}")
        for name in CLIPS:
            path = make(Path(tmp), name, args.frames)
            ours, theirs = [], []
            for _ in range(args.repeat):  # alternated, so drift on a shared machine hits both
                t, frames = timed(read_frames, path, args.size)
                ours.append(t / max(1, len(frames)))
                t, reference = timed(opencv_frames, path, args.size)
                theirs.append(t / max(1, len(reference)))
            a, b = np.median(ours) * 1000, np.median(theirs) * 1000
            h, w = frames[0].shape[:2]
            apart = np.mean([np.abs(cv2.resize(r, (w, h), interpolation=cv2.INTER_AREA) - f).mean()
                             for r, f in zip(reference, frames, strict=False)])
            print(f"{name:16s} {a:14.1f} {b:12.1f} {a / b:6.2f}  {shape(frames):>16s} {moves(frames):6.1f}  "
                  f"{shape(reference):>16s} {moves(reference):6.1f}  {apart:18.1f}", flush=True)
        if args.seek_seconds:
            seeking(Path(tmp), args.seek_seconds, args.size)


def seeking(folder: Path, seconds: int, size: int) -> None:
    clip = folder / "long.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    PATTERN.format(size="1920x1080", rate="30"), "-frames:v", str(30 * seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p", str(clip)], check=True)
    start = time.perf_counter()
    times = frame_times(clip)
    measured = time.perf_counter() - start
    print(f"\n1080p H.264, {seconds} s ({30 * seconds} frames): frame_times {measured:.1f} s "
          f"({1000 * measured / (30 * seconds):.1f} ms a frame, once per video)")
    for at in (15 * seconds, 30 * seconds - 100):
        begin = time.perf_counter()
        through = list(read_frames(clip, size, at, at + 64))
        middle = time.perf_counter()
        sought = list(read_frames(clip, size, at, at + 64, times=times))
        end = time.perf_counter()
        same = len(through) == len(sought) == 64 and all(np.array_equal(a, b) for a, b in zip(through, sought))
        print(f"64 frames from frame {at}: decoded through {middle - begin:5.1f} s, sought {end - middle:5.1f} s "
              f"({(middle - begin) / (end - middle):.1f}x), same pixels: {same}", flush=True)


def shape(frames: list[np.ndarray]) -> str:
    return f"{len(frames)} {frames[0].shape[1]}x{frames[0].shape[0]}" if frames else "none"


def moves(frames: list[np.ndarray]) -> float:
    """Mean absolute change between consecutive frames, grey levels."""
    return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(frames)])) if len(frames) > 1 else 0.0


if __name__ == "__main__":
    main()
