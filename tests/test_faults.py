"""Faults of long runs: an output that cannot be written (a full disk, a quota) fails its item with
a one-line reason naming the path, leaves no partial file, keeps the ledger consistent, and the
rerun redoes only what was lost."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 400_000  # bytes per file: the panorama's output and the ledger fit, the large photo's TIFF does not


def limited(size: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return apply


def nst(*args: object, limit: bool | int = False) -> subprocess.CompletedProcess:
    """nst in a child process; ``limit``: True for LIMIT bytes per file, or a byte count."""
    size = LIMIT if limit is True else limit
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, check=False, preexec_fn=limited(size) if size else None, timeout=600)


def noisy_clip(path: Path, size: str, frames: int) -> Path:
    """A clip of moving test patterns under strong noise: frames that compress badly, so of known bulk."""
    from pipeline.media.frames import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=10,noise=alls=60:allf=t", "-frames:v", str(frames), "-pix_fmt",
                    "yuv420p", str(path)], check=True)
    return path


def test_an_output_that_cannot_be_written_fails_alone_and_the_rerun_redoes_only_it(tmp_path, painting):
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    photos = tmp_path / "photos"
    # Small inputs; uncompressed TIFF outputs of known size at 640 px: 640x64x3 fits, 640x480x3 does not.
    small = write_png(photos / "small.png", np.repeat(np.repeat(ramp[None, :, None], 64, 0), 3, 2))
    large = write_png(photos / "large.png", np.repeat(np.repeat(ramp[None, :, None], 480, 0), 3, 2))
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    common = ("--style", style, "-o", out, "--iterations", 1, "--scales", "1", "--size", 640, "--format", "tiff")
    first = nst("image", small, large, *common, limit=True)
    assert first.returncode == 1, first.stdout + first.stderr
    lines = [line for line in (first.stdout + first.stderr).splitlines() if str(out / "large.tif") in line]
    assert lines and "cannot write" in lines[0] and "too large" in lines[0].lower(), first.stdout + first.stderr
    assert (out / "small.tif").is_file() and not (out / "large.tif").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".large")]  # no partial file left
    summary = json.loads((out / "summary.json").read_text())
    states = {Path(r["source"]).name: r["state"] for r in summary["records"]}
    assert states == {"small.png": "done", "large.png": "failed"}
    small_mtime = (out / "small.tif").stat().st_mtime_ns
    second = nst("image", small, large, *common)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (out / "large.tif").stat().st_size > LIMIT
    assert (out / "small.tif").stat().st_mtime_ns == small_mtime  # not redone
    assert "1 done, 1 skipped" in second.stdout + second.stderr


def test_a_video_that_cannot_be_written_fails_alone_and_the_rerun_encodes_the_kept_frames(tmp_path, painting):
    """The delivered file (lossless, so larger than any frame or the ledger) passes the size limit:
    the item fails naming the file and the reason, nothing is left under its name, and the rerun
    encodes the frames kept in the state folder instead of stylizing them again."""
    from pipeline.media.frames import read_frames

    clip = noisy_clip(tmp_path / "clip.mp4", "160x96", 16)
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    common = ("--style", style, "-o", out, "--size", 160, "--iterations", 2, "--later-iterations", 1, "--scales", "1",
              "--codec", "ffv1", "-q")
    first = nst("video", clip, *common, limit=True)
    assert first.returncode == 1, first.stdout + first.stderr
    lines = [line for line in (first.stdout + first.stderr).splitlines() if str(out / "clip.mkv") in line]
    assert len(lines) == 1 and "size limit" in lines[0], first.stdout + first.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(("clip", ".clip"))]  # no partial file
    kept = sorted((out / ".nst" / "frames").rglob("*.png"))
    assert len(kept) == 16
    # A kept frame painted over: if the rerun uses the kept frames, the video shows it.
    write_png(kept[5], np.full((96, 160, 3), 200.0, np.float32))
    second = nst("video", clip, *common)
    assert second.returncode == 0, second.stdout + second.stderr
    frames = list(read_frames(out / "clip.mkv", 160))
    assert len(frames) == 16
    assert np.abs(frames[5] - 200.0).max() < 1.0 and np.abs(frames[4] - 200.0).mean() > 10.0


def test_frames_that_cannot_be_kept_fail_the_video_naming_their_folder_and_the_rerun_finishes(tmp_path, painting):
    """Frames larger than the file size limit (the state folder is on the same full disk): the video
    fails with one line naming where its frames go, no temporary file is left, and the rerun without
    the limit delivers every frame."""
    from pipeline.media.frames import read_frames

    clip = noisy_clip(tmp_path / "clip.mp4", "320x192", 6)
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    common = ("--style", style, "-o", out, "--size", 320, "--iterations", 2, "--later-iterations", 1, "--scales", "1",
              "-q")
    first = nst("video", clip, *common, limit=100_000)  # a noisy 320x192 frame is about 150 KB as PNG
    assert first.returncode == 1, first.stdout + first.stderr
    frames_folder = out / ".nst" / "frames" / "clip.mp4"
    lines = [line for line in (first.stdout + first.stderr).splitlines() if str(frames_folder) in line]
    assert len(lines) == 1 and "too large" in lines[0].lower() and "Traceback" not in first.stderr, first.stderr
    assert not [p for p in out.rglob("*") if p.is_file() and p.name.startswith(".") and p.suffix != ".lock"]
    assert not (out / "clip.mp4").exists()
    second = nst("video", clip, *common)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(list(read_frames(out / "clip.mp4", 320))) == 6


def _children_running(name: str) -> list[int]:
    """Pids of this process's children whose command line holds ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and name.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("seek", [False, True])
def test_a_decoder_killed_from_outside_is_no_fault_of_the_file_and_is_tried_again(tmp_path, seek):
    """ffmpeg killed mid-video (the out-of-memory killer, a stray signal) ended the frames early,
    and that was reported as frames of the file that do not decode."""
    from test_video import moving_clip

    from pipeline.batch.protocol import Task, begin
    from pipeline.errors import TransientError
    from pipeline.media.frames import DecoderStopped, frame_times, read_frames

    clip = moving_clip(tmp_path / "clip.mp4", 300, "96x64", "25", audio=False,
                       codec=["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25"])
    times = frame_times(clip) if seek else None
    frames = read_frames(clip, 96, start=150 if seek else 0, times=times)
    next(frames)
    (decoder,) = _children_running("rawvideo")
    os.kill(decoder, signal.SIGKILL)
    with pytest.raises(DecoderStopped, match=r"clip.mp4: ffmpeg decoding it was stopped by SIGKILL after \d+ frames"):
        for _ in frames:
            pass
    # the executors' first step tries such a task again rather than failing the video
    failed, retried = [], []

    def request():
        raise DecoderStopped(clip, signal.SIGKILL, 3)

    assert begin(Task(("chunk",), request, "clip"), lambda t, r: failed.append(r),
                 lambda t, r: retried.append(r)) is None
    assert not failed and "SIGKILL" in retried[0] and issubclass(DecoderStopped, TransientError)


def test_ctrl_c_in_a_terminal_reaches_nst_and_not_its_decoder(tmp_path):
    """The terminal sends SIGINT to its foreground process group: a decoder in nst's group died with
    it and cut the frames short (or ended an encode as a failure of the video) before nst could stop
    cleanly and resumably. Run in a session of its own, so the signal reaches nothing else."""
    from test_video import moving_clip

    clip = moving_clip(tmp_path / "clip.mp4", 200, "96x64", "25", audio=False,
                       codec=["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    script = (
        "import os, signal, sys\n"
        "from pipeline.media.frames import read_frames\n"
        "signal.signal(signal.SIGINT, lambda *_: None)  # nst's own handling, here: carry on\n"
        "import time\n"
        "frames = read_frames(sys.argv[1], 96)\n"
        "next(frames)\n"
        "time.sleep(0.5)  # ffmpeg has set up its own handling by now\n"
        "os.killpg(os.getpgrp(), signal.SIGINT)  # Ctrl-C\n"
        "time.sleep(0.5)  # and handled, wherever it arrived\n"
        "print(1 + len(list(frames)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(clip)], capture_output=True, text=True, timeout=120,
                          start_new_session=True, cwd=Path(__file__).resolve().parents[1], check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "200"
