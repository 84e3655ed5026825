"""The run ledger (real SQLite in the output folder) and the segment plan; no Ray here."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import NstError
from pipeline.ledger import DONE, FAILED, PENDING, DriverLock, Ledger, SegmentSpec, db_path, driver_active
from pipeline.segments import assembled_frames, encode_png, plan_segments, write_segment_frames


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / "out") as led:
        yield led


def test_database_lives_in_the_output_folder_in_wal_mode(ledger: Ledger, tmp_path: Path) -> None:
    assert db_path(tmp_path / "out") == tmp_path / "out" / ".nst" / "ledger.sqlite"
    assert ledger.journal_mode() == "wal"
    # a second connection (what `nst status` opens) sees committed rows while the writer is open
    ledger.upsert_item("a.jpg", "image", Path("in/a.jpg"), Path("out/a.jpg"), "h1")
    with Ledger(tmp_path / "out", readonly=True) as reader:
        assert reader.item("a.jpg")["state"] == PENDING
        with pytest.raises(sqlite3.OperationalError):
            reader.conn.execute("DELETE FROM items")


def test_state_transitions_and_attempt_counter(ledger: Ledger) -> None:
    ledger.upsert_item("a.jpg", "image", Path("a.jpg"), Path("o/a.jpg"), "h1")
    assert ledger.mark_attempt("a.jpg", "worker-0", "node-a") == 1
    assert ledger.item("a.jpg")["state"] == "running"
    ledger.mark_pending("a.jpg", "worker died")
    assert ledger.mark_attempt("a.jpg", "worker-1", "node-b") == 2
    ledger.mark_done("a.jpg", "worker-1", "node-b", 1.5, worker_pid=42)
    row = ledger.item("a.jpg")
    assert (row["state"], row["attempts"], row["worker"], row["node"], row["pid"], row["seconds"]) == \
        (DONE, 2, "worker-1", "node-b", 42, 1.5)
    assert row["error"] is None and row["finished_at"] >= row["started_at"]
    assert ledger.counts() == {PENDING: 0, "running": 0, DONE: 1, FAILED: 0}


def test_done_item_with_same_hash_stays_done_and_keeps_its_counters(ledger: Ledger) -> None:
    ledger.upsert_item("a.jpg", "image", Path("a.jpg"), Path("o/a.jpg"), "h1")
    ledger.mark_attempt("a.jpg", "w", "n")
    ledger.mark_done("a.jpg", "w", "n", 1.0)
    before = ledger.item("a.jpg")
    assert ledger.upsert_item("a.jpg", "image", Path("a.jpg"), Path("o/a.jpg"), "h1") == DONE
    after = ledger.item("a.jpg")
    assert (after["finished_at"], after["attempts"]) == (before["finished_at"], before["attempts"])


def test_config_hash_change_means_redo_and_drops_old_segments(ledger: Ledger) -> None:
    ledger.upsert_item("v.mp4", "video", Path("v.mp4"), Path("o/v.mp4"), "h1")
    ledger.set_segments("v.mp4", [SegmentSpec(0, 0, 10), SegmentSpec(1, 6, 20)], "h1")
    ledger.mark_segment_done("v.mp4", 0, "w", "n", 2.0)
    ledger.mark_done("v.mp4", "w", "n", 3.0)
    assert ledger.upsert_item("v.mp4", "video", Path("v.mp4"), Path("o/v.mp4"), "h2") == PENDING
    row = ledger.item("v.mp4")
    assert (row["state"], row["attempts"], row["config_hash"], row["finished_at"]) == (PENDING, 0, "h2", None)
    assert ledger.segments("v.mp4") == []  # old-style frames must not be mixed into the new video


def test_force_redoes_a_done_item(ledger: Ledger) -> None:
    ledger.upsert_item("a.jpg", "image", Path("a.jpg"), Path("o/a.jpg"), "h1")
    ledger.mark_done("a.jpg", "w", "n", 1.0)
    assert ledger.upsert_item("a.jpg", "image", Path("a.jpg"), Path("o/a.jpg"), "h1", force=True) == PENDING


def test_stale_running_rows_become_pending_and_keep_finished_segments(ledger: Ledger) -> None:
    ledger.upsert_item("a.jpg", "image", Path("a.jpg"), Path("o/a.jpg"), "h1")
    ledger.upsert_item("v.mp4", "video", Path("v.mp4"), Path("o/v.mp4"), "h1")
    ledger.set_segments("v.mp4", [SegmentSpec(0, 0, 10), SegmentSpec(1, 6, 20)], "h1")
    ledger.mark_attempt("a.jpg", "w", "n")
    ledger.mark_segment_attempt("v.mp4", 0, "w", "n")
    ledger.mark_segment_done("v.mp4", 0, "w", "n", 1.0)
    ledger.mark_segment_attempt("v.mp4", 1, "w", "n")
    assert ledger.recover_stale() == 2  # the image and segment 1 (the driver that ran them is gone)
    assert ledger.item("a.jpg")["state"] == PENDING
    assert [r["state"] for r in ledger.segments("v.mp4")] == [DONE, PENDING]
    # same hash: a resumed video keeps its finished segment
    assert ledger.upsert_item("v.mp4", "video", Path("v.mp4"), Path("o/v.mp4"), "h1") == PENDING
    assert [r["state"] for r in ledger.segments("v.mp4")] == [DONE, PENDING]


def test_failed_item_is_retried_with_fresh_counters_on_the_next_run(ledger: Ledger) -> None:
    ledger.upsert_item("bad.jpg", "image", Path("bad.jpg"), Path("o/bad.jpg"), "h1")
    ledger.mark_attempt("bad.jpg", "w", "n")
    ledger.mark_failed("bad.jpg", "corrupt")
    assert ledger.item("bad.jpg")["error"] == "corrupt"
    assert ledger.upsert_item("bad.jpg", "image", Path("bad.jpg"), Path("o/bad.jpg"), "h1") == PENDING
    assert ledger.item("bad.jpg")["attempts"] == 0


def test_one_driver_per_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with DriverLock(out):
        assert driver_active(out)
        with pytest.raises(NstError, match="another nst run"):
            DriverLock(out).acquire()
    assert not driver_active(out)


def test_segments_cover_every_frame_and_never_cross_a_cut() -> None:
    specs = plan_segments(50, [0, 30], segment_frames=12, overlap=3)
    shot1 = [s for s in specs if s.shot_start == 0]
    shot2 = [s for s in specs if s.shot_start == 30]
    assert shot1[0].start == 0 and shot1[-1].stop == 30 and shot2[0].start == 30 and shot2[-1].stop == 50
    for a, b in zip(shot1, shot1[1:]):
        assert a.stop - b.start == 3  # overlap frames within a shot
    assert all(s.start >= 30 for s in shot2)
    # overlap longer than a piece is clamped, so no segment reaches past its predecessor's start
    tight = plan_segments(20, [0], segment_frames=4, overlap=10)
    assert all(b.start > a.start for a, b in zip(tight, tight[1:]))


def test_assembly_cross_fades_the_overlap_and_yields_each_frame_once(tmp_path: Path) -> None:
    specs = plan_segments(12, [0], segment_frames=6, overlap=3)
    assert [(s.start, s.stop) for s in specs] == [(0, 6), (3, 12)]
    for spec, value in zip(specs, (0.0, 240.0)):
        frames = [np.full((8, 8, 3), value, np.float32) for _ in range(spec.stop - spec.start)]
        write_segment_frames(tmp_path, "clip.mp4", spec, [encode_png(f) for f in frames])
    out = [float(f.mean()) for f in assembled_frames(tmp_path, "clip.mp4", specs)]
    assert len(out) == 12
    assert out[:3] == [0.0, 0.0, 0.0] and out[6:] == [240.0] * 6
    assert out[3] == pytest.approx(60.0) and out[4] == pytest.approx(120.0) and out[5] == pytest.approx(180.0)
