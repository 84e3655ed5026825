"""The run ledger (real SQLite in the output folder) and the segment plan; no Ray here."""
from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pipeline.batch.ledger import DONE, FAILED, PENDING, DriverLock, Ledger, SegmentSpec, db_path, driver_active
from pipeline.batch.segments import assembled_frames, encode_png, plan_segments, write_segment_frames
from pipeline.errors import NstError


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


def test_failed_video_keeps_its_finished_segments_under_the_same_settings(ledger: Ledger) -> None:
    ledger.upsert_item("v.mp4", "video", Path("v.mp4"), Path("o/v.mp4"), "h1")
    ledger.set_segments("v.mp4", [SegmentSpec(0, 0, 11, reverse=True), SegmentSpec(1, 10, 20)], "h1")
    ledger.mark_segment_done("v.mp4", 0, "w", "n", 2.0)
    ledger.mark_segment_attempt("v.mp4", 1, "w", "n")
    ledger.mark_segment_failed("v.mp4", 1, "worker died")
    ledger.mark_failed("v.mp4", "worker died")
    assert ledger.upsert_item("v.mp4", "video", Path("v.mp4"), Path("o/v.mp4"), "h1") == PENDING
    rows = ledger.segments("v.mp4")
    assert [(r["state"], r["attempts"], r["error"]) for r in rows] == [(DONE, 0, None), (PENDING, 0, None)]
    assert ledger.item("v.mp4")["error"] is None
    # --force starts the video over
    ledger.mark_failed("v.mp4", "again")
    assert ledger.upsert_item("v.mp4", "video", Path("v.mp4"), Path("o/v.mp4"), "h1", force=True) == PENDING
    assert ledger.segments("v.mp4") == []


def test_one_driver_per_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with DriverLock(out):
        assert driver_active(out)
        with pytest.raises(NstError, match="another nst run"):
            DriverLock(out).acquire()
    assert not driver_active(out)


def test_segments_cover_every_frame_and_never_cross_a_cut() -> None:
    specs = plan_segments(50, [0, 30], segment_frames=12, overlap=3)
    # Two pieces per shot: backward to the shot's start from a key frame, forward from the same frame.
    assert [(s.start, s.stop, s.reverse) for s in specs] == [(0, 16, True), (15, 30, False),
                                                            (30, 41, True), (40, 50, False)]
    assert {s.shot_start for s in specs[:2]} == {0} and {s.shot_start for s in specs[2:]} == {30}
    for total, cuts, length, overlap in [(50, [0, 30], 12, 3), (20, [0], 4, 10), (61, [0, 7, 8], 9, 4),
                                         (13, [0], 1, 2), (1, [0], 0, 4)]:
        specs = plan_segments(total, cuts, length, overlap)
        shots = sorted(set(cuts) | {0}) + [total]
        for index in range(total):
            covering = [s for s in specs if s.start <= index < s.stop]
            assert 1 <= len(covering) <= 2, (total, cuts, length, overlap, index)
            shot = max(c for c in shots if c <= index)
            assert all(s.shot_start == shot for s in covering)  # never across a cut
        for shot in shots[:-1]:
            in_shot = [s for s in specs if s.shot_start == shot]
            assert not in_shot[-1].reverse  # the shot's last frames come from a forward chain
            # a backward piece starts from the very frame its forward partner starts from
            for a, b in itertools.pairwise(in_shot):
                if a.reverse:
                    assert not b.reverse and a.stop - 1 == b.start
    # overlap longer than a piece is clamped, so the cross-fade stays inside the next piece
    tight = plan_segments(20, [0], segment_frames=4, overlap=10)
    assert [(s.start, s.stop, s.reverse) for s in tight] == [(0, 7, False), (4, 9, True), (8, 15, False),
                                                            (12, 17, True), (16, 20, False)]


def test_a_dissolve_starts_the_next_shot_fresh_and_fades_its_backward_chain_in_over_it() -> None:
    """Over a dissolve (frames 10-15) the shot before runs on, the next shot's chain runs back from
    its first frame (16), and the delivered frames fade from the one to the other as the footage does."""
    from pipeline.batch.segments import frame_weights, planned_dissolves, segment_key, settle_stop, shot_keys

    def weights_of_next_shot(specs: list, frames: range) -> list[float]:
        return [round(sum(w for s, w in frame_weights(i, specs) if s.shot_start == 16), 3) for i in frames]

    specs = plan_segments(40, [0], segment_frames=0, overlap=3, dissolves=[(10, 15)])
    assert [(s.start, s.stop, s.shot_start, s.reverse) for s in specs] == [(0, 16, 0, False), (10, 17, 16, True),
                                                                          (16, 40, 16, False)]
    assert weights_of_next_shot(specs, range(9, 18)) == [0.0, *(round(k / 7, 3) for k in range(1, 7)), 1.0, 1.0]
    assert [segment_key(s) for s in specs] == [0, 16, 16] and shot_keys(specs[1], specs) == [16]
    assert settle_stop(16, specs, 1) == 18  # the shared key frame is settled alike by both
    assert planned_dissolves(specs) == [(10, 16)]  # its frames are no shot's light alone (the fade rule)
    # split over workers, the next shot's first piece runs backward anyway: it is lengthened
    specs = plan_segments(40, [0], segment_frames=12, overlap=3, dissolves=[(10, 15)])
    assert [(s.start, s.stop, s.shot_start, s.reverse) for s in specs] == [(0, 16, 0, False), (10, 29, 16, True),
                                                                          (28, 40, 16, False)]
    assert weights_of_next_shot(specs, range(9, 18)) == [0.0, *(round(k / 7, 3) for k in range(1, 7)), 1.0, 1.0]
    # a dissolve with a cut inside is left to the cut; one reaching past the video's ends is ignored
    assert plan_segments(40, [0, 12], 0, 3, dissolves=[(10, 15)]) == plan_segments(40, [0, 12], 0, 3)
    assert plan_segments(40, [0], 0, 3, dissolves=[(0, 5), (30, 39)]) == plan_segments(40, [0], 0, 3)
    # the shot before split into pieces over its frames before the dissolve: its last piece takes
    # the whole dissolve, so the next shot's chain fades in over all of it, however short the pieces
    specs = plan_segments(50, [0], segment_frames=12, overlap=3, dissolves=[(30, 45)])
    assert [(s.start, s.stop, s.reverse) for s in specs[:3]] == [(0, 16, True), (15, 46, False), (30, 47, True)]
    specs = plan_segments(40, [0], segment_frames=1, overlap=0, dissolves=[(10, 15)])
    assert [(s.start, s.stop, s.shot_start) for s in specs if s.start <= 15 < s.stop] == [(9, 16, 0), (10, 18, 16)]
    assert weights_of_next_shot(specs, range(9, 17)) == [0.0, *(round(k / 7, 3) for k in range(1, 7)), 1.0]
    for total, cuts, length, overlap, dissolves in [
            (40, [0], 0, 3, [(10, 15)]), (40, [0], 12, 3, [(10, 15)]), (40, [0], 6, 2, [(3, 15)]),
            (60, [0, 30], 5, 2, [(8, 12), (13, 20), (31, 33), (40, 58)]), (30, [0], 1, 2, [(5, 9), (9, 11)]),
            (50, [0, 20], 7, 4, [(15, 25), (21, 22), (44, 47)])]:
        specs = plan_segments(total, cuts, length, overlap, dissolves)
        for index in range(total):
            covering = frame_weights(index, specs)  # raises unless one or two chains cover the frame
            assert sum(w for _, w in covering) == pytest.approx(1.0)
            if len({s.shot_start for s, _ in covering}) == 2:  # two shots meet only inside a dissolve
                later = max((s for s, _ in covering), key=lambda s: s.shot_start)
                assert later.reverse and index < later.shot_start
                assert any(first <= index <= last for first, last in dissolves)
        for spec in specs:
            if not spec.reverse:
                assert spec.start >= spec.shot_start  # only a backward chain runs into the dissolve before its shot


def test_key_frames_of_a_segment_and_the_frames_that_settle_them() -> None:
    from pipeline.batch.segments import segment_key, settle_stop, shot_keys

    specs = plan_segments(40, [0, 24], segment_frames=6, overlap=2)  # shot 0-23: 4 pieces, shot 24-39: 3
    assert [segment_key(s) for s in specs] == [6, 6, 18, 18, 24, 35, 35]
    # a segment needs its shot's key frames up to its own (each later one is carried from the one before)
    assert [shot_keys(s, specs) for s in specs] == [[6], [6], [6, 18], [6, 18], [24], [24, 35], [24, 35]]
    # settled inside the forward segment that starts at the key frame, whichever side asks
    assert settle_stop(6, specs, 1) == 8 and settle_stop(18, specs, 3) == 22 and settle_stop(18, specs, 8) == 24


def test_assembly_cross_fades_where_chains_meet_and_yields_each_frame_once(tmp_path: Path) -> None:
    specs = plan_segments(12, [0], segment_frames=4, overlap=2)
    assert [(s.start, s.stop, s.reverse) for s in specs] == [(0, 6, False), (4, 9, True), (8, 12, False)]
    for spec, value in zip(specs, (0.0, 120.0, 240.0)):
        frames = [np.full((8, 8, 3), value + index, np.float32) for index in range(spec.start, spec.stop)]
        write_segment_frames(tmp_path, "clip.mp4", spec, [encode_png(f) for f in frames])
    repeats: list[int] = []
    out = [float(f.mean()) for f in assembled_frames(tmp_path, "clip.mp4", specs, repeats)]
    assert len(out) == 12 and repeats == []
    assert out[:4] == [0.0, 1.0, 2.0, 3.0] and out[6:8] == [126.0, 127.0] and out[9:] == [249.0, 250.0, 251.0]
    # forward chain 0 fades into backward chain 1 over the overlap; the shared key frame is their mean
    assert out[4] == pytest.approx(4 * 2 / 3 + 124 / 3) and out[5] == pytest.approx(5 / 3 + 125 * 2 / 3)
    assert out[8] == pytest.approx((128 + 248) / 2)


def test_a_repeat_both_chains_held_is_delivered_still_inside_their_cross_fade(tmp_path: Path) -> None:
    """Over a cross-fade the two chains' weights change from frame to frame, so a repeat each chain
    held would still change in the blend; it is delivered as the frame before it, and counted."""
    specs = plan_segments(12, [0], segment_frames=4, overlap=2)
    for spec, value in zip(specs, (0.0, 120.0, 240.0)):
        # frame 5 repeats frame 4 in every chain (held), frame 10 repeats 9
        values = [value + index - (index in (5, 10)) for index in range(spec.start, spec.stop)]
        write_segment_frames(tmp_path, "clip.mp4", spec, [encode_png(np.full((8, 8, 3), v, np.float32))
                                                          for v in values])
    repeats: list[int] = []
    out = [float(f.mean()) for f in assembled_frames(tmp_path, "clip.mp4", specs, repeats)]
    assert repeats == [5, 10]
    assert out[5] == out[4] == pytest.approx(4 * 2 / 3 + 124 / 3)  # held, not re-weighted (it would be 84)
    assert out[10] == out[9] == 249.0
    assert out[6] == pytest.approx(126.0)  # and the frame after it is blended


def test_a_seam_cross_fade_keeps_the_contrast_of_two_differently_painted_textures() -> None:
    """Two chains meeting paint the same picture with different strokes; half way through the fade a
    linear blend keeps 1/sqrt(2) of their texture's contrast, the seam blend all of it, and the
    picture underneath still fades linearly. Strokes both chains share are left as they are."""
    import cv2

    from pipeline.batch.segments import blend_shared

    rng = np.random.default_rng(5)
    picture = cv2.GaussianBlur(rng.uniform(60, 200, (96, 128, 3)).astype(np.float32), (0, 0), 8)

    def strokes() -> np.ndarray:
        texture = cv2.GaussianBlur(rng.normal(0, 1, (96, 128, 3)).astype(np.float32), (0, 0), 0.8)
        return texture / texture.std() * 25

    a, b = picture + strokes(), picture + strokes()

    def contrast(image: np.ndarray) -> float:
        return float((image - cv2.GaussianBlur(image, (0, 0), 2.0))[8:-8, 8:-8].std())

    blended = blend_shared([(a, 0.5), (b, 0.5)])
    linear = 0.5 * a + 0.5 * b
    assert contrast(linear) < 0.75 * contrast(a)
    assert 0.9 * contrast(a) < contrast(blended) < 1.1 * contrast(a)
    low = (cv2.GaussianBlur(blended, (0, 0), 4.0) - cv2.GaussianBlur(linear, (0, 0), 4.0))[8:-8, 8:-8]
    assert np.abs(low).mean() < 1.0  # grey levels: the picture is the linear fade's
    assert np.allclose(blend_shared([(a, 0.3), (a.copy(), 0.7)]), np.clip(a, 0, 255), atol=1e-3)


def test_segment_direction_is_stored_and_old_run_state_is_upgraded(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        specs = plan_segments(30, [0], segment_frames=15, overlap=3)
        ledger.set_segments("v.mp4", specs, "h1")
        assert ledger.segment_specs("v.mp4") == specs and specs[0].reverse
    old = tmp_path / "old"
    db_path(old).parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path(old))
    conn.execute("CREATE TABLE segments (item TEXT NOT NULL, idx INTEGER NOT NULL, start INTEGER NOT NULL, "
                 "stop INTEGER NOT NULL, shot_start INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT "
                 "'pending', attempts INTEGER NOT NULL DEFAULT 0, error TEXT, worker TEXT, node TEXT, pid INTEGER, "
                 "started_at REAL, finished_at REAL, seconds REAL, config_hash TEXT NOT NULL, "
                 "PRIMARY KEY (item, idx))")
    conn.execute("INSERT INTO segments (item, idx, start, stop, config_hash) VALUES ('v.mp4', 0, 0, 9, 'h')")
    conn.commit()
    conn.close()
    with Ledger(old, readonly=True) as ledger:  # read as it is: an earlier version's segments ran forward
        assert ledger.segment_specs("v.mp4") == [SegmentSpec(0, 0, 9, 0, False)]
    with Ledger(old) as ledger:
        assert ledger.segment_specs("v.mp4") == [SegmentSpec(0, 0, 9, 0, False)]
        ledger.set_segments("w.mp4", specs, "h2")
        assert ledger.segment_specs("w.mp4") == specs


def test_status_counts_segment_frames_and_estimates_from_finished_chunks(tmp_path: Path) -> None:
    from pipeline.batch.driver import status_lines

    out = tmp_path / "out"
    with Ledger(out) as ledger:
        run_id = ledger.start_run("h1", {})
        ledger.set_run_workers(run_id, 2)
        ledger.upsert_item("v.mp4", "video", Path("v.mp4"), out / "v.mp4", "h1")
        ledger.set_segments("v.mp4", [SegmentSpec(0, 0, 51, reverse=True), SegmentSpec(1, 50, 100)], "h1")
        ledger.mark_segment_progress("v.mp4", 0, 20, 40.0)  # 20 frames in 40 s
        ledger.finish_run(run_id, "interrupted")
    lines, failed = status_lines(out)
    assert failed == 0
    assert any("20 of 101 segment frames done" in line for line in lines)
    # 81 frames left at 2 s per frame, shared by 2 workers: about 81 s
    assert any(line.startswith("ETA: about 81 s of work left at 2 worker(s)") for line in lines), lines


def test_the_config_hash_follows_what_changes_pixels_only() -> None:
    from pipeline import config as config_mod

    base = config_mod.load()
    same = [base.replace(**{"video.chunk_frames": 5}), base.replace(**{"video.save_frames": True}),
            base.replace(**{"run.workers": 3})]
    assert {c.digest() for c in same} == {base.digest()}
    different = [base.replace(**{"video.later_frame_iterations": 7}), base.replace(**{"video.segment_overlap": 3}),
                 base.replace(**{"image.size": 300})]
    assert len({c.digest() for c in different} | {base.digest()}) == 4


def test_a_source_is_told_apart_from_another_file_an_edit_and_a_copy(tmp_path: Path) -> None:
    import json
    import os
    import shutil

    from pipeline.batch.planning import source_identity, source_relation

    photo = tmp_path / "card1" / "IMG_0001.JPG"
    photo.parent.mkdir()
    photo.write_bytes(b"\xff\xd8" + bytes(range(256)) * 1000)
    recorded = source_identity(photo)
    assert source_relation(recorded, photo) == ("same", None)
    os.utime(photo, ns=(1, 10**18))  # touched: the same bytes
    relation, identity = source_relation(recorded, photo)
    assert relation == "moved" and json.loads(identity)["stamp"][1] == 10**18
    copy = tmp_path / "copy" / "IMG_0001.JPG"
    copy.parent.mkdir()
    shutil.copyfile(photo, copy)
    assert source_relation(recorded, copy)[0] == "moved"  # a copy elsewhere, with a new time
    other = tmp_path / "card2" / "IMG_0001.JPG"
    other.parent.mkdir()
    other.write_bytes(b"\xff\xd8" + bytes(range(255, -1, -1)) * 1000)  # same size, other bytes
    assert source_relation(recorded, other) == ("other", None)
    photo.write_bytes(b"\xff\xd8" + bytes(range(256)) * 999)  # edited in place
    assert source_relation(recorded, photo) == ("edited", None)
    # Recorded before sources were: trusted, and its size and time recorded from now on, so that a
    # copy keeping both (cp -p) is known and a file of another size is not.
    relation, identity = source_relation(None, copy)
    assert relation == "same" and json.loads(identity)["print"] is None
    kept = tmp_path / "kept" / "IMG_0001.JPG"
    kept.parent.mkdir()
    shutil.copy2(copy, kept)
    assert source_relation(identity, kept)[0] == "moved" and source_relation(identity, photo)[0] == "other"
    # A preview's part of a clip lives in the state folder, named after the clip, its time and the
    # range: cut again it is the same part whatever its bytes; in another folder, an edited clip's.
    state = tmp_path / "out" / ".nst"
    part = state / "excerpts" / "aaa" / "walk.1s-2s.mkv"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"first cut")
    recorded = source_identity(part)
    part.write_bytes(b"second cut, other bytes")
    assert source_relation(recorded, part, state=str(state.resolve()))[0] == "same"
    edited = state / "excerpts" / "bbb" / "walk.1s-2s.mkv"
    edited.parent.mkdir()
    edited.write_bytes(b"first cut")
    assert source_relation(recorded, edited, state=str(state.resolve()))[0] == "edited"


def test_decisions_for_a_file_of_the_same_name_and_on_a_ledger_from_before_sources_were_kept(tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.batch.discover import discover
    from pipeline.batch.planning import decide, source_identity

    first, second, out = tmp_path / "a" / "DCIM", tmp_path / "b" / "DCIM", tmp_path / "out"
    for folder, colour in ((first, "red"), (second, "blue")):
        folder.mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(folder / "IMG_0001.png")
    with Ledger(out) as ledger:
        ledger.upsert_item("DCIM/IMG_0001.png", "image", first / "IMG_0001.png", out / "DCIM" / "IMG_0001.png", "h")
        ledger.set_source_identities([("DCIM/IMG_0001.png", source_identity(first / "IMG_0001.png"))])
        ledger.mark_failed("DCIM/IMG_0001.png", "corrupt")
        ledger.flush()
        plan = discover([second], out)
        [failed] = decide(plan, ledger, "h", overwrite=False)  # the other file left nothing to keep
        assert (failed.action, failed.afresh) == ("do", True) and "left nothing to keep" in failed.reason
        ledger.mark_done("DCIM/IMG_0001.png", "w", "n", 1.0)
        ledger.flush()
        (out / "DCIM").mkdir(parents=True)
        Image.new("RGB", (40, 30), "red").save(out / "DCIM" / "IMG_0001.png")
        [done] = decide(plan, ledger, "h", overwrite=False)
        assert done.action == "refuse" and "holds the painting of" in done.reason
        ledger.conn.execute("ALTER TABLE items DROP COLUMN source_identity")  # as an earlier version left it
        ledger.conn.commit()
    with Ledger(out, readonly=True) as old:  # --dry-run opens it read-only: nothing upgraded
        [trusted] = decide(discover([second], out), old, "h", overwrite=False)
    assert trusted.action == "skip"


def test_a_chunk_after_held_repeats_continues_from_the_frame_painted_before_them(tmp_path: Path, monkeypatch) -> None:
    """A chain's next chunk starts from its last frame; when that frame was held (the same PNG as the
    frame before it in chain order), the content it carries is that of the frame painted."""
    from pipeline.batch.ledger import SegmentSpec
    from pipeline.batch.segments import painted_anchor

    forward, backward = SegmentSpec(0, 0, 6, 0), SegmentSpec(1, 6, 12, 0, reverse=True)
    for spec, values in ((forward, [10, 20, 20, 20, 30, 30]), (backward, [70, 70, 60, 50, 50, 40])):
        write_segment_frames(tmp_path, "clip.mp4", spec, [encode_png(np.full((8, 8, 3), v, np.float32))
                                                          for v in values])
    assert [painted_anchor(tmp_path, "clip.mp4", forward, i) for i in range(6)] == [0, 1, 1, 1, 4, 4]
    # a backward chain runs from its last frame down: frame 6 repeats frame 7, frame 10 repeats 11
    assert [painted_anchor(tmp_path, "clip.mp4", backward, i) for i in range(6, 12)] == [7, 7, 8, 10, 10, 11]
    # A long freeze is walked back over a bounded number of frames.
    from pipeline.batch import segments

    monkeypatch.setattr(segments, "ANCHOR_WALK", 1)
    assert painted_anchor(tmp_path, "clip.mp4", forward, 3) == 2


def test_status_reads_a_finished_run_on_read_only_media_and_a_run_cannot_start_there(tmp_path: Path) -> None:
    """On a read-only mount SQLite cannot make the files readers of a WAL database share: status
    failed with 'unable to open database file'. A run there crashed on the raw OSError."""
    import subprocess

    from pipeline.batch.driver import status_lines
    from pipeline.batch.ledger import DriverLock
    from pipeline.errors import NstError

    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    with pytest.raises(NstError, match=r"a file: cannot write to the output folder \(Not a directory\)"):
        DriverLock(blocked).acquire()
    media = tmp_path / "media"
    media.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(media)], capture_output=True,
                             check=False)
    if mounted.returncode:
        pytest.skip("cannot mount a file system here to make it read-only")
    try:
        out = media / "out #1?"  # characters a SQLite URI would take for its own
        with Ledger(out) as ledger:
            run_id = ledger.start_run("h1", {})
            ledger.upsert_item("a.jpg", "image", Path("a.jpg"), out / "a.jpg", "h1")
            ledger.mark_done("a.jpg", "w", "n", 1.0)
            ledger.finish_run(run_id, "done")
        subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
        lines, failed = status_lines(out)
        assert failed == 0 and any("1 done" in line for line in lines), lines
        with pytest.raises(NstError, match="cannot write to the output folder"):
            DriverLock(out).acquire()
    finally:
        subprocess.run(["umount", str(media)], check=False)


def test_status_during_a_run_tells_items_a_worker_has_from_those_still_queued(tmp_path: Path) -> None:
    """Items handed to the executor are marked running before a worker takes them up: status said
    'running a.jpg on None @ None' for each."""
    from pipeline.batch.driver import status_lines
    from pipeline.batch.ledger import DriverLock

    out = tmp_path / "out"
    with Ledger(out) as ledger:
        run_id = ledger.start_run("h1", {})
        for name in ("a.jpg", "b.jpg"):
            ledger.upsert_item(name, "image", Path(name), out / name, "h1")
            ledger.mark_running(name, run_id)
        ledger.mark_attempt("b.jpg", "worker-1", "node-1")
        ledger.flush()
        lock = DriverLock(out)
        lock.acquire()  # a live driver holds the folder
        try:
            lines, _ = status_lines(out)
        finally:
            lock.release()
    assert "  queued   a.jpg" in lines and "  running  b.jpg on worker-1 @ node-1" in lines, lines
    assert "items: 0 done, 1 running, 1 queued, 0 failed, 2 remaining" in lines, lines
    # the driver killed (-9): its run is still marked running, but nothing holds the folder
    lines, _ = status_lines(out)
    assert lines[0].endswith("worker(s), interrupted") and "(2 interrupted, redone on the next run)" in lines[1], lines


def test_crf_with_a_codec_it_does_not_apply_to_is_said(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    style = tmp_path / "style.png"
    style.write_bytes(b"")
    result = CliRunner().invoke(app, ["video", str(tmp_path / "clip.mp4"), "-s", str(style), "--codec", "ffv1",
                                      "--crf", "20", "-o", str(tmp_path / "out")])
    assert "warning: --crf applies to h264 and hevc; ffv1 is lossless" in result.output, result.output
