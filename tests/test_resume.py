"""Kill the driver (SIGKILL) in the middle of a run, run the same command again: only unfinished work is redone."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import write_png

NST = Path(sys.executable).parent / "nst"
DRIVER_ENV = {**os.environ, "RAY_ADDRESS": ""}  # always the driver's own embedded runtime


def query_ledger(out: Path, sql: str) -> list[tuple]:
    """Rows of a read-only query on a running driver's ledger; none before its tables exist."""
    db = out / ".nst" / "ledger.sqlite"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables or columns not created yet
        return []
    finally:
        conn.close()


def ledger_rows(out: Path) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in query_ledger(out, "SELECT id, state, attempts, finished_at, worker FROM items")}


def segment_progress(out: Path) -> dict[int, int]:
    return dict(query_ledger(out, "SELECT idx, done_frames FROM segments"))


def kill_driver_when(cmd: list[str], ready: Callable[[], bool], poll: float) -> subprocess.Popen:
    """Starts `nst run`, polls ``ready`` (up to 300 s) and SIGKILLs the driver and its Ray processes."""
    driver = subprocess.Popen(cmd, env=DRIVER_ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and driver.poll() is None and not ready():
            time.sleep(poll)
    finally:
        driver.kill()  # SIGKILL: no cleanup of any kind in the driver
        driver.wait()
        try:  # the embedded Ray processes live in the driver's session; stop what is left of them
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return driver


def test_killed_driver_resumes_without_redoing_finished_items(tmp_path: Path, photo, painting) -> None:
    photos = tmp_path / "photos"
    for i in range(8):
        write_png(photos / f"p{i}.png", np.roll(photo, 5 * i, axis=0))
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    # Each photo takes about 1 s here (60 evaluations): the driver commits its ledger at least once a
    # second, so the poll sees the first photos done while later ones still run, on faster machines too.
    cmd = [str(NST), "run", str(photos), "--style", str(style), "-o", str(out), "--size", "64", "-n", "60",
           "--scales", "1", "--workers", "2", "--quiet"]
    before: dict[str, tuple] = {}

    def two_done() -> bool:
        rows = ledger_rows(out)
        if sum(1 for r in rows.values() if r[0] == "done") >= 2:
            before.update(rows)
            return True
        return False

    driver = kill_driver_when(cmd, two_done, 0.2)
    finished_before = {k: v for k, v in before.items() if v[0] == "done"}
    assert len(finished_before) >= 2, driver.stdout.read().decode(errors="replace")[-2000:]
    assert len(finished_before) < 8, "the run finished before it could be interrupted"

    rerun = subprocess.run(cmd, env=DRIVER_ENV, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = ledger_rows(out)
    assert len(after) == 8 and all(r[0] == "done" for r in after.values())
    for item_id, row in finished_before.items():
        assert after[item_id] == row  # same state, attempt count, finish time and worker: not recomputed
    outputs = sorted(p.name for p in (out / "photos").iterdir())
    assert outputs == [f"p{i}.png" for i in range(8)]
    assert not [p for p in out.rglob("*") if p.name.endswith((".part", ".tmp")) or ".part." in p.name]
    status = subprocess.run([str(NST), "status", str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 0
    assert "8 done, 0 running, 0 failed, 0 remaining" in status.stdout


def test_changed_settings_are_not_mixed_with_old_results(tmp_path: Path, photo, painting) -> None:
    """Dry runs only (no compute): a new style invalidates results made with the old one."""
    photos = tmp_path / "photos"
    write_png(photos / "a.png", photo)
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    from pipeline import config as config_mod
    from pipeline.batch.driver import RunOptions, config_hash, run
    from pipeline.batch.ledger import Ledger

    cfg = config_mod.load(overrides={"image.size": 64})
    digest = config_hash(cfg, [style], [1.0])
    with Ledger(out) as ledger:  # as if a run had finished a.png with this style
        ledger.upsert_item("photos/a.png", "image", photos / "a.png", out / "photos" / "a.png", digest)
        ledger.mark_done("photos/a.png", "w", "n", 1.0)
    write_png(out / "photos" / "a.png", photo)
    same = run(RunOptions([photos], [style], out, cfg, dry_run=True, quiet=True))
    assert (same.done, same.skipped) == (0, 1)
    write_png(style, np.flipud(painting))  # same file name, other content
    changed = run(RunOptions([photos], [style], out, cfg, dry_run=True, quiet=True))
    assert (changed.done, changed.skipped) == (1, 0)
    other_iterations = run(RunOptions([photos], [style], out, cfg.replace(**{"optim.iterations": 7}),
                                      dry_run=True, quiet=True))
    assert other_iterations.done == 1
    forced = run(RunOptions([photos], [tmp_path / "style.png"], out, cfg, dry_run=True, overwrite=True, quiet=True))
    assert forced.done == 1


def test_killed_driver_resumes_a_video_from_its_last_finished_chunk(tmp_path: Path, photo, painting) -> None:
    from fractions import Fraction

    from pipeline.media.frames import encode_video, probe

    frames = [np.roll(photo, 2 * t, axis=1)[:48] for t in range(24)]
    clip = encode_video(frames, tmp_path / "clip" / "pan.mp4", Fraction(24), None)
    style = write_png(tmp_path / "style.png", painting)
    config = tmp_path / "chunks.toml"
    config.write_text("[image]\nsize = 64\nscales = [1.0]\n[optim]\niterations = 4\n"
                      "[video]\nfirst_frame_iterations = 6\nlater_frame_iterations = 12\nchunk_frames = 3\n"
                      "segment_frames = 12\ncut_threshold = 0.9\nsave_frames = true\n")
    out = tmp_path / "out"
    cmd = [str(NST), "run", str(clip), "--style", str(style), "-o", str(out), "--config", str(config),
           "--workers", "2", "--quiet"]
    progress: dict[int, int] = {}

    def mid_video() -> bool:
        progress.clear()
        progress.update(segment_progress(out))
        return sum(progress.values()) >= 6 and max(progress.values(), default=0) < 12

    driver = kill_driver_when(cmd, mid_video, 0.1)
    assert sum(progress.values()) >= 6, driver.stdout.read().decode(errors="replace")[-2000:]
    progress = segment_progress(out)  # as the ledger stood when the driver died
    assert sum(progress.values()) < 25, "the video finished before it could be interrupted"
    # segment 0 runs backward over frames 12..0 from key frame 12, segment 1 forward over 12..23
    recorded = [(0, i) for i in range(13 - progress[0], 13)] + [(1, i) for i in range(12, 12 + progress[1])]
    frames_dir = out / ".nst" / "frames" / "pan.mp4"
    kept = {(seg, i): (frames_dir / f"seg{seg:04d}" / f"{i:06d}.png").stat().st_mtime_ns for seg, i in recorded}

    rerun = subprocess.run(cmd, env=DRIVER_ENV, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for (seg, i), mtime in kept.items():  # the chunks the ledger called done were not redone
        assert (frames_dir / f"seg{seg:04d}" / f"{i:06d}.png").stat().st_mtime_ns == mtime
    assert probe(out / "pan.mp4").frame_count == 24
    assert segment_progress(out) == {0: 13, 1: 12}  # backward 0-12 from key frame 12, forward 12-23


def test_killed_nst_video_resumes_without_recomputing_finished_frames(tmp_path: Path, photo, painting) -> None:
    """`nst video` (in this process, no Ray) is the same driver: its finished chunks survive a SIGKILL."""
    from fractions import Fraction

    from pipeline.media.frames import encode_video, probe

    frames = [np.roll(photo, 2 * t, axis=1)[:48] for t in range(18)]
    clip = encode_video(frames, tmp_path / "clip" / "pan.mp4", Fraction(24), None)
    style = write_png(tmp_path / "style.png", painting)
    config = tmp_path / "chunks.toml"
    config.write_text("[image]\nsize = 64\nscales = [1.0]\n[optim]\niterations = 4\n"
                      "[video]\nfirst_frame_iterations = 6\nlater_frame_iterations = 12\nchunk_frames = 3\n"
                      "cut_threshold = 0.9\nsave_frames = true\n")  # frames kept: their mtimes tell
    out = tmp_path / "out"
    cmd = [str(NST), "video", str(clip), "--style", str(style), "-o", str(out), "--config", str(config), "--quiet"]
    progress: dict[int, int] = {}

    def mid_video() -> bool:
        progress.clear()
        progress.update(segment_progress(out))
        return sum(progress.values()) >= 6

    driver = kill_driver_when(cmd, mid_video, 0.1)
    assert sum(progress.values()) >= 6, driver.stdout.read().decode(errors="replace")[-2000:]
    progress = segment_progress(out)  # as the ledger stood when the driver died
    assert progress == {0: progress[0]} and progress[0] < 18, progress  # one forward chain, interrupted
    frames_dir = out / ".nst" / "frames" / "pan.mp4"
    kept = {i: (frames_dir / "seg0000" / f"{i:06d}.png").stat().st_mtime_ns for i in range(progress[0])}

    rerun = subprocess.run(cmd, env=DRIVER_ENV, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for i, mtime in kept.items():  # the frames of the chunks the ledger called done were not recomputed
        assert (frames_dir / "seg0000" / f"{i:06d}.png").stat().st_mtime_ns == mtime
    assert len(list((frames_dir / "seg0000").glob("*.png"))) == 18
    info, source = probe(out / "pan.mp4"), probe(clip)
    assert info.frame_count == 18 and info.fps == source.fps
    assert len(kept) >= 6


def test_a_file_of_the_same_name_is_never_taken_for_the_one_done(tmp_path: Path, photo, painting) -> None:
    """Two camera cards both hold DCIM/IMG_0001: painting the second into the same output folder must
    neither pass it off as done nor overwrite the first one's painting; a copied archive is still
    recognised, an edited photo is painted again."""
    import json
    import shutil

    from pipeline import config as config_mod
    from pipeline.batch.driver import RunOptions, run
    from pipeline.batch.ledger import Ledger

    card1, card2 = tmp_path / "card1" / "DCIM", tmp_path / "card2" / "DCIM"
    write_png(card1 / "IMG_0001.png", photo)
    write_png(card2 / "IMG_0001.png", np.ascontiguousarray(photo[:, ::-1]))
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    cfg = config_mod.load(overrides={"image.size": 48, "optim.iterations": 3, "image.scales": [1.0]})
    painted = out / "DCIM" / "IMG_0001.png"

    def paint(folder: Path, **options):
        return run(RunOptions([folder], [style], out, cfg, executor="local", quiet=True, **options))

    first = paint(card1)
    assert (first.done, first.exit_code) == (1, 0)
    card1_painting = painted.read_bytes()

    second = paint(card2)
    assert (second.done, second.skipped, second.refused, second.exit_code) == (0, 0, 1, 1)
    assert painted.read_bytes() == card1_painting
    [record] = [r for r in second.records if r["state"] == "refused"]
    assert record["source"] == str(card2 / "IMG_0001.png") and "another file of the same name" in record["reason"]
    summary = json.loads((out / "summary.json").read_text())
    assert any(r["state"] == "refused" and r["source"] == str(card2 / "IMG_0001.png") for r in summary["records"])
    assert paint(card2, dry_run=True).refused == 1

    # The archive copied elsewhere (new times): the same photo, done; the ledger learns its new place.
    moved = tmp_path / "copy" / "DCIM"
    moved.mkdir(parents=True)
    shutil.copyfile(card1 / "IMG_0001.png", moved / "IMG_0001.png")
    again = paint(moved)
    assert (again.done, again.skipped, again.refused) == (0, 1, 0)
    assert painted.read_bytes() == card1_painting
    with Ledger(out) as ledger:
        assert json.loads(ledger.item("DCIM/IMG_0001.png")["source_identity"])["real"] == str(
            (moved / "IMG_0001.png").resolve())

    # Edited where it lies: painted again from the new picture.
    write_png(moved / "IMG_0001.png", np.ascontiguousarray(photo[::-1]))
    edited = paint(moved)
    assert (edited.done, edited.skipped, edited.refused) == (1, 0, 0)
    assert painted.read_bytes() != card1_painting

    # --overwrite is the user's say-so for the other card.
    forced = paint(card2, overwrite=True)
    assert (forced.done, forced.refused) == (1, 0)
