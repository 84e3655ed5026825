"""Chaos: a few rounds of `nst run` over photos and a video, each cut short by a SIGKILL to a random Ray
worker or to the driver at a random moment; a last round finishes. Every output lands exactly once.

The rounds are seeded (NST_CHAOS_SEED overrides the seed, which is printed) so a failure can be replayed.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from conftest import write_png
from test_resume import DRIVER_ENV, query_ledger

SEED = int(os.environ.get("NST_CHAOS_SEED", "20261130"))
KILL_ROUNDS = 3
PHOTOS = 4
FRAMES = 14
CONFIG = """\
[image]
size = 48
scales = [1.0]
[optim]
iterations = 2
coarse_iterations = 0
[video]
first_frame_iterations = 3
later_frame_iterations = 2
segment_frames = 7
chunk_frames = 2
cut_threshold = 0.9
"""


def proc_table() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        table[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return table


def stylize_workers(driver_pid: int) -> list[int]:
    """Pids of the `ray::StylizeWorker` processes descended from the driver."""
    table = proc_table()
    found, todo = [], [driver_pid]
    while todo:
        parent = todo.pop()
        for pid, ppid in table.items():
            if ppid != parent:
                continue
            todo.append(pid)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::StylizeWorker"):
                found.append(pid)
    return sorted(found)


def progress(out: Path) -> int:
    """Finished units the ledger records: photos done plus video frames on disk."""
    photos = query_ledger(out, "SELECT COUNT(*) FROM items WHERE state = 'done' AND kind != 'video'")
    frames = query_ledger(out, "SELECT COALESCE(SUM(done_frames), 0) FROM segments")
    return (photos[0][0] if photos else 0) + (frames[0][0] if frames else 0)


def file_times(out: Path) -> dict[str, int]:
    """mtime of every output and every kept video frame (the ledger and Ray's own files left out)."""
    times = {}
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and (not rel.startswith(".nst/") or rel.startswith(".nst/frames/")):
            try:
                times[rel] = path.stat().st_mtime_ns
            except FileNotFoundError:  # a frame folder dropped after the encode
                continue
    return times


def end_driver(driver: subprocess.Popen) -> None:
    driver.kill()  # SIGKILL: no cleanup in the driver
    driver.wait()
    try:  # the embedded runtime lives in the driver's session
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def in_flight(out: Path) -> int:
    """Photos and video chunks the ledger shows as running: what a driver kill now throws away."""
    rows = query_ledger(out, "SELECT (SELECT COUNT(*) FROM items WHERE state = 'running' AND kind != 'video') "
                             "+ (SELECT COUNT(*) FROM segments WHERE state = 'running')")
    return rows[0][0] if rows else 0


def chaos_round(cmd: list[str], out: Path, rng: random.Random, log: list[str]) -> tuple[int | None, int]:
    """One `nst run` hit by a worker kill and then a driver kill, or by a driver kill alone. The first
    kill comes after 1-3 more finished units or after a random delay from the start (which may fall
    in Ray's start-up), each later one after 1-3 more units. Returns the driver's exit code (None when
    killed) and the units in flight at the driver kill."""
    plan = ["worker", "driver"] if rng.random() < 0.5 else ["driver"]
    timed = rng.random() < 0.5
    driver = subprocess.Popen(cmd, env=DRIVER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    started = time.monotonic()
    try:
        for n, target in enumerate(plan):
            if n == 0 and timed:
                wanted, delay = 0, rng.uniform(5.0, 40.0)
            else:
                wanted, delay = progress(out) + rng.randint(1, 3), rng.uniform(0.0, 1.5)
            while driver.poll() is None and progress(out) < wanted and time.monotonic() - started < 120:
                time.sleep(0.1)
            time.sleep(delay)
            if driver.poll() is not None:
                log.append(f"driver ended on its own (exit {driver.returncode}) before the {target} kill")
                return driver.returncode, 0
            at = f"at progress {progress(out)}, {time.monotonic() - started:.0f} s in"
            if target == "worker":
                workers = stylize_workers(driver.pid)
                if not workers:
                    log.append(f"no StylizeWorker process to kill {at}")
                    continue
                victim = rng.choice(workers)
                os.kill(victim, signal.SIGKILL)
                log.append(f"killed worker pid {victim} {at}")
            else:
                end_driver(driver)
                lost = in_flight(out)
                log.append(f"killed driver {at}, {lost} unit(s) in flight")
                return None, lost
        return None, 0
    finally:
        if driver.poll() is None:
            end_driver(driver)


def test_random_kills_of_workers_and_driver_leave_every_output_exactly_once(tmp_path: Path, photo, painting) -> None:
    import skimage.data

    from pipeline.core.arrays import resize
    from pipeline.media.frames import encode_video, probe, read_frames

    rng = random.Random(SEED)
    print(f"chaos seed {SEED} (set NST_CHAOS_SEED to replay another)")
    inputs = tmp_path / "in"
    for i in range(PHOTOS):
        write_png(inputs / "photos" / f"p{i}.png", np.roll(photo, 9 * i, axis=1))
    square = resize(skimage.data.astronaut().astype(np.float32), (64, 64))
    clip = encode_video([np.roll(square, 2 * t, axis=1)[8:56] for t in range(FRAMES)], inputs / "pan.mp4",
                        Fraction(24), None)
    style = write_png(tmp_path / "style.png", painting)
    config = tmp_path / "chaos.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(inputs / "photos"), str(clip), "--style", str(style),
           "-o", str(out), "--config", str(config), "--workers", "2", "--quiet"]

    log: list[str] = []
    first_seen: dict[str, int] = {}
    rewritten: set[str] = set()

    def note_files() -> None:
        for rel, mtime in file_times(out).items():
            if first_seen.setdefault(rel, mtime) != mtime:
                rewritten.add(rel)

    lost_in_flight = 0
    for r in range(KILL_ROUNDS):
        started = time.monotonic()
        finished_early, lost = chaos_round(cmd, out, rng, log)
        lost_in_flight += lost
        log.append(f"round {r + 1} took {time.monotonic() - started:.0f} s")
        note_files()
        if finished_early is not None:
            break
    started = time.monotonic()
    final = subprocess.run(cmd, env=DRIVER_ENV, capture_output=True, text=True, timeout=300, check=False)
    note_files()
    log.append(f"final round: exit {final.returncode} after {time.monotonic() - started:.0f} s")

    items = query_ledger(out, "SELECT id, state, attempts FROM items")
    segments = query_ledger(out, "SELECT idx, state, attempts, done_frames, stop - start FROM segments")
    redone_items = sum(max(a - 1, 0) for _, _, a in items)
    redone_segments = sum(max(a - 1, 0) for _, _, a, _, _ in segments)
    print("\n".join(log))
    print(f"attempts per item { {i: a for i, _, a in items} }, per segment {[a for _, _, a, _, _ in segments]}")
    print(f"redone work: ledger extra attempts {redone_items} (items) + {redone_segments} (segments); "
          f"units sent to workers and lost at driver kills {lost_in_flight}; "
          f"files rewritten after first written: {len(rewritten)} {sorted(rewritten)}")

    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert sorted(s for _, s, _ in items) == ["done"] * (PHOTOS + 1), items
    assert all(s == "done" and d == n for _, s, _, d, n in segments), segments
    visible = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if p.is_file() and ".nst" not in p.relative_to(out).parts)
    expected = sorted([f"photos/p{i}.png" for i in range(PHOTOS)] + ["pan.mp4", "report.html", "summary.json"])
    assert visible == expected
    temporary = [p for p in out.rglob("*")
                 if (p.name.startswith(".") and p != out / ".nst") or p.name.endswith(".part") or ".part." in p.name]
    assert not temporary
    assert not (out / ".nst" / "frames" / "pan.mp4").exists()  # frames go once the video is encoded
    assert probe(out / "pan.mp4").frame_count == FRAMES
    assert sum(1 for _ in read_frames(out / "pan.mp4", 48)) == FRAMES
