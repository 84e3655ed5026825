"""Identical photos under the same settings are stylized once; every destination gets its output."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from conftest import write_png

from pipeline import config as config_mod
from pipeline.batch.driver import RunOptions, run


def tiny_config():
    return config_mod.load(overrides={"image.size": 48, "optim.iterations": 1, "image.scales": [1.0],
                                      "optim.coarse_iterations": 0})


def run_counting(inputs: list[Path], style: Path, out: Path) -> tuple[object, list[str]]:
    submitted: list[str] = []
    result = run(RunOptions(inputs, [style], out, tiny_config(), quiet=True, executor="local",
                            on_event=lambda kind, data: submitted.append(data["item"]) if kind == "submit" else None))
    return result, submitted


def test_identical_photos_are_stylized_once_and_a_later_copy_is_only_copied(tmp_path: Path, photo, painting) -> None:
    root = tmp_path / "photos"
    write_png(root / "a" / "same.png", photo)
    (root / "b").mkdir()
    shutil.copyfile(root / "a" / "same.png", root / "b" / "copy.png")
    write_png(root / "other.png", np.roll(photo, 9, axis=1))
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"

    result, submitted = run_counting([root], style, out)
    assert result.exit_code == 0
    assert len(submitted) == 2, submitted
    outputs = {r["id"]: Path(r["output"]) for r in result.records}
    assert len(outputs) == 3 and all(p.is_file() for p in outputs.values())
    first, second = outputs["photos/a/same.png"], outputs["photos/b/copy.png"]
    assert first.read_bytes() == second.read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    marked = {r["id"]: r["duplicate_of"] for r in summary["records"]}
    computed = "photos/a/same.png" if "photos/a/same.png" in submitted else "photos/b/copy.png"
    copied = ({"photos/a/same.png", "photos/b/copy.png"} - {computed}).pop()
    assert marked == {computed: None, copied: computed, "photos/other.png": None}
    assert summary["duplicates"] == 1
    assert "duplicate of" in (out / "report.html").read_text()

    (root / "c").mkdir()
    shutil.copyfile(root / "a" / "same.png", root / "c" / "third.png")
    again, submitted = run_counting([root], style, out)
    assert submitted == [] and again.exit_code == 0
    third = next(Path(r["output"]) for r in again.records if r["id"] == "photos/c/third.png")
    assert third.read_bytes() == first.read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    marked = {r["id"]: (r["state"], r["duplicate_of"]) for r in summary["records"]}
    assert marked["photos/c/third.png"][0] == "done" and marked["photos/c/third.png"][1] in {computed, copied}
    assert marked[copied] == ("skipped", computed)


def test_the_same_bytes_under_another_format_name_get_a_file_of_that_format(tmp_path: Path, photo, painting) -> None:
    """a.png and b.webp with the same bytes: b.webp's output was a copy of a.png's, a PNG named .webp."""
    from PIL import Image

    root = tmp_path / "photos"
    write_png(root / "a.png", photo)
    shutil.copyfile(root / "a.png", root / "b.webp")
    shutil.copyfile(root / "a.png", root / "c.png")
    style = write_png(tmp_path / "style.png", painting)
    result, submitted = run_counting([root], style, tmp_path / "out")
    assert result.exit_code == 0 and sorted(submitted) == ["photos/a.png", "photos/b.webp"], submitted
    outputs = {r["id"]: Path(r["output"]) for r in result.records}
    assert Image.open(outputs["photos/b.webp"]).format == "WEBP"
    assert Image.open(outputs["photos/c.png"]).format == "PNG"
    assert outputs["photos/c.png"].read_bytes() == outputs["photos/a.png"].read_bytes()
