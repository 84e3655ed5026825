"""Typer entrypoint: validates at the edge, then one call into the controller per command."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer
from typer.core import TyperGroup

from pipeline import config as config_mod
from pipeline.errors import ConfigError, InputError, NstError

try:  # Typer >= 0.17 vendors its own copy of click and only handles that copy's exceptions
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older Typer on plain click
    from click import ClickException


class _Group(TyperGroup):
    """Commands whose NstError becomes click's one-line "Error: ..." and its exit code.

    The layers below the CLI raise plain NstError (they do not import click); the translation
    happens here. Outside standalone mode (tests) the original exception passes through.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=standalone_mode, **kwargs)
        except NstError as exc:
            if not standalone_mode or STATE["debug"]:
                raise
            ClickException(exc.message).show()
            sys.exit(exc.exit_code)


app = typer.Typer(cls=_Group, add_completion=False, rich_markup_mode=None, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="nst: paint videos and photo archives in the style of an artwork (Gatys et al.).")
eval_app = typer.Typer(cls=_Group, rich_markup_mode=None, no_args_is_help=True, help="Quality metrics.")
app.add_typer(eval_app, name="eval")
log = logging.getLogger("nst")
STATE = {"debug": False}

# ---------------------------------------------------------------- shared options
StyleOpt = Annotated[list[Path], typer.Option("--style", "-s", metavar="PATH", help="Style image; repeat to blend several.")]
StyleWeightOpt = Annotated[list[float] | None, typer.Option(
    "--style-weight", metavar="W", help="Blend weight per --style, in the same order.")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A TOML config merged over the defaults.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="A preset from `nst presets`.")]
SizeOpt = Annotated[int | None, typer.Option("--size", help="Working size: longest side in pixels.")]
ItersOpt = Annotated[int | None, typer.Option("--iterations", "-n", help="Iterations at the final scale.")]
OptimizerOpt = Annotated[str | None, typer.Option("--optimizer", help="lbfgs | adam")]
ContentWOpt = Annotated[float | None, typer.Option("--content-loss-weight", help="Content loss weight.")]
StyleWOpt = Annotated[float | None, typer.Option("--style-loss-weight", help="Style loss weight.")]
TvOpt = Annotated[float | None, typer.Option("--tv-weight", help="Total-variation weight.")]
InitOpt = Annotated[str | None, typer.Option("--init", help="content | noise | PATH to an image.")]
ColorsOpt = Annotated[str | None, typer.Option(
    "--preserve-colors", help="Keep the content's colours: off | luminance (luminance-only transfer) | histogram "
                              "(the style's colours matched to the content's before the optimisation).")]
MaskOpt = Annotated[list[str] | None, typer.Option(
    "--style-mask", metavar="PATH", help="Where each --style applies (same order; white = applies, 'none' = everywhere); "
                         "the rest is left to the content.")]
StrengthOpt = Annotated[float | None, typer.Option(
    "--strength", help="Style strength: scales the style weight against the configured one (e.g. 0.3, 3).")]
SaveEveryOpt = Annotated[int | None, typer.Option(
    "--save-every", help="Also write the image every N iterations beside the output (photo.iter00050.jpg).")]
PoolOpt = Annotated[str | None, typer.Option("--pooling", help="max | avg")]
StyleScaleOpt = Annotated[float | None, typer.Option("--style-scale", help="Style size relative to content.")]
ScalesOpt = Annotated[str | None, typer.Option("--scales", help="Coarse-to-fine fractions, e.g. 0.25,0.5,1.")]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help="fp32 | bf16 | fp16")]
MaxMemoryOpt = Annotated[str | None, typer.Option(
    "--max-memory", help="Memory budget, e.g. 8GB: larger images are stylized in blended tiles.")]
JitOpt = Annotated[bool | None, typer.Option("--jit/--no-jit", help="XLA-compile the optimisation step.")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="auto | png | jpeg | webp | tiff | png16 | tiff16 (16 bits per channel)")]
KeepResOpt = Annotated[bool | None, typer.Option("--keep-resolution/--no-keep-resolution",
                                                    help="Deliver photos and videos at the source resolution (upscaled from the working size).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def style_masks(masks: list[str] | None) -> list[Path | None] | None:
    return [None if m.lower() == "none" else Path(m) for m in masks] if masks else None


def build_config(config_file: Path | None, preset: str | None, strength: float | None = None,
                 **options: object) -> config_mod.Config:
    """Defaults <- preset <- --config <- CLI options (only those given); --strength scales the style weight."""
    if strength is not None and not (strength > 0 and strength < float("inf")):
        raise ConfigError(f"--strength {strength!r}: expected a positive number such as 0.3 or 3")
    cfg = _build_config(config_file, preset, **options)
    return cfg if strength is None else cfg.replace(**{"loss.style_weight": cfg.loss.style_weight * strength})


def _build_config(config_file: Path | None, preset: str | None, **options: object) -> config_mod.Config:
    mapping = {"size": "image.size", "iterations": "optim.iterations", "optimizer": "optim.optimizer",
               "content_loss_weight": "loss.content_weight", "style_loss_weight": "loss.style_weight",
               "tv_weight": "loss.tv_weight", "init": "optim.init", "preserve_colors": "image.preserve_colors",
               "pooling": "model.pooling", "style_scale": "image.style_scale", "precision": "optim.precision",
               "max_memory": "image.max_memory", "jit": "optim.jit_compile",
               "format": "image.format", "keep_resolution": "image.keep_resolution", "save_every": "optim.save_every"}
    overrides: dict[str, object] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "scales":
            try:
                value = [float(part) for part in str(value).split(",") if part.strip()]
            except ValueError as exc:
                raise ConfigError(f"--scales {options['scales']!r}: expected numbers such as 0.5,1") from exc
            overrides["image.scales"] = value
            continue
        overrides[mapping[name]] = value
    return config_mod.load(config_file, preset, overrides)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False) -> None:
    STATE["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------- commands
@app.command()
def image(photos: Annotated[list[Path], typer.Argument(metavar="PHOTO", help="Photos (or folders of photos) to stylize.")],
          style: StyleOpt, output: OutOpt = Path("output"), style_weight: StyleWeightOpt = None,
          config: ConfigOpt = None, preset: PresetOpt = None, size: SizeOpt = None, iterations: ItersOpt = None,
          optimizer: OptimizerOpt = None, content_loss_weight: ContentWOpt = None,
          style_loss_weight: StyleWOpt = None, tv_weight: TvOpt = None, init: InitOpt = None,
          preserve_colors: ColorsOpt = None, pooling: PoolOpt = None, style_scale: StyleScaleOpt = None,
          scales: ScalesOpt = None, precision: PrecisionOpt = None, format: FormatOpt = None,
          keep_resolution: KeepResOpt = None, overwrite: OverwriteOpt = False, quiet: QuietOpt = False,
          max_memory: MaxMemoryOpt = None, jit: JitOpt = None, style_mask: MaskOpt = None,
          strength: StrengthOpt = None, save_every: SaveEveryOpt = None) -> None:
    """Stylize photos, one output per input (in this process, no Ray); rerun the same command to resume."""
    from pipeline.batch.driver import RunOptions, run

    cfg = build_config(config, preset, size=size, iterations=iterations, optimizer=optimizer,
                       content_loss_weight=content_loss_weight, style_loss_weight=style_loss_weight,
                       tv_weight=tv_weight, init=init, preserve_colors=preserve_colors, pooling=pooling,
                       style_scale=style_scale, scales=scales, precision=precision, format=format,
                       keep_resolution=keep_resolution, max_memory=max_memory, jit=jit, strength=strength,
                       save_every=save_every)
    result = run(RunOptions(inputs=photos, styles=style, out_dir=output, config=cfg, style_weights=style_weight,
                            overwrite=overwrite, quiet=quiet, executor="local", style_masks=style_masks(style_mask),
                            kinds=frozenset({"image"})))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
def demo(output: OutOpt = Path("output/demo"), size: SizeOpt = None, iterations: ItersOpt = None,
         quiet: QuietOpt = False) -> None:
    """Stylize built-in sample photos with a built-in generated style (no files, no network)."""
    from pipeline.batch.demo import run_demo

    run_demo(output, size=size, iterations=iterations, quiet=quiet)


@app.command()
def weights(network: Annotated[str, typer.Option("--network", help="vgg19 | vgg16")] = "vgg19") -> None:
    """Say where the VGG weights come from, verify them, or explain how to get them."""
    from pipeline.core import weights as weights_mod

    if network not in weights_mod.KERAS_FILES:
        fail(f"--network {network!r}: expected vgg19 or vgg16")
    arrays, source = weights_mod.load_arrays(network)
    count = sum(a.size for a in arrays.values())
    typer.echo(f"{network}: {source.path}")
    typer.echo(f"  origin: {source.origin}")
    typer.echo(f"  verified: {len(arrays) // 2} conv layers, {count:,} parameters, all finite"
               + (", checksum ok" if source.kind == "converted-npz" else ", Keras md5 ok"))
    if source.kind == "converted-npz":
        typer.echo("  note: k-means quantised (256 levels per layer); drop Keras' "
                   f"{weights_mod.KERAS_FILES[network].name} into {weights_mod.PRETRAINED_DIR}/ "
                   "to use the full-precision file instead")


@app.command()
def presets() -> None:
    """List the presets, one line each."""
    for name, _path, description in config_mod.list_presets():
        typer.echo(f"{name:24s} {description}")


@app.command()
def video(clip: Annotated[Path, typer.Argument(metavar="CLIP", help="Video to stylize (any container ffmpeg reads, or an animated GIF).")],
          style: StyleOpt, output: OutOpt = Path("output"), style_weight: StyleWeightOpt = None,
          config: ConfigOpt = None, preset: PresetOpt = None, size: SizeOpt = None,
          iterations: Annotated[int | None, typer.Option(
              "--iterations", "-n", help="Iterations for the first frame of each shot.")] = None,
          later_iterations: Annotated[int | None, typer.Option(
              "--later-iterations", help="Iterations for each later (warm-started) frame.")] = None,
          temporal: Annotated[str | None, typer.Option(
              "--temporal", help="off (independent frames) | prev (warm start) | flow (warped start + temporal loss)")
          ] = None,
          temporal_weight: Annotated[float | None, typer.Option(
              "--temporal-weight", help="Weight of the temporal loss (flow mode).")] = None,
          crf: Annotated[int | None, typer.Option("--crf", help="H.264/HEVC quality, 0-51 (lower is better).")] = None,
          codec: Annotated[str | None, typer.Option(
              "--codec", help="h264 (MP4, plays everywhere) | hevc (MP4) | prores (MOV) | ffv1 (MKV, lossless)")] = None,
          save_frames: Annotated[bool, typer.Option(
              "--save-frames", help="Keep the painted frames as PNGs, in OUTPUT/.nst/frames/VIDEO/segNNNN/, "
                                    "instead of removing them once the video is encoded.")] = False,
          optimizer: OptimizerOpt = None, content_loss_weight: ContentWOpt = None,
          style_loss_weight: StyleWOpt = None, tv_weight: TvOpt = None, preserve_colors: ColorsOpt = None,
          pooling: PoolOpt = None, style_scale: StyleScaleOpt = None, scales: ScalesOpt = None,
          precision: PrecisionOpt = None, overwrite: OverwriteOpt = False, quiet: QuietOpt = False,
          style_mask: MaskOpt = None, strength: StrengthOpt = None, keep_resolution: KeepResOpt = None,
          start: Annotated[str | None, typer.Option(
              "--start", help="Stylize only from this time on (seconds, or m:ss / h:mm:ss): a preview.")] = None,
          duration: Annotated[str | None, typer.Option(
              "--duration", help="Stylize only this long a part (seconds, or m:ss), from --start.")] = None,
          ) -> None:
    """Stylize a video: same frame count, exact frame rate, source audio, H.264 MP4 (in this process;
    rerun the same command to resume). With --start/--duration, only that part, written as
    CLIP.<start>s-<end>s.mp4 beside a full run's CLIP.mp4."""
    from pipeline.batch.driver import RunOptions, run

    cfg = build_config(config, preset, size=size, optimizer=optimizer, content_loss_weight=content_loss_weight,
                       style_loss_weight=style_loss_weight, tv_weight=tv_weight, preserve_colors=preserve_colors,
                       pooling=pooling, style_scale=style_scale, scales=scales, precision=precision,
                       strength=strength, keep_resolution=keep_resolution)
    video_overrides = {"video.first_frame_iterations": iterations, "video.later_frame_iterations": later_iterations,
                       "video.temporal": temporal, "video.temporal_weight": temporal_weight, "video.crf": crf,
                       "video.codec": codec,
                       "video.save_frames": save_frames or None}
    video_overrides = {k: v for k, v in video_overrides.items() if v is not None}
    if video_overrides:
        cfg = cfg.replace(**video_overrides)
    if crf is not None and cfg.video.codec in ("prores", "ffv1"):
        typer.echo(f"warning: --crf applies to h264 and hevc; {cfg.video.codec} "
                   f"{'is lossless' if cfg.video.codec == 'ffv1' else 'is written as 4:2:2 HQ'}, whatever --crf says",
                   err=True)
    if clip.is_dir():
        raise InputError(clip, "a folder: nst video paints one video (nst run paints folders)")
    from pipeline.batch.discover import ANIMATION_EXTENSIONS, OTHER_COMMAND, animated
    from pipeline.media.images import IMAGE_EXTENSIONS

    suffix = clip.suffix.lower()
    if suffix in IMAGE_EXTENSIONS and not (suffix in ANIMATION_EXTENSIONS and animated(clip)):
        raise InputError(clip, OTHER_COMMAND["image"])  # before a preview's excerpt is cut from it
    excerpt = None
    if start is not None or duration is not None:
        excerpt = video_excerpt(clip, output, seconds(start or "0", "--start"),
                                None if duration is None else seconds(duration, "--duration"))
    result = run(RunOptions(inputs=[excerpt or clip], styles=style, out_dir=output, config=cfg,
                            style_weights=style_weight, overwrite=overwrite, quiet=quiet, executor="local",
                            style_masks=style_masks(style_mask), kinds=frozenset({"video"})))
    if excerpt is not None and result.exit_code in (0, 3):  # done: the excerpt has served
        shutil.rmtree(excerpt.parent, ignore_errors=True)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def seconds(text: str, option: str) -> float:
    """"90", "1:30" or "0:01:30.5" as seconds."""
    parts = text.strip().split(":")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    # minutes and seconds after the first part stay below 60; nothing negative, NaN or infinite
    if (not 1 <= len(values) <= 3 or text.strip().startswith("-")
            or any(not 0 <= v < (60 if i else float("inf")) for i, v in enumerate(values))):
        raise ConfigError(f"{option} {text!r}: expected seconds (90, 1.5) or a time (1:30, 0:01:30.5)")
    value = 0.0
    for v in values:
        value = value * 60 + v
    return value


def _seconds_label(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"  # to the millisecond: 12345.25 stays itself


def video_excerpt(clip: Path, output: Path, start: float, duration: float | None) -> Path:
    """The part of the clip to stylize, cut once into the output's state folder (kept there until
    the run is done, so an interrupted preview resumes on the same frames). Its folder is named
    after the clip's path, size and time and the range, so another clip or an edited one is cut
    afresh; its file after the clip and the range, which names the output."""
    import hashlib

    from pipeline.atomic import fit_name
    from pipeline.batch.ledger import state_dir
    from pipeline.media.frames import cut_excerpt, listed_seconds

    if duration is not None and duration <= 0:
        raise ConfigError(f"--duration {duration:g}: expected a length above 0 seconds")
    try:
        stat = clip.stat()
    except OSError as exc:
        raise NstError(f"{clip}: {exc.strerror or exc}") from exc
    length = listed_seconds(clip)
    running_on = duration is None or (length is not None and start + duration >= length)
    label = _seconds_label(start) + "-" + ("end" if running_on else _seconds_label(start + duration))
    key = f"{clip.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{start!r}|{duration!r}"
    folder = state_dir(output) / "excerpts" / hashlib.sha256(key.encode()).hexdigest()[:16]
    excerpt = folder / fit_name(f"{clip.stem}.{label}.mkv")
    return excerpt if excerpt.is_file() else cut_excerpt(clip, excerpt, start, duration)


@app.command()
def grid(source: Annotated[Path, typer.Argument(help="A photo, or a video (its first frame is used).")],
         style: StyleOpt, output: OutOpt = Path("output/grid"),
         strengths: Annotated[str, typer.Option("--strength", help="Style strengths to compare, e.g. 0.3,1,3.")]
         = "0.3,1,3",
         size: Annotated[int, typer.Option("--size", min=32, help="Cell size: longest side in pixels.")] = 256,
         iterations: Annotated[int, typer.Option("--iterations", "-n", min=1, help="Iterations per cell.")] = 50,
         config: ConfigOpt = None, preset: PresetOpt = None, preserve_colors: ColorsOpt = None,
         quiet: QuietOpt = False) -> None:
    """A style x strength contact sheet (PNG and HTML) to choose before a long run; one model load."""
    try:
        levels = [float(part) for part in strengths.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"--strength {strengths!r}: expected numbers such as 0.3,1,3") from exc
    if not levels or any(not (0 < v < float("inf")) for v in levels):
        raise ConfigError(f"--strength {strengths!r}: expected positive numbers such as 0.3,1,3")
    cfg = build_config(config, preset, size=size, preserve_colors=preserve_colors)
    from pipeline.batch.grid import grid_files

    png, page = grid_files(source, style, levels, cfg, output, size=size, iterations=iterations, quiet=quiet)
    typer.echo(f"wrote {png} and {page}")


@eval_app.command("temporal")
def eval_temporal(source: Annotated[Path, typer.Argument(help="The source video.")],
                  stylized: Annotated[Path, typer.Argument(help="Its stylized version.")],
                  size: Annotated[int, typer.Option("--size", help="Working size (longest side) for both.")] = 384,
                  frames: Annotated[int | None, typer.Option("--frames", help="Only the first N frames.")] = None,
                  ) -> None:
    """Warping error (Lai et al. 2018) of the stylized video and of the source itself; lower is steadier."""
    from pipeline.batch.evaluate import video_warping_errors

    cfg = config_mod.load()
    result = video_warping_errors(source, stylized, size=size, max_frames=frames,
                                  cut_threshold=cfg.video.cut_threshold, min_shot=1)
    typer.echo(f"frames {result['frames']}, pairs {result['pairs']} (at {size} px)")
    typer.echo(f"warping error  stylized {result['stylized']:.6f}  source {result['source']:.6f}  "
               f"ratio {result['stylized'] / max(result['source'], 1e-12):.2f}")


AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="Join a Ray cluster: auto or HOST:PORT (default: RAY_ADDRESS, else a local runtime).")]


@app.command("run")
def run_command(inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Photos, videos or folders (walked recursively).")],
                style: StyleOpt, output: OutOpt = Path("output"), style_weight: StyleWeightOpt = None,
                config: ConfigOpt = None, preset: PresetOpt = None, size: SizeOpt = None,
                iterations: ItersOpt = None, optimizer: OptimizerOpt = None,
                content_loss_weight: ContentWOpt = None, style_loss_weight: StyleWOpt = None,
                tv_weight: TvOpt = None, init: InitOpt = None, preserve_colors: ColorsOpt = None,
                pooling: PoolOpt = None, style_scale: StyleScaleOpt = None, scales: ScalesOpt = None,
                precision: PrecisionOpt = None, format: FormatOpt = None, keep_resolution: KeepResOpt = None,
                address: AddressOpt = None,
                workers: Annotated[int | None, typer.Option(
                    "--workers", min=1, help="Number of Ray workers (default: one per GPU, or fitted to the cores).")
                ] = None,
                gpus_per_worker: Annotated[float | None, typer.Option(
                    "--gpus-per-worker", min=0.0, help="GPUs per worker (0 = CPU workers even if GPUs exist).")
                ] = None,
                dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be done, skipped and "
                                                                        "refused; compute nothing.")] = False,
                overwrite: Annotated[bool, typer.Option("--overwrite", "--force",
                                                        help="Redo everything, also finished items.")] = False,
                quiet: QuietOpt = False, style_mask: MaskOpt = None, strength: StrengthOpt = None,
                save_every: SaveEveryOpt = None) -> None:
    """Stylize a batch of photos and videos on Ray workers; rerun the same command to resume."""
    from pipeline.batch.driver import RunOptions, run

    cfg = build_config(config, preset, size=size, iterations=iterations, optimizer=optimizer,
                       content_loss_weight=content_loss_weight, style_loss_weight=style_loss_weight,
                       tv_weight=tv_weight, init=init, preserve_colors=preserve_colors, pooling=pooling,
                       style_scale=style_scale, scales=scales, precision=precision, format=format,
                       keep_resolution=keep_resolution, strength=strength, save_every=save_every)
    result = run(RunOptions(inputs=inputs, styles=style, out_dir=output, config=cfg, style_weights=style_weight,
                            address=address, workers=workers, gpus_per_worker=gpus_per_worker, dry_run=dry_run,
                            overwrite=overwrite, quiet=quiet, style_masks=style_masks(style_mask)))
    if not dry_run and result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
def status(output: Annotated[Path, typer.Argument(help="The output folder of a run.")] = Path("output")) -> None:
    """Done, running, failed (with reasons), remaining and an ETA, from the run's ledger."""
    from pipeline.batch.status import status_lines

    lines, failed = status_lines(output)
    for line in lines:
        typer.echo(line)
    if failed:
        raise typer.Exit(1)


@app.command()
def info(address: AddressOpt = None) -> None:
    """The devices Ray and TensorFlow see on each node (starts a tiny local runtime if none is given)."""
    from pipeline.batch.status import info_lines

    for line in info_lines(address):
        typer.echo(line)


def run_cli() -> None:
    """Console-script entry: NstError becomes one line and its exit code (traceback with --debug)."""
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # Typer turns Ctrl-C into a silent exit 130
            typer.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except Exception as exc:
        if isinstance(exc, NstError):
            ClickException(exc.message).show()
            sys.exit(exc.exit_code)  # 2 for a bad option or setting, as for a usage error
        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if STATE["debug"]:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run_cli()
