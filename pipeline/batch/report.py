"""Run report: summary.json (counts and per-item records) and report.html, small at any size.

The page lists the failures, refusals and warnings first, then pages through a before/after
gallery whose entries live in index files beside the ledger (``.nst/report/index-NNNN.js``, loaded
with <script> tags: browsers allow those for a page opened from disk, unlike fetch). Thumbnails
are made once by the workers and kept in packs under ``.nst/thumbs`` (pipeline.batch.thumbs), loaded
the same way for the entries shown; nothing here decodes a photo, except for a run of at most
SELF_CONTAINED items, whose page inlines its thumbnails and index so it can be mailed or copied alone.

While a run works, LiveReport rewrites the page every few seconds: counts, ETA, the latest
finished thumbnails and each video's latest finished frame; the page reloads itself until the
final write, which drops the reload.
"""
from __future__ import annotations

import html
import json
import logging
import time
from collections import Counter, deque
from pathlib import Path

from pipeline.atomic import write_text_atomic
from pipeline.batch.files import write_atomic
from pipeline.batch.ledger import state_dir
from pipeline.batch.status import duration
from pipeline.batch.thumbs import ThumbPacks, data_uri, pair, read_pack, thumb_key

log = logging.getLogger(__name__)

STATES = ("done", "failed", "skipped", "refused")
RECORD_KEYS = ("id", "kind", "source", "output", "state", "reason", "warning", "seconds", "worker", "node",
               "duplicate_of")
CHUNK = 1000  # gallery entries per index file
PER_PAGE = 60  # gallery entries drawn at a time
SELF_CONTAINED = 100  # items: up to this, the final page carries its thumbnails and index inline
PROBLEMS_SHOWN = 200  # failures and warnings listed on the page; summary.json has them all
LATEST = 12  # thumbnails of the latest finished items on the live page
LIVE_SECONDS = 3.0  # at most one live rewrite per interval; the page reloads itself as often


def index_dir(out_dir: Path) -> Path:
    return state_dir(out_dir) / "report"


def summarize(records: list[dict], settings: dict, started: float, finished: float,
              passed_over: dict[str, int] | None = None) -> dict:
    counts = Counter(r.get("state", "failed") for r in records)
    return {
        "started": started,
        "finished": finished,
        "started_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(finished - started, 3),
        "counts": {**{state: counts.get(state, 0) for state in STATES}, "total": len(records)},
        "settings": settings,
        "duplicates": sum(bool(r.get("duplicate_of")) for r in records),  # outputs copied, not computed
        # files met in folders and deliberately left alone (no record each: an archive has thousands)
        "passed_over": dict(passed_over or {}),
        "records": [{key: r.get(key) for key in RECORD_KEYS} | {k: v for k, v in r.items() if k not in RECORD_KEYS}
                    for r in records],
    }


def entry(record: dict) -> dict:
    """An item as the gallery shows it, in a few short keys (the index holds one per item)."""
    e: dict = {"i": record["id"], "s": record.get("state")}
    if record.get("state") in ("done", "skipped"):
        e["k"] = thumb_key(record.get("duplicate_of") or record["id"])
        if record.get("thumb"):
            e["p"] = record["thumb"]
    seconds = record.get("seconds")
    if isinstance(seconds, (int, float)) and seconds:
        e["t"] = round(seconds, 1)
    if record.get("duplicate_of"):
        e["n"] = f"duplicate of {record['duplicate_of']} (identical photo: its output copied)"
    elif record.get("state") == "done" and record.get("reason"):
        e["n"] = str(record["reason"])
    if record.get("warning"):
        e["w"] = str(record["warning"])
    if record.get("worker"):
        e["o"] = " on ".join(str(x) for x in (record.get("worker"), record.get("node")) if x)
    return e


def problem(record: dict) -> dict | None:
    """A failure, refusal or warning as the page's first table shows it."""
    state = record.get("state")
    if record.get("warning") and state in ("done", "skipped"):
        return {"state": "warning", "file": str(record.get("source") or record.get("id")),
                "reason": str(record["warning"])}
    if state in ("failed", "refused"):
        return {"state": state, "file": str(record.get("source") or record.get("id")),
                "reason": str(record.get("reason") or "")}
    return None


def _js(value: object) -> str:
    """JSON safe inside a <script> element, and valid UTF-8 whatever the file names' bytes."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
    return text.replace("</", "<\\/")


def write_index(out_dir: Path, entries: list[dict], first_chunk: int = 0, sync: bool = True) -> int:
    """Writes the index files from chunk ``first_chunk`` on; returns the number of index files."""
    folder = index_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    chunks = max(1, -(-len(entries) // CHUNK))
    for n in range(first_chunk, chunks):
        text = f"nstChunk({n},{_js(entries[n * CHUNK:(n + 1) * CHUNK])});\n"
        write_atomic(folder / f"index-{n:05d}.js", text.encode("ascii"), sync=sync)
    return chunks


def drop_stale_index(out_dir: Path, chunks: int) -> None:
    """Index files of an earlier, longer gallery (the page would never ask for them, but they mislead)."""
    folder = index_dir(out_dir)
    if folder.is_dir():
        for path in folder.glob("index-*.js"):
            try:
                if int(path.stem.split("-")[1]) >= chunks:
                    path.unlink(missing_ok=True)
            except (ValueError, IndexError):
                continue


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 8px} h2{font-size:17px;margin:24px 0 8px}
.counts span{display:inline-block;margin:0 12px 6px 0;padding:4px 10px;border-radius:4px;background:#eee}
.live{color:#0a5;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:328px}
.card img,.card .none{display:block;max-width:328px}
.card .none{height:120px;background:#ddd;color:#666;font-size:12px;display:flex;align-items:center;
justify-content:center}
.cap{font-size:12px;margin-top:6px;word-break:break-all}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
.failed{color:#b00020} .refused{color:#8a5a00} .warning{color:#8a5a00} .skipped{color:#555}
pre{font-size:12px;background:#fff;border:1px solid #ddd;padding:8px;overflow:auto}
.pager button{margin-right:8px}
"""

# Draws one page of the gallery from the index files, loading each file once, when first needed.
_GALLERY_JS = """
const R = JSON.parse(document.getElementById('nst-meta').textContent);
const loaded = {}, packs = {}; let page = 0;
function nstChunk(n, entries) { loaded[n] = entries; draw(); }
function nstThumbs(p, thumbs) { packs[p] = thumbs; fill(); }
function script(src, failed) { const s = document.createElement('script'); s.src = src; s.onerror = failed;
  document.body.appendChild(s); }
function needPack(p) { if (p in packs) return; packs[p] = null;
  script('.nst/thumbs/' + p + '.js', () => { packs[p] = {}; fill(); }); }
function fill() {
  document.querySelectorAll('img[data-p]').forEach(img => {
    const thumbs = packs[img.dataset.p];
    if (!thumbs) return;
    if (thumbs[img.dataset.k]) { img.src = thumbs[img.dataset.k]; img.removeAttribute('data-p'); }
    else img.outerHTML = '<div class="none">no preview</div>';
  });
}
function esc(s) { const d = document.createElement('div'); d.textContent = s; return d.innerHTML; }
function card(e) {
  const img = e.d ? '<img src="' + e.d + '" alt="before | after">'
    : e.p ? '<img data-p="' + esc(e.p) + '" data-k="' + esc(e.k) + '" alt="before | after">'
    : '<div class="none">no preview</div>';
  return '<div class="card ' + esc(e.s) + '">' + img + '<div class="cap">' + esc(e.i) + ' (' + esc(e.s) + ')' +
    (e.t ? ' ' + e.t + ' s' : '') + (e.o ? ' ' + esc(e.o) : '') + (e.n ? '<br>' + esc(e.n) : '') +
    (e.w ? '<br>warning: ' + esc(e.w) : '') + '</div></div>';
}
function draw() {
  const first = page * R.per, last = Math.min(R.total, first + R.per);
  let ready = true;
  for (let n = Math.floor(first / R.chunk); R.total && n <= Math.floor(Math.max(first, last - 1) / R.chunk); n++) {
    if (loaded[n] === undefined) {
      loaded[n] = null;
      script('.nst/report/index-' + String(n).padStart(5, '0') + '.js', null);
    }
    if (!loaded[n]) ready = false;
  }
  if (!ready) return;
  const out = [], shown = [];
  for (let i = first; i < last; i++) { const c = loaded[Math.floor(i / R.chunk)]; if (c) shown.push(c[i % R.chunk]); }
  document.getElementById('grid').innerHTML = shown.map(card).join('');
  shown.forEach(e => { if (e.p && !e.d) needPack(e.p); });
  fill();
  document.getElementById('where').textContent = R.total ? (first + 1) + '-' + last + ' of ' + R.total : 'none yet';
}
function go(delta) { const pages = Math.max(1, Math.ceil(R.total / R.per));
  page = Math.min(pages - 1, Math.max(0, page + delta)); draw(); }
if (R.inline) { loaded[0] = R.inline; }
draw();
"""


def _card(e: dict) -> str:
    esc = html.escape
    src = e.get("d")
    img = f'<img src="{esc(src)}" alt="before | after">' if src else '<div class="none">no preview</div>'
    extra = f"<br>{esc(e['n'])}" if e.get("n") else ""
    return (f'<div class="card {esc(str(e.get("s")))}">{img}<div class="cap">{esc(str(e["i"]))} '
            f'({esc(str(e.get("s")))}){extra}</div></div>')


def render_page(*, counts: dict, total: int, started: float, now: float, settings: dict, problems: list[dict],
                problem_count: int, gallery_total: int, inline: list[dict] | None = None, live: bool = False,
                eta: float | None = None, latest: list[dict] | None = None, videos: list[dict] | None = None,
                timings: tuple[int, float, float] | None = None, duplicates: int = 0, stopped: str = "") -> str:
    """The page: a bounded amount of HTML whatever the number of items."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>nst run report</title>"]
    if live:
        parts.append(f'<meta http-equiv="refresh" content="{int(LIVE_SECONDS)}">')
    parts += [f"<style>{_CSS}</style></head><body>", "<h1>nst run report</h1>"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    if stopped:
        parts.append(f'<p class="failed">Stopped: {esc(stopped)}</p>')
    elif live:
        parts.append(f'<p><span class="live">running</span>: started {esc(when)}, {duration(now - started)} so far'
                     + (f"; about {duration(eta)} left" if eta is not None else "; time left unknown until "
                                                                                    "something finishes")
                     + " (this page reloads itself)</p>")
    else:
        parts.append(f"<p>Finished: started {esc(when)}, {now - started:.1f} s in total.</p>")
    shown = [*STATES] + (["remaining"] if live else []) + ["total"]
    parts.append('<div class="counts">' + "".join(f"<span>{esc(s)}: {counts.get(s, 0)}</span>" for s in shown)
                 + (f"<span>duplicates: {duplicates}</span>" if duplicates else "") + "</div>")
    parts.append(f"<h2>Failures, refusals and warnings ({problem_count})</h2>")
    if problems:
        parts.append("<table><tr><th>state</th><th>file</th><th>reason</th></tr>")
        for p in problems[:PROBLEMS_SHOWN]:
            parts.append(f'<tr class="{esc(p["state"])}"><td>{esc(p["state"])}</td><td>{esc(p["file"])}</td>'
                         f'<td>{esc(p["reason"])}</td></tr>')
        parts.append("</table>")
        if problem_count > PROBLEMS_SHOWN:
            parts.append(f"<p>{problem_count - PROBLEMS_SHOWN} more in summary.json.</p>")
    else:
        parts.append("<p>None.</p>")
    if videos:
        parts.append("<h2>Videos in progress</h2><div class=\"grid\">")
        for v in videos:
            parts.append(_card({"i": v["id"], "s": f"{v['done']} of {v['frames']} frames", "d": v.get("d")}))
        parts.append("</div>")
    if live and latest:
        parts.append(f"<h2>Latest finished ({len(latest)})</h2><div class=\"grid\" id=\"latest\">"
                     + "".join(_card(e) for e in reversed(latest)) + "</div>")
    meta = {"total": gallery_total, "chunk": CHUNK, "per": PER_PAGE, "inline": inline}
    parts.append(f"<h2>Before / after ({gallery_total})</h2>"
                 '<div class="pager"><button onclick="go(-1)">previous</button><button onclick="go(1)">next</button>'
                 '<span id="where"></span></div><div class="grid" id="grid"></div>'
                 f'<script type="application/json" id="nst-meta">{_js(meta)}</script><script>{_GALLERY_JS}</script>')
    if timings and timings[0]:
        n, total_s, slowest = timings
        parts.append(f"<h2>Timings</h2><p>{n} items, {total_s:.1f} s of work, mean {total_s / n:.1f} s, "
                     f"slowest {slowest:.1f} s.</p>")
    parts.append("<h2>Settings</h2><pre>" + esc(json.dumps(settings, indent=2, sort_keys=True, default=str))
                 + "</pre></body></html>")
    return "\n".join(parts)


def write_page(path: Path, page: str, sync: bool = True) -> None:
    # A file name whose bytes are not UTF-8 shows as U+FFFD on the page (summary.json keeps it exactly).
    write_atomic(path, page.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8"), sync=sync)


def _timings(records: list[dict]) -> tuple[int, float, float]:
    timed = [r["seconds"] for r in records if isinstance(r.get("seconds"), (int, float)) and r.get("state") == "done"]
    return len(timed), float(sum(timed)), float(max(timed, default=0.0))


def _inline_thumb(out_dir: Path, record: dict, e: dict, packs: dict[str, dict[str, str]]) -> None:
    """A small run's thumbnail as a data URI: from its pack, else made from the files now."""
    if "k" not in e:
        return
    if e.get("p") and e["p"] not in packs:
        packs[e["p"]] = read_pack(out_dir, e["p"])
    uri = packs.get(e.get("p"), {}).get(e["k"])
    if uri is None:
        data = pair(Path(record["source"]) if record.get("source") else None,
                    Path(record["output"]) if record.get("output") else None)
        uri = data_uri(data) if data else None
    if uri:
        e["d"] = uri
        e.pop("p", None)


def write_report(out_dir: Path, records: list[dict], settings: dict, started: float, finished: float,
                 self_contained: bool | None = None, passed_over: dict[str, int] | None = None) -> tuple[Path, Path]:
    """Writes out_dir/summary.json, the gallery index and out_dir/report.html atomically; returns
    (summary.json, report.html). ``self_contained`` (default: for at most SELF_CONTAINED items)
    inlines the thumbnails and the index into the page. ``passed_over``: counts of files left alone."""
    out_dir = Path(out_dir)
    summary = summarize(records, settings, started, finished, passed_over)
    json_path, html_path = out_dir / "summary.json", out_dir / "report.html"
    text = json.dumps(summary, indent=1, default=str, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: JSON's \u escapes keep the file valid
        text = json.dumps(summary, indent=1, default=str, ensure_ascii=True)
    write_text_atomic(json_path, text)
    shown = [r for r in records if r.get("state") in ("done", "skipped")]
    entries = [entry(r) for r in shown]
    inline = None
    if self_contained if self_contained is not None else len(records) <= SELF_CONTAINED:
        packs: dict[str, dict[str, str]] = {}
        for record, e in zip(shown, entries):
            _inline_thumb(out_dir, record, e, packs)
        inline = entries
        drop_stale_index(out_dir, 0)
    else:
        drop_stale_index(out_dir, write_index(out_dir, entries))
    problems = [p for p in map(problem, records) if p is not None]
    page = render_page(counts=summary["counts"], total=len(records), started=started, now=finished,
                       settings=settings, problems=problems[:PROBLEMS_SHOWN], problem_count=len(problems),
                       gallery_total=len(entries), inline=inline, timings=_timings(records),
                       duplicates=summary["duplicates"])
    write_page(html_path, page)
    log.info("report written to %s", html_path)
    return json_path, html_path


class LiveReport:
    """report.html while a run works, rewritten at most every LIVE_SECONDS.

    Each rewrite costs what changed since the last one: the page itself is bounded (counts, the
    latest LATEST thumbnails, at most PROBLEMS_SHOWN problems), and of the gallery index only the
    files holding new entries are written again (entries are appended in finishing order).
    """

    def __init__(self, out_dir: Path, settings: dict, started: float, todo: int, skipped: int,
                 refused: list[dict], interval: float = LIVE_SECONDS, packs: ThumbPacks | None = None) -> None:
        self.out_dir, self.settings, self.started, self.interval = Path(out_dir), settings, started, interval
        self.packs = packs if packs is not None else ThumbPacks(self.out_dir, f"t{int(started)}")
        self.latest: deque[dict] = deque(maxlen=LATEST)  # gallery entries with their thumbnails inline
        self.todo = todo
        self.counts: Counter = Counter({"skipped": skipped, "refused": len(refused)})
        self.problems: list[dict] = [p for p in map(problem, refused[:PROBLEMS_SHOWN]) if p is not None]
        self.problem_count = len(refused)
        self.entries: list[dict] = []
        self.written = 0  # entries already in index files
        self.videos: dict[str, dict] = {}
        self.timed: tuple[int, float, float] = (0, 0.0, 0.0)
        self.loop_started: float | None = None
        self.finished_now = 0
        self.last = 0.0
        self.duplicates = 0
        self.stopped = ""

    def add(self, record: dict, thumb: bytes | None = None) -> None:
        """An item of this run finished (done or failed); ``thumb``: its thumbnail, for the latest shown."""
        state = record.get("state", "failed")
        self.counts[state] += 1
        self.finished_now += 1
        self.duplicates += bool(record.get("duplicate_of"))
        p = problem(record)
        if p is not None:
            self.problem_count += 1
            if len(self.problems) < PROBLEMS_SHOWN:
                self.problems.append(p)
        seconds = record.get("seconds")
        if state == "done" and isinstance(seconds, (int, float)):
            n, total, slowest = self.timed
            self.timed = (n + 1, total + seconds, max(slowest, seconds))
        self.videos.pop(record["id"], None)
        if state == "done":
            e = entry(record)
            self.entries.append(e)
            self.latest.append({**e, "d": data_uri(thumb)} if thumb else e)

    def video(self, item_id: str, done: int, frames: int, thumb: bytes | None = None) -> None:
        """A video's chain moved on; ``thumb``: its latest finished frame."""
        self.videos[item_id] = {"id": item_id, "done": done, "frames": frames,
                                "d": data_uri(thumb) if thumb else self.videos.get(item_id, {}).get("d")}

    def start_clock(self) -> None:
        """Work begins (after the workers loaded the model): the ETA counts from here."""
        self.loop_started = time.time()

    def eta(self, now: float) -> float | None:
        if not self.finished_now or self.loop_started is None:
            return None
        rate = self.finished_now / max(1e-6, now - self.loop_started)
        return max(0, self.todo - self.finished_now) / rate

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        try:
            self._write(now)
        except OSError as exc:  # the page is a view; the run and its outputs go on without it
            log.warning("cannot write the live report in %s (%s)", self.out_dir, exc.strerror or exc)

    def stop(self, reason: str) -> None:
        """The run ended without its final report (e.g. the ledger could not be written): the page says
        so and stops reloading."""
        self.stopped = reason
        self.tick(force=True)

    def _write(self, now: float) -> None:
        self.packs.flush()  # the gallery's entries name the pack being filled
        if len(self.entries) > self.written or not self.written:
            write_index(self.out_dir, self.entries, self.written // CHUNK, sync=False)
            self.written = len(self.entries)
        counts = dict(self.counts)
        counts["remaining"] = max(0, self.todo - self.finished_now)
        counts["total"] = self.todo + self.counts["skipped"] + self.counts["refused"]
        page = render_page(counts=counts, total=counts["total"], started=self.started, now=now,
                           settings=self.settings, problems=self.problems, problem_count=self.problem_count,
                           gallery_total=len(self.entries), live=not self.stopped, eta=self.eta(now),
                           latest=list(self.latest), videos=list(self.videos.values()), timings=self.timed,
                           duplicates=self.duplicates, stopped=self.stopped)
        # A live view, rewritten every few seconds: not synced (the final page is).
        write_page(self.out_dir / "report.html", page, sync=False)
