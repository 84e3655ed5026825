"""A style x strength contact sheet: one small stylization per pair, to choose before a long run.

Every cell runs through the caller's one Stylizer (one model load, one trace for the whole grid):
a strength multiplies loss.style_weight, and the Stylizer passes that weight into its compiled
step as a tensor, so a new strength costs no recompilation. Cells are small (``size`` px on the
long side) and single-scale with a short budget, so a 2 x 3 sheet takes a fraction of one full
image; the Gram targets of each style are computed once and shared by its strengths.

For a video the caller passes one frame (its first) as ``content``.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.atomic import write_text_atomic
from pipeline.config import Config
from pipeline.core.arrays import fit_longest, resize
from pipeline.core.types import Iterate

if TYPE_CHECKING:  # the Stylizer imports TensorFlow; this module is imported without it
    from pipeline.core.stylizer import Stylizer

log = logging.getLogger(__name__)

SHEET_SIZE = 256  # px, long side of a cell
SHEET_ITERATIONS = 50  # evaluations per cell: enough to show the texture and the balance, not to finish
LABEL_HEIGHT = 22  # px of caption strip under each tile
GAP = 4  # px between tiles
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


@dataclass(frozen=True)
class Cell:
    """One stylization of the sheet."""

    style: str
    strength: float  # multiple of the config's loss.style_weight
    style_weight: float  # the weight it ran with
    image: np.ndarray = field(repr=False)  # float32 (h, w, 3) in [0, 255]
    evaluations: int
    seconds: float

    @property
    def label(self) -> str:
        return f"{self.style}  x{self.strength:g}"


@dataclass(frozen=True)
class ContactSheet:
    sheet: np.ndarray = field(repr=False)  # uint8 (H, W, 3): rows of styles, columns of strengths
    cells: list[Cell]  # row-major: style by style, each through all strengths
    styles: list[str]
    strengths: list[float]
    seconds: float

    def cell(self, style: str, strength: float) -> Cell:
        return next(c for c in self.cells if c.style == style and c.strength == strength)


def contact_sheet(content: np.ndarray, styles: Sequence[tuple[str, np.ndarray]], strengths: Sequence[float],
                  stylizer: Stylizer, size: int = SHEET_SIZE, iterations: int = SHEET_ITERATIONS,
                  multiscale: bool = False, callback: Callable[[Iterate], None] | None = None,
                  on_cell: Callable[[Cell], None] | None = None) -> ContactSheet:
    """Renders every (style, strength) pair of ``content`` at ``size`` px with one Stylizer.

    ``styles`` are (name, RGB array in [0, 255]); ``strengths`` multiply loss.style_weight (1 is
    the config's balance). Everything else (layers, colour preservation, optimiser) is the
    Stylizer's config. ``on_cell`` sees each cell as it finishes (a progress line, an early look).
    """
    if not styles or not strengths:
        raise ValueError("a contact sheet needs at least one style and one strength")
    if any(s < 0 for s in strengths):
        raise ValueError(f"strengths must be non-negative, got {list(strengths)}")
    start = time.perf_counter()
    small = resize(np.asarray(content, np.float32), fit_longest(content, size))
    base = stylizer.config.loss.style_weight
    cells: list[Cell] = []
    for name, style in styles:
        for strength in strengths:
            weight = base * strength
            result = stylizer.stylize(small, [style], [1.0], init="content", iterations=iterations,
                                      multiscale=multiscale, callback=callback, style_weight=weight)
            cell = Cell(name, float(strength), weight, result.image, result.evaluations, result.seconds)
            log.debug("%s: %d evaluations in %.1f s", cell.label, cell.evaluations, cell.seconds)
            cells.append(cell)
            if on_cell is not None:
                on_cell(cell)
    names = [name for name, _ in styles]
    sheet = render_sheet(cells, [(name, style) for name, style in styles], list(strengths), small.shape[:2])
    return ContactSheet(sheet, cells, names, [float(s) for s in strengths], time.perf_counter() - start)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_sheet(cells: Sequence[Cell], styles: Sequence[tuple[str, np.ndarray]], strengths: Sequence[float],
                 tile_hw: tuple[int, int]) -> np.ndarray:
    """The grid as one uint8 image: a row per style (its picture first), a column per strength,
    each tile captioned with its style name and strength."""
    th, tw = tile_hw
    columns, rows = len(strengths) + 1, len(styles)
    width = columns * tw + (columns + 1) * GAP
    height = rows * (th + LABEL_HEIGHT) + (rows + 1) * GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, LABEL_HEIGHT - 8))
    by_key = {(c.style, c.strength): c for c in cells}
    for r, (name, style) in enumerate(styles):
        y = GAP + r * (th + LABEL_HEIGHT + GAP)
        tiles: list[tuple[np.ndarray, str]] = [(_fit_into(style, tile_hw), f"{name} (style)")]
        tiles += [(by_key[(name, float(s))].image, by_key[(name, float(s))].label) for s in strengths]
        for c, (image, label) in enumerate(tiles):
            x = GAP + c * (tw + GAP)
            tile = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB")
            canvas.paste(tile, (x + (tw - tile.width) // 2, y + (th - tile.height) // 2))
            draw.text((x + 2, y + th + 3), _shorten(draw, label, font, tw - 4), fill=INK, font=font)
    return np.asarray(canvas)


def _fit_into(image: np.ndarray, tile_hw: tuple[int, int]) -> np.ndarray:
    """The style picture scaled to fit the tile whole (its aspect kept), for the row's first column."""
    h, w = image.shape[:2]
    factor = min(tile_hw[0] / h, tile_hw[1] / w)
    return resize(np.asarray(image, np.float32), (max(1, round(h * factor)), max(1, round(w * factor))))


def _shorten(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
             width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _data_uri(image: np.ndarray, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB").save(buffer, format=fmt, quality=88)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sheet_html(sheet: ContactSheet, title: str = "Style x strength") -> str:
    """A self-contained page (cells embedded as JPEG data URIs): one row per style, one column per strength."""
    head = "".join(f"<th>x{s:g}</th>" for s in sheet.strengths)
    rows = []
    for name in sheet.styles:
        cells = []
        for strength in sheet.strengths:
            cell = sheet.cell(name, strength)
            label = html.escape(cell.label)
            caption = f"{label} &middot; weight {cell.style_weight:g} &middot; {cell.seconds:.1f} s"
            cells.append(f'<td><figure><img src="{_data_uri(cell.image)}" alt="{label}">'
                         f"<figcaption>{caption}</figcaption></figure></td>")
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "th,td{padding:4px;vertical-align:top}figure{margin:0}figcaption{font-size:12px}"
            "</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Strength multiplies the style weight; "
            f"{len(sheet.cells)} cells in {sheet.seconds:.1f} s.</p>"
            f"<table><tr><th>style</th>{head}</tr>{''.join(rows)}</table></body></html>\n")


def write_sheet_html(path: Path, sheet: ContactSheet, title: str = "Style x strength") -> Path:
    """Writes sheet_html atomically (a reader never sees half a page)."""
    write_text_atomic(Path(path), sheet_html(sheet, title))
    return Path(path)


def grid_files(source: Path, styles: Sequence[Path], strengths: Sequence[float], config: Config, out_dir: Path,
               size: int = SHEET_SIZE, iterations: int = SHEET_ITERATIONS, quiet: bool = False) -> tuple[Path, Path]:
    """`nst grid`: the content (a photo, or a video's first frame), one Stylizer, sheet.png and sheet.html."""
    from pipeline.core.stylizer import Stylizer
    from pipeline.errors import InputError
    from pipeline.media.frames import VIDEO_EXTENSIONS, probe, read_frames
    from pipeline.media.images import load_image, save_image

    source = Path(source)
    if not source.is_file():
        raise InputError(source, "file not found")
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        probe(source)
        first = next(iter(read_frames(source, size, picture_only=config.video.bars == "keep")), None)
        if first is None:
            raise InputError(source, "no frame could be decoded")
        content = np.asarray(first, np.float32)
    else:
        content = load_image(source, config.image.max_pixels, max_side=size).rgb.astype(np.float32)
    named = [(Path(p).stem, load_image(Path(p), config.image.max_pixels).rgb.astype(np.float32)) for p in styles]
    stylizer = Stylizer(config)
    sheet = contact_sheet(content, named, strengths, stylizer, size=size, iterations=iterations,
                          on_cell=None if quiet else (lambda cell: print(f"  {cell.label}", flush=True)))
    out_dir = Path(out_dir)
    png = save_image(sheet.sheet.astype(np.float32), out_dir / f"{source.stem}.sheet.png", "png")
    page = write_sheet_html(out_dir / f"{source.stem}.sheet.html", sheet, title=f"{source.name}: style x strength")
    return Path(png), page
