"""The controls users bring from other tools, end to end through the CLI on tiny images."""
from __future__ import annotations

import json

import cv2
import numpy as np
from conftest import write_png
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
FAST = ["--size", "48", "--scales", "1", "-q"]


def test_save_every_writes_sorted_intermediates_and_the_last_is_the_output(tmp_path, photo, painting):
    src, style, out = write_png(tmp_path / "in" / "p.png", photo), write_png(tmp_path / "s.png", painting), tmp_path / "o"
    result = runner.invoke(app, ["image", str(src), "-s", str(style), "-o", str(out), "-n", "12", "--save-every", "5",
                                 *FAST])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.glob("p.iter*.png"))
    assert names == ["p.iter00005.png", "p.iter00010.png", "p.iter00012.png"], names
    last = np.asarray(Image.open(out / names[-1]))
    assert np.array_equal(last, np.asarray(Image.open(out / "p.png")))
    assert not np.array_equal(np.asarray(Image.open(out / names[0])), last)


def test_png16_output_keeps_more_than_256_levels(tmp_path, painting):
    ramp = np.repeat(np.linspace(0, 255, 64, dtype=np.float32)[None, :, None], 48, 0).repeat(3, 2)
    src, style, out = write_png(tmp_path / "in" / "r.png", ramp), write_png(tmp_path / "s.png", painting), tmp_path / "o"
    result = runner.invoke(app, ["image", str(src), "-s", str(style), "-o", str(out), "-n", "3", "--format", "png16",
                                 "--size", "300", "--scales", "1", "-q"])
    assert result.exit_code == 0, result.output
    data = cv2.imread(str(out / "r.png"), cv2.IMREAD_UNCHANGED)
    assert data.dtype == np.uint16 and len(np.unique(data)) > 256


def test_strength_and_masks_change_the_result_and_the_run_state(tmp_path, photo, painting):
    src, style, out = write_png(tmp_path / "in" / "p.png", photo), write_png(tmp_path / "s.png", painting), tmp_path / "o"
    mask = tmp_path / "left.png"
    Image.fromarray(np.tile(np.r_[np.full(32, 255), np.zeros(32)].astype(np.uint8), (48, 1))).save(mask)
    base = ["image", str(src), "-s", str(style), "-o", str(out), "-n", "30", *FAST]
    photo_at = np.asarray(Image.open(src).resize((48, 32), Image.LANCZOS), np.float32)  # at the working size
    assert runner.invoke(app, base).exit_code == 0
    plain = np.abs(np.asarray(Image.open(out / "p.png"), np.float32) - photo_at).mean()
    assert runner.invoke(app, [*base, "--strength", "0.01"]).exit_code == 0  # other settings: redone
    weak = np.abs(np.asarray(Image.open(out / "p.png"), np.float32) - photo_at).mean()
    assert weak < 0.8 * plain, (plain, weak)  # a weaker style stays nearer the photo
    assert runner.invoke(app, [*base, "--style-mask", str(mask)]).exit_code == 0
    masked = np.asarray(Image.open(out / "p.png"), np.float32)
    # The masked-off right half stays nearer the photo than the styled left half.
    left, right = (np.abs(masked - photo_at)[:, s].mean() for s in (slice(0, 28), slice(36, 64)))
    assert right < left, (left, right)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["style_masks"] == [str(mask)]
    bad = runner.invoke(app, [*base, "--style-mask", str(tmp_path / "nope.png")])
    assert bad.exit_code == 1 and "nope.png" in bad.output


def test_grid_renders_one_cell_per_style_and_strength(tmp_path, photo, painting):
    src = write_png(tmp_path / "p.png", photo)
    a, b = write_png(tmp_path / "a.png", painting), write_png(tmp_path / "b.png", painting[:, ::-1, ::-1])
    out = tmp_path / "g"
    result = runner.invoke(app, ["grid", str(src), "-s", str(a), "-s", str(b), "--strength", "0.3,3",
                                 "--size", "48", "-n", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "p.sheet.png").is_file() and "<img" in (out / "p.sheet.html").read_text()
    assert "a  x0.3" in result.output and "b  x3" in result.output  # each cell named as it is done
