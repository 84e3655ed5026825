"""`nst demo`: sample photos shipped with scikit-image, stylized with a painting made by code."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline import config as config_mod
from pipeline.batch.progress import console
from pipeline.media.images import save_image

DEMO_PHOTOS = ("astronaut", "coffee")


def swirl_painting(size: int = 512, seed: int = 7) -> np.ndarray:
    """A Starry-Night-like texture: domain-warped swirls in a blue/yellow palette, with brush grain.

    Made here so the demo needs no third-party artwork and no network.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    warp_x = np.zeros_like(x)
    warp_y = np.zeros_like(y)
    for _ in range(6):  # random low-frequency waves bend the coordinates into swirls
        fx, fy, phase = rng.uniform(1, 5), rng.uniform(1, 5), rng.uniform(0, 2 * np.pi)
        warp_x += 0.08 * np.sin(2 * np.pi * (fx * y + fy * x) + phase)
        warp_y += 0.08 * np.cos(2 * np.pi * (fy * x - fx * y) + phase)
    cx, cy = x + warp_x, y + warp_y
    radius = np.hypot(cx - 0.6, cy - 0.3)
    angle = np.arctan2(cy - 0.3, cx - 0.6)
    field = np.sin(40 * radius + 3 * angle) + 0.5 * np.sin(25 * cx + 13 * cy)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.2)
    # Brush strokes: noise smeared along the swirl direction by oriented blurs.
    strokes = cv2.filter2D(grain, -1, np.eye(9, dtype=np.float32) / 9)
    t = np.clip((field + 1.5) / 3 + 0.15 * strokes, 0, 1)
    palette = np.array([[12, 28, 84], [30, 70, 160], [80, 140, 210], [235, 215, 90], [250, 240, 180]],
                       np.float32)
    positions = np.linspace(0, 1, len(palette))
    image = np.stack([np.interp(t, positions, palette[:, c]) for c in range(3)], axis=-1)
    return np.clip(image, 0, 255).astype(np.float32)


def demo_photos() -> dict[str, np.ndarray]:
    import skimage.data

    return {name: getattr(skimage.data, name)().astype(np.float32)[..., :3] for name in DEMO_PHOTOS}


def run_demo(out_dir: Path, size: int | None = None, iterations: int | None = None, quiet: bool = False) -> list[Path]:
    from pipeline.batch.progress import IterationBar, progress_bars
    from pipeline.core.arrays import fit_longest, resize
    from pipeline.core.stylizer import Stylizer

    overrides = {"image.size": size or 256, "optim.iterations": iterations or 100,
                 "optim.coarse_iterations": 50}
    cfg = config_mod.load(overrides=overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    style = swirl_painting()
    save_image(style, out_dir / "style_swirls.png")
    stylizer = Stylizer(cfg)
    written = []
    with progress_bars(quiet) as progress:
        for name, photo in demo_photos().items():
            content = resize(photo, fit_longest(photo, cfg.image.size))
            save_image(content, out_dir / f"{name}_content.png")
            bar = IterationBar(progress, name, cfg.optim.iterations + cfg.optim.coarse_iterations)
            result = stylizer.stylize(content, [style], callback=bar)
            bar.finish()
            written.append(save_image(result.image, out_dir / f"{name}_stylized.png"))
    console.print(f"demo results are in {out_dir.resolve()}/: "
                  + ", ".join(p.name for p in written) + " (inputs and style beside them)", highlight=False)
    return written
