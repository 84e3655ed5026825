"""Run report: summary.json (counts and per-item records) and a self-contained report.html.

The page embeds its thumbnails as base64 JPEG data URIs, so it can be mailed or copied alone.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageOps

from pipeline.atomic import write_text_atomic

log = logging.getLogger(__name__)

STATES = ("done", "failed", "skipped", "refused")
THUMB = 160
RECORD_KEYS = ("id", "kind", "source", "output", "state", "reason", "warning", "seconds", "worker", "node",
               "duplicate_of")


def _video_frame(path: Path) -> Image.Image | None:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        return None
    return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def thumbnail_uri(path: Path | str | None, size: int = THUMB) -> str | None:
    """A base64 JPEG data URI of at most size x size, or None when the file cannot be shown."""
    if not path:
        return None
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        if path.suffix.lower() in {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}:
            image = _video_frame(path)
            if image is None:
                return None
        else:
            with Image.open(path) as opened:
                if opened.width * opened.height > 200_000_000:
                    return None
                opened.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
                image = ImageOps.exif_transpose(opened)
                image.load()
        if image.mode in ("RGBA", "LA", "PA", "P"):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        elif image.mode.startswith("I") or image.mode == "F":
            image = ImageOps.autocontrast(image.convert("F").convert("L"))
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    except Exception as exc:  # noqa: BLE001 - a bad file gets a placeholder, never a failed report
        log.debug("no thumbnail for %s: %s", path, exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def summarize(records: list[dict], settings: dict, started: float, finished: float) -> dict:
    counts = Counter(r.get("state", "failed") for r in records)
    return {
        "started": started,
        "finished": finished,
        "started_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(finished - started, 3),
        "counts": {**{state: counts.get(state, 0) for state in STATES}, "total": len(records)},
        "settings": settings,
        "duplicates": sum(bool(r.get("duplicate_of")) for r in records),  # outputs copied, not computed
        "records": [{key: r.get(key) for key in RECORD_KEYS} | {k: v for k, v in r.items() if k not in RECORD_KEYS}
                    for r in records],
    }


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 8px} h2{font-size:17px;margin:24px 0 8px}
.counts span{display:inline-block;margin-right:16px;padding:4px 10px;border-radius:4px;background:#eee}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:340px}
.pair{display:flex;gap:8px;align-items:flex-start}
.pair img,.pair .none{width:160px;height:auto;display:block}
.pair .none{height:120px;background:#ddd;color:#666;font-size:12px;display:flex;align-items:center;
justify-content:center}
.cap{font-size:12px;margin-top:6px;word-break:break-all}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
.failed{color:#b00020} .refused{color:#8a5a00} .skipped{color:#555}
pre{font-size:12px;background:#fff;border:1px solid #ddd;padding:8px;overflow:auto}
"""


def _img(uri: str | None, alt: str) -> str:
    if uri is None:
        return f'<div class="none">{html.escape(alt)}: no preview</div>'
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def render_html(summary: dict) -> str:
    records = summary["records"]
    counts = summary["counts"]
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>nst run report</title>",
             f"<style>{_CSS}</style></head><body>",
             "<h1>nst run report</h1>",
             f"<p>Started {esc(summary['started_iso'])}, {summary['seconds']:.1f} s in total.</p>",
             '<div class="counts">' + "".join(f"<span>{esc(state)}: {counts[state]}</span>"
                                             for state in (*STATES, "total"))
             + (f"<span>duplicates: {summary['duplicates']}</span>" if summary.get("duplicates") else "")
             + "</div>"]
    done = [r for r in records if r.get("state") in ("done", "skipped")]
    parts.append(f'<h2>Before / after ({len(done)})</h2><div class="grid" id="grid">')
    for r in done:
        seconds = r.get("seconds")
        timing = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
        where = " on ".join(str(x) for x in (r.get("worker"), r.get("node")) if x)
        note = f"<br>{esc(str(r['reason']))}" if r.get("reason") else ""
        if r.get("duplicate_of"):
            note += f"<br>duplicate of {esc(str(r['duplicate_of']))} (identical photo: its output copied)"
        parts.append(
            f'<div class="card {esc(str(r.get("state")))}"><div class="pair">'
            f'{_img(thumbnail_uri(r.get("source")), "before")}{_img(thumbnail_uri(r.get("output")), "after")}'
            f'</div><div class="cap">{esc(str(r.get("id")))} ({esc(str(r.get("state")))}) {timing} '
            f'{esc(where)}{note}</div></div>')
    parts.append("</div>")
    bad = [r for r in records if r.get("state") in ("failed", "refused") or r.get("warning")]
    parts.append(f"<h2>Failures, refusals and warnings ({len(bad)})</h2>")
    if bad:
        parts.append("<table><tr><th>state</th><th>file</th><th>reason</th></tr>")
        for r in bad:
            state = str(r.get("state")) if not r.get("warning") else "warning"
            parts.append(f'<tr class="{esc(state)}"><td>{esc(state)}</td>'
                         f'<td>{esc(str(r.get("source") or r.get("id")))}</td>'
                         f'<td>{esc(str(r.get("reason") or r.get("warning") or ""))}</td></tr>')
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    timed = [r["seconds"] for r in records if isinstance(r.get("seconds"), (int, float)) and r.get("state") == "done"]
    if timed:
        parts.append(f"<h2>Timings</h2><p>{len(timed)} items, {sum(timed):.1f} s of work, "
                     f"mean {sum(timed) / len(timed):.1f} s, slowest {max(timed):.1f} s.</p>")
    parts.append("<h2>Settings</h2><pre>" + esc(json.dumps(summary["settings"], indent=2, sort_keys=True,
                                                            default=str)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: Path, records: list[dict], settings: dict, started: float,
                 finished: float) -> tuple[Path, Path]:
    """Writes out_dir/summary.json and out_dir/report.html atomically; returns both paths."""
    out_dir = Path(out_dir)
    summary = summarize(records, settings, started, finished)
    json_path, html_path = out_dir / "summary.json", out_dir / "report.html"
    text = json.dumps(summary, indent=2, default=str, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: JSON's \u escapes keep the file valid
        text = json.dumps(summary, indent=2, default=str, ensure_ascii=True)
    write_text_atomic(json_path, text)
    page = render_html(summary).encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # U+FFFD
    write_text_atomic(html_path, page)
    log.info("report written to %s", html_path)
    return json_path, html_path
