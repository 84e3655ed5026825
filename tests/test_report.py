"""summary.json and report.html: counts, reasons, thumbnails inlined for a small run or paged from index
files for a large one, the page size at 100,000 items, and the page as a browser draws it (also live, during
a real run)."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.batch.report import CHUNK, write_report
from pipeline.batch.thumbs import ThumbPacks, pair, thumb_key

SOURCE_COLOUR = (200, 30, 160)  # magenta "before"
OUTPUT_COLOUR = (20, 160, 150)  # teal "after"


def small_run(tmp_path: Path) -> tuple[Path, list[dict]]:
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    (out / "photos").mkdir(parents=True)
    records = []
    for n in range(2):
        source, output = photos / f"p{n}.jpg", out / "photos" / f"p{n}.png"
        Image.new("RGB", (400, 300), SOURCE_COLOUR).save(source, quality=95)
        Image.new("RGB", (400, 300), OUTPUT_COLOUR).save(output)
        records.append({"id": f"photos/p{n}.jpg", "kind": "image", "source": str(source), "output": str(output),
                        "state": "done", "reason": "", "seconds": 2.5 + n, "worker": "w0", "node": "node-a"})
    (photos / "cut.jpg").write_bytes(b"\xff\xd8\xff")
    records.append({"id": "photos/cut.jpg", "kind": "image", "source": str(photos / "cut.jpg"),
                    "output": str(out / "photos" / "cut.jpg"), "state": "failed",
                    "reason": "corrupt or truncated image (<script>alert(1)</script>)", "seconds": 0.1,
                    "worker": "w0", "node": "node-a"})
    records.append({"id": "photos/notes.txt", "kind": "image", "source": str(photos / "notes.txt"),
                    "output": None, "state": "refused", "reason": "not a photo or video (extension '.txt')",
                    "seconds": 0.0, "worker": None, "node": None})
    return out, records


def test_summary_and_page_content(tmp_path):
    out, records = small_run(tmp_path)
    settings = {"image": {"size": 384}, "styles": ["starry.jpg"]}
    json_path, html_path = write_report(out, records, settings, started=1000.0, finished=1062.5)
    summary = json.loads(json_path.read_text())
    assert summary["counts"] == {"done": 2, "failed": 1, "skipped": 0, "refused": 1, "total": 4}
    assert summary["seconds"] == 62.5 and summary["settings"] == settings
    assert [r["state"] for r in summary["records"]] == ["done", "done", "failed", "refused"]
    page = html_path.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "not a photo or video" in page and "starry.jpg" in page
    thumbs = re.findall(r'"d":"data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(thumbs) == 2  # one before | after pair for each done item, inlined (a small run)
    first = np.asarray(Image.open(io.BytesIO(base64.b64decode(thumbs[0]))), float)
    assert first.shape[:2] == (120, 2 * 160 + 8)
    assert np.abs(first[60, 80] - SOURCE_COLOUR).max() < 12
    assert np.abs(first[60, 168 + 80] - OUTPUT_COLOUR).max() < 12
    assert page.index("Failures, refusals and warnings") < page.index("Before / after")
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
    assert not list(out.glob(".*.part"))


def test_rewrite_replaces_the_report(tmp_path):
    out, records = small_run(tmp_path)
    write_report(out, records, {}, 0.0, 1.0)
    json_path, _ = write_report(out, records[:1], {}, 0.0, 1.0)
    assert json.loads(json_path.read_text())["counts"]["total"] == 1


def test_page_stays_small_with_100000_items(tmp_path):
    """The page holds counts, the first problems and a pager; the gallery lives in index files."""
    out = tmp_path / "out"
    out.mkdir()
    records = [{"id": f"archive/{n // 100:04d}/IMG_{n:06d}.jpg", "kind": "image",
                "source": f"/photos/archive/{n // 100:04d}/IMG_{n:06d}.jpg",
                "output": f"{out}/archive/{n // 100:04d}/IMG_{n:06d}.jpg",
                "state": "failed" if n % 100 == 7 else "done", "reason": "corrupt" if n % 100 == 7 else "",
                "seconds": 1.25, "worker": "worker-1", "node": "node-a"} for n in range(100_000)]
    json_path, html_path = write_report(out, records, {"image": {"size": 384}}, 0.0, 3600.0)
    page = html_path.read_text()
    assert html_path.stat().st_size < 100_000, html_path.stat().st_size
    assert "done: 99000" in page and "failed: 1000" in page
    assert "Failures, refusals and warnings (1000)" in page and "800 more in summary.json" in page
    index = sorted((out / ".nst" / "report").glob("index-*.js"))
    assert len(index) == 99_000 // CHUNK
    assert max(p.stat().st_size for p in index) < 200 * CHUNK  # bytes per gallery entry, bounded
    first = index[0].read_text()
    assert first.startswith("nstChunk(0,") and "IMG_000000.jpg" in first and thumb_key(records[0]["id"]) in first
    assert json_path.stat().st_size < 400 * len(records)  # summary.json stays linear
    assert len(json.loads(json_path.read_text())["records"]) == 100_000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (scripts/ensure_chromium.sh installs it; needs root and network)")


def screenshot(page: Path, shot: Path, height: int = 900) -> np.ndarray:
    """The page as headless Chromium draws it (scripts run, local files load), as an RGB array; the virtual
    time stays below the live page's reload interval, which would otherwise start over."""
    browser = _chromium()
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={shot.parent / (shot.stem + '-profile')}", f"--screenshot={shot}",
                    f"--window-size=1200,{height}", "--virtual-time-budget=2000", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(shot).convert("RGB"), float)


def drawn(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((np.abs(pixels - colour).max(axis=-1) < 16).sum())


@pytest.mark.parametrize("self_contained", [True, False])
def test_report_renders_the_grid_in_chromium(tmp_path, self_contained):
    _chromium()
    out, records = small_run(tmp_path)
    packs = ThumbPacks(out, "r1")
    for r in records[:2]:  # as a run keeps them: one before | after JPEG per item, in a pack
        r["thumb"] = packs.add(thumb_key(r["id"]), pair(Path(r["source"]), Path(r["output"])))
    packs.flush()
    _, html_path = write_report(out, records, {"image": {"size": 384}}, 0.0, 10.0, self_contained=self_contained)
    assert ("index-00000.js" in str(list((out / ".nst" / "report").glob("*.js")))) != self_contained
    pixels = screenshot(html_path, tmp_path / "shot.png")
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 20  # not a blank page
    for colour in (SOURCE_COLOUR, OUTPUT_COLOUR):
        assert drawn(pixels, colour) > 2 * 160 * 120 * 0.8, colour  # both items' halves of each kind are drawn


def test_file_names_that_are_not_utf8(tmp_path):
    out, records = small_run(tmp_path)
    odd = records[-1] | {"source": "/photos/caf\udce9.jpg", "id": "photos/caf\ufffd.jpg"}
    json_path, html_path = write_report(out, [*records, odd], {}, 0.0, 1.0)
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["records"][-1]["source"] == "/photos/caf\udce9.jpg"
    assert "caf\ufffd.jpg" in html_path.read_text(encoding="utf-8")


def test_live_report_during_a_run_shows_finished_thumbnails_and_stops_reloading_at_the_end(tmp_path, painting):
    """A real `nst run` (Ray, 2 workers): the page written while it works reloads itself and draws a
    finished item's thumbnail in Chromium; the page left at the end no longer reloads."""
    _chromium()
    from conftest import write_png
    from test_resume import DRIVER_ENV, NST

    photos = tmp_path / "photos"
    photos.mkdir()
    for n in range(12):  # distinct bytes (identical photos would be done once), all close to the source colour
        Image.new("RGB", (320, 240), (*SOURCE_COLOUR[:2], SOURCE_COLOUR[2] - n)).save(photos / f"p{n:02d}.png")
    style = write_png(tmp_path / "style.png", painting)
    out = tmp_path / "out"
    driver = subprocess.Popen([str(NST), "run", str(photos), "--style", str(style), "-o", str(out), "--size", "48",
                               "-n", "40", "--scales", "1", "--workers", "2", "--quiet"], env=DRIVER_ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    live = out / "live-copy.html"  # beside the page, so its relative paths hold
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            try:
                page = (out / "report.html").read_text()
            except FileNotFoundError:
                page = ""
            if 'http-equiv="refresh"' in page and "Latest finished" in page:
                live.write_text(page)  # as the browser would load it at this moment
                break
            time.sleep(0.1)
        assert live.is_file(), "no live page with a finished item while the run worked"
        pixels = screenshot(live, tmp_path / "live.png", height=1400)
        assert drawn(pixels, SOURCE_COLOUR) > 160 * 120 * 0.8  # a finished item's "before" half
        assert "running" in live.read_text() and "remaining: " in live.read_text()
        assert driver.wait(timeout=600) == 0, driver.stdout.read().decode(errors="replace")[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    final = (out / "report.html").read_text()
    assert 'http-equiv="refresh"' not in final and "Finished" in final and "done: 12" in final
    pixels = screenshot(out / "report.html", tmp_path / "final.png", height=1400)
    assert drawn(pixels, SOURCE_COLOUR) > 4 * 160 * 120 * 0.8


def test_a_live_rewrite_writes_only_what_changed(tmp_path):
    """The live page is bounded and of the gallery index only the file that gained entries is written again."""
    from pipeline.batch.report import LiveReport

    out = tmp_path / "out"
    out.mkdir()
    refused = [{"id": "x.txt", "source": "/in/x.txt", "state": "refused", "reason": "not a photo or video"}]
    live = LiveReport(out, {}, time.time(), 10_000, 0, refused)
    live.start_clock()

    def finish(n: int) -> None:
        live.add({"id": f"a/{n:05d}.jpg", "kind": "image", "source": f"/in/a/{n:05d}.jpg", "state": "done",
                  "seconds": 1.0, "worker": "worker-0", "node": "n"})

    for n in range(3 * CHUNK + 500):
        finish(n)
    live.tick(force=True)
    index = sorted((out / ".nst" / "report").glob("index-*.js"))
    assert len(index) == 4
    inodes = {p: p.stat().st_ino for p in index}  # an atomic rewrite replaces the file: a new inode
    for n in range(3 * CHUNK + 500, 3 * CHUNK + 510):
        finish(n)
    live.tick(force=True)
    assert [p.name for p in index if p.stat().st_ino != inodes[p]] == ["index-00003.js"]
    page = (out / "report.html").read_text()
    assert len(page) < 30_000 and 'http-equiv="refresh"' in page
    assert "remaining: 6490" in page and "a/03509.jpg" in page and "not a photo or video" in page
    assert "a/00000.jpg" not in page  # the page names only the latest; the index holds the rest
