"""summary.json and report.html: counts, reasons, embedded thumbnails, and the page as a browser draws it."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.batch.report import write_report

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
    thumbs = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(thumbs) == 4  # before and after for the two done items
    first = Image.open(io.BytesIO(base64.b64decode(thumbs[0])))
    assert first.size == (160, 120)
    assert np.abs(np.asarray(first, float)[60, 80] - SOURCE_COLOUR).max() < 12
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
    assert not list(out.glob(".*.part"))


def test_rewrite_replaces_the_report(tmp_path):
    out, records = small_run(tmp_path)
    write_report(out, records, {}, 0.0, 1.0)
    json_path, _ = write_report(out, records[:1], {}, 0.0, 1.0)
    assert json.loads(json_path.read_text())["counts"]["total"] == 1


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (scripts/ensure_chromium.sh installs it; needs root and network)")


def test_report_renders_the_grid_in_chromium(tmp_path):
    browser = _chromium()
    out, records = small_run(tmp_path)
    _, html_path = write_report(out, records, {"image": {"size": 384}}, 0.0, 10.0)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
                    html_path.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), float)
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 20  # not a blank page
    for colour in (SOURCE_COLOUR, OUTPUT_COLOUR):
        close = (np.abs(pixels - colour).max(axis=-1) < 16).sum()
        assert close > 2 * 160 * 120 * 0.8, colour  # both thumbnails of each kind are drawn


def test_file_names_that_are_not_utf8(tmp_path):
    out, records = small_run(tmp_path)
    odd = records[-1] | {"source": "/photos/caf\udce9.jpg", "id": "photos/caf\ufffd.jpg"}
    json_path, html_path = write_report(out, [*records, odd], {}, 0.0, 1.0)
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["records"][-1]["source"] == "/photos/caf\udce9.jpg"
    assert "caf\ufffd.jpg" in html_path.read_text(encoding="utf-8")
