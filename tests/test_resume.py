"""Kill the driver (SIGKILL) in the middle of a run, run the same command again: only unfinished work is redone."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import write_png

NST = Path(sys.executable).parent / "nst"


def ledger_rows(out: Path) -> dict[str, tuple]:
    db = out / ".nst" / "ledger.sqlite"
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {r[0]: r[1:] for r in conn.execute("SELECT id, state, attempts, finished_at, worker FROM items")}
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        conn.close()


def test_killed_driver_resumes_without_redoing_finished_items(tmp_path: Path, photo, painting) -> None:
    photos = tmp_path / "photos"
    for i in range(8):
        write_png(photos / f"p{i}.png", np.roll(photo, 5 * i, axis=0))
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    cmd = [str(NST), "run", str(photos), "--style", str(style), "-o", str(out), "--size", "64", "-n", "12",
           "--scales", "1", "--workers", "2", "--quiet"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    before: dict[str, tuple] = {}
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            rows = ledger_rows(out)
            if sum(1 for r in rows.values() if r[0] == "done") >= 2:
                before = rows
                break
            time.sleep(0.2)
    finally:
        driver.kill()  # SIGKILL: no cleanup of any kind in the driver
        driver.wait()
        try:  # the embedded Ray processes live in the driver's session; stop what is left of them
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finished_before = {k: v for k, v in before.items() if v[0] == "done"}
    assert len(finished_before) >= 2, driver.stdout.read().decode(errors="replace")[-2000:]
    assert len(finished_before) < 8, "the run finished before it could be interrupted"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
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
    from pipeline.ledger import Ledger
    from pipeline.runner import RunOptions, config_hash, run

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
