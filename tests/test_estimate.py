"""nst run --dry-run: the work and an estimated duration, from a calibration or from the ledger."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_png

from pipeline import config as config_mod
from pipeline.batch.driver import RunOptions, run


def tiny_config():
    return config_mod.load(overrides={"image.size": 48, "optim.iterations": 1, "image.scales": [1.0],
                                      "optim.coarse_iterations": 0})


def test_dry_run_estimates_by_calibration_then_from_the_ledger(tmp_path: Path, photo, painting, capsys) -> None:
    photos = tmp_path / "photos"
    write_png(photos / "a.png", photo)
    write_png(photos / "b.png", np.roll(photo, 9, axis=1))
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"

    first = run(RunOptions([photos], [style], out, tiny_config(), dry_run=True, executor="local"))
    printed = capsys.readouterr().err
    assert first.estimate is not None and first.estimate.photos == 2 and first.estimate.seconds > 0
    assert "estimate: about " in printed and "calibration" in printed, printed
    assert "2 photo(s)" in printed
    assert not out.exists()  # a dry run writes nothing

    assert run(RunOptions([photos], [style], out, tiny_config(), quiet=True, executor="local")).exit_code == 0
    write_png(photos / "c.png", np.roll(photo, 19, axis=0))
    capsys.readouterr()
    again = run(RunOptions([photos], [style], out, tiny_config(), dry_run=True, executor="local"))
    printed = capsys.readouterr().err
    assert again.estimate is not None and again.estimate.photos == 1
    assert "estimate: about " in printed and "from the ledger" in printed, printed


def test_dry_run_says_how_much_disk_a_videos_painted_frames_need(tmp_path: Path, painting, capsys) -> None:
    from test_video import moving_clip

    clip = moving_clip(tmp_path / "clip.mkv", 50, "96x64", "25", audio=False, codec=["-c:v", "ffv1"])
    style = write_png(tmp_path / "style.png", painting)
    result = run(RunOptions([clip], [style], tmp_path / "out", tiny_config(), dry_run=True, executor="local"))
    printed = capsys.readouterr().err
    assert result.estimate is not None and result.estimate.frames == 50
    # 50 frames at 48x32, about 2.6 bytes a pixel as PNG, and the free space where the output will be
    assert "disk: up to 0.2 MB of painted frames until each video is encoded" in printed, printed
    assert f"free under {tmp_path}" in printed and not (tmp_path / "out").exists()
