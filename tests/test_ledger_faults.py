"""The ledger on a full disk: when SQLite cannot write it (here the file size limit of the process, as a
quota or a full disk would), the run stops with one line naming the ledger and the reason, nothing
recorded is lost, the ledger stays consistent, and the rerun finishes and redoes only what was lost."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = 8

# The disk "fills" as soon as the first output is in place: from then on no file of the driver may grow
# past the ledger's write-ahead log as it is at that moment, so the next ledger commit fails while the
# small outputs, thumbnails and pages still fit.
CHILD = """
import resource, signal, sys, threading, time
from pathlib import Path

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
out = Path(sys.argv[1])
wal = out / ".nst" / "ledger.sqlite-wal"

def fill() -> None:
    while not list(out.glob("*.png")):
        time.sleep(0.002)
    size = wal.stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    print(f"limit {size}", file=sys.stderr, flush=True)

threading.Thread(target=fill, daemon=True).start()
sys.argv = ["nst", *sys.argv[2:]]
from pipeline.cli.main import run_cli
run_cli()
"""


def ledger_rows(out: Path) -> dict[str, tuple[str, float | None]]:
    conn = sqlite3.connect(out / ".nst" / "ledger.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, state, finished_at FROM items")}
    finally:
        conn.close()


def test_a_ledger_the_disk_refuses_stops_the_run_cleanly_and_the_rerun_redoes_only_what_was_lost(
        tmp_path: Path, photo, painting) -> None:
    photos = tmp_path / "photos"
    for i in range(PHOTOS):
        write_png(photos / f"p{i}.png", np.roll(photo, 7 * i, axis=1))
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    args = ["image", *sorted(map(str, photos.iterdir())), "--style", str(style), "-o", str(out), "--size", "48",
            "-n", "1", "--scales", "1", "--quiet"]
    first = subprocess.run([sys.executable, "-c", CHILD, str(out), *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, check=False)
    printed = first.stdout + first.stderr
    assert first.returncode == 1, printed
    assert "Traceback" not in printed, printed
    lines = [line for line in printed.splitlines() if "cannot write the run ledger" in line]
    assert len(lines) == 1 and str(out / ".nst" / "ledger.sqlite") in lines[0], printed
    assert "(" in lines[0].split("cannot write the run ledger")[1]  # with the reason SQLite gave

    rows = ledger_rows(out)  # consistent, and what it calls done is on disk
    assert len(rows) == PHOTOS
    done = {item for item, (state, _) in rows.items() if state == "done"}
    assert done < set(rows), "the run finished before the disk filled"
    assert all((out / item).is_file() for item in done)
    kept = {item: (out / item).stat().st_mtime_ns for item in done}
    page = (out / "report.html").read_text()
    assert "cannot write the run ledger" in page and 'http-equiv="refresh"' not in page  # no endless reload

    second = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    after = ledger_rows(out)
    assert all(state == "done" for state, _ in after.values())
    assert all((out / f"p{i}.png").is_file() for i in range(PHOTOS))
    for item, mtime in kept.items():  # recorded before the disk filled: not redone
        assert (out / item).stat().st_mtime_ns == mtime and after[item] == rows[item]
    states = [r["state"] for r in json.loads((out / "summary.json").read_text())["records"]]
    assert (states.count("done"), states.count("skipped")) == (PHOTOS - len(done), len(done))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB file system (tmpfs) for the output, grown later as a user freeing space would."""
    folder = tmp_path / "small disk"
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                                 capture_output=True, text=True, check=False)
    except OSError as exc:  # no mount program at all
        pytest.skip(f"cannot mount a small file system here ({exc})")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_video_that_fills_the_disk_is_announced_stops_cleanly_and_finishes_once_space_is_freed(
        tmp_path: Path, small_disk: Path, painting) -> None:
    from test_video import ffmpeg

    from pipeline.media.frames import read_frames

    clip = tmp_path / "clip.mkv"  # grainy footage: its painted frames compress no better than real ones
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-vf", "noise=alls=40:allf=t", "-frames:v", "60",
           "-c:v", "ffv1", str(clip))
    style = write_png(tmp_path / "style.png", painting)
    args = ["video", str(clip), "--style", str(style), "-o", str(small_disk), "--size", "160", "-n", "1",
            "--later-iterations", "1", "--quiet"]
    first = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, check=False)
    printed = first.stdout + first.stderr
    assert first.returncode != 0 and "Traceback" not in printed, printed
    # Said before any frame is painted (60 frames at 160x90 need about 2.2 MB), with what to do.
    assert "need up to 2.2 MB on disk" in printed and "free some space and rerun" in printed, printed
    assert "No space left on device" in printed or "disk is full" in printed, printed
    assert not (small_disk / "clip.mp4").exists()
    kept = sum(1 for _ in (small_disk / ".nst" / "frames").rglob("*.png"))
    assert kept > 0, "no painted frame survived to be resumed"

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    second = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "need up to" not in second.stdout + second.stderr  # it fits now
    assert sum(1 for _ in read_frames(small_disk / "clip.mp4", 160)) == 60
    assert not list((small_disk / ".nst" / "frames").rglob("*.png"))  # dropped once encoded
