"""`nst image`, `nst video` and `nst run` name outputs the same way: one planner, one driver."""
from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from conftest import write_png

NST = Path(sys.executable).parent / "nst"
FAST = ["--size", "48", "--scales", "1", "--iterations", "2", "--quiet"]


def outputs(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and ".nst" not in p.parts and p.name not in ("summary.json", "report.html"))


def test_the_three_commands_write_the_same_names(tmp_path, photo, painting):
    from pipeline.media.frames import encode_video

    photo_path = write_png(tmp_path / "in" / "photo.jpeg.png", photo)  # a name that tempts renaming
    clip = encode_video([np.roll(photo, 2 * t, axis=1)[:48] for t in range(4)], tmp_path / "in" / "clip.mov",
                        Fraction(25), None, codec="h264")
    style = write_png(tmp_path / "style.png", painting)
    env = {**os.environ, "RAY_ADDRESS": ""}

    def nst(*args: object) -> None:
        done = subprocess.run([str(NST), *map(str, args)], env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    nst("image", photo_path, "--style", style, "-o", tmp_path / "image", *FAST)
    nst("video", clip, "--style", style, "-o", tmp_path / "video", "--later-iterations", "1", *FAST)
    nst("run", photo_path, clip, "--style", style, "-o", tmp_path / "run", "--workers", "1", *FAST)
    assert outputs(tmp_path / "image") == ["photo.jpeg.png"]
    assert outputs(tmp_path / "video") == ["clip.mp4"]
    assert outputs(tmp_path / "run") == ["clip.mp4", "photo.jpeg.png"]
