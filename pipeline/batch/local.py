"""`nst image`: stylize a few files in this process (no Ray), one clear line per failure."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.batch.imagejob import ImageJob, check_style_weights, load_styles, output_path_for, stylize_file
from pipeline.batch.progress import IterationBar, error_line, info_line, progress_bars
from pipeline.config import Config
from pipeline.core.stylizer import Stylizer
from pipeline.errors import NstError
from pipeline.media.images import load_image

log = logging.getLogger(__name__)


def plan_jobs(photos: Sequence[Path], out_dir: Path, fmt: str) -> list[ImageJob]:
    taken: set[Path] = set()
    return [ImageJob(p, output_path_for(p, out_dir, fmt, taken)) for p in photos]


def stylize_images(photos: Sequence[Path], styles: Sequence[Path], style_weights: Sequence[float] | None,
                   config: Config, out_dir: Path, overwrite: bool = False, quiet: bool = False) -> int:
    """Returns the number of failed inputs; the others are written whatever happens to one."""
    weights = check_style_weights(styles, style_weights)
    failed = 0
    readable = []
    for photo in photos:  # cheap checks first, before VGG is loaded
        if not Path(photo).is_file():
            failed += 1
            reason = "is a directory, not an image" if Path(photo).is_dir() else "file not found"
            error_line(f"{photo}: {reason}")
        else:
            readable.append(Path(photo))
    if not readable:
        return failed
    style_arrays = load_styles(styles, config.image.max_pixels)
    init = None
    if config.optim.init not in ("content", "noise"):
        init = load_image(Path(config.optim.init), config.image.max_pixels).rgb
    stylizer = Stylizer(config)
    with progress_bars(quiet) as progress:
        for job in plan_jobs(readable, out_dir, config.image.format):
            if job.output.exists() and not overwrite:
                info_line(f"skip {job.source}: {job.output} exists (use --overwrite)")
                continue
            total = config.optim.iterations + config.optim.coarse_iterations * (len(config.image.scales) - 1)
            bar = IterationBar(progress, job.source.name, total)
            try:
                outcome = stylize_file(stylizer, job, style_arrays, weights, config, init=init, callback=bar)
            except NstError as exc:
                failed += 1
                error_line(exc.message)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                failed += 1
                error_line(f"{job.source}: {type(exc).__name__}: {exc}")
                continue
            bar.finish()
            if quiet:
                continue
            info_line(f"wrote {job.output} ({outcome.size[0]}x{outcome.size[1]}, "
                      f"{outcome.evaluations} iterations, {outcome.seconds:.1f} s)")
    return failed
