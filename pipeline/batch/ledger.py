"""Run state in SQLite inside the output folder: the single source of truth for resume and status.

One driver writes (guarded by a lock file); ``nst status`` may read at the same time, which is
why the database runs in WAL mode with a busy timeout. Rows are keyed by the item's stable id;
an item done under another config hash is redone, and a "running" row left by a killed driver
is pending again on the next run.

A driver's ledger may batch its writes (``batch_seconds``): the item loop's updates wait in memory
and go in one transaction every interval. That is safe because the driver records a result only
after its file is in place: an update lost with a killed driver leaves the item pending or running,
and the rerun redoes it (atomically replacing the file), never the reverse. A write the disk
refuses (full, quota, read-only) raises LedgerError, one line naming the file and the reason.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import NstError

log = logging.getLogger(__name__)


def _text(path: Path | str) -> str:
    """A path as valid UTF-8 text for SQLite: undecodable bytes of a file name become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")

BATCH_ROWS = 2000  # a batch is written at the latest after this many updates


class LedgerError(NstError):
    """The ledger cannot be written: the run must stop, keeping what is already recorded."""


STATE_DIR = ".nst"
DB_NAME = "ledger.sqlite"
LOCK_NAME = "driver.lock"
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STATES = (PENDING, RUNNING, DONE, FAILED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash TEXT NOT NULL,
    settings TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    pid INTEGER,
    host TEXT,
    workers INTEGER,
    status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    output TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    worker TEXT,
    node TEXT,
    pid INTEGER,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    units INTEGER NOT NULL DEFAULT 1,
    config_hash TEXT NOT NULL,
    run_id INTEGER,
    warning TEXT,
    content_hash TEXT,
    duplicate_of TEXT,
    thumb TEXT,
    source_identity TEXT
);
CREATE TABLE IF NOT EXISTS segments (
    item TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    shot_start INTEGER NOT NULL DEFAULT 0,
    reverse INTEGER NOT NULL DEFAULT 0,
    done_frames INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    worker TEXT,
    node TEXT,
    pid INTEGER,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    config_hash TEXT NOT NULL,
    PRIMARY KEY (item, idx)
);
"""


def state_dir(out_dir: Path) -> Path:
    return Path(out_dir) / STATE_DIR


def db_path(out_dir: Path) -> Path:
    return state_dir(out_dir) / DB_NAME


@dataclass(frozen=True)
class SegmentSpec:
    """Frames [start, stop) of one video; shot_start says where its shot begins (for the seam blend)."""

    idx: int
    start: int
    stop: int
    shot_start: int = 0
    reverse: bool = False  # propagates from its last frame (a key frame) towards its first


class Ledger:
    """Thin, explicit wrapper over the SQLite file; every method commits before it returns, except
    the item updates of a batching ledger (``batch_seconds`` > 0), which ``flush`` commits."""

    def __init__(self, out_dir: Path, readonly: bool = False, batch_seconds: float = 0.0) -> None:
        self.out_dir = Path(out_dir)
        self.path = db_path(self.out_dir)
        self.batch_seconds = batch_seconds
        self.pending: list[tuple[str, tuple]] = []
        self.flushed_at = time.monotonic()
        self.broken: LedgerError | None = None
        if readonly:
            if not self.path.is_file():
                raise NstError(f"{self.out_dir}: no run state here ({self.path} not found)")
            uri = f"file:{quote(os.fsencode(self.path))}?mode=ro"  # a '?' or '#' in a folder's name stays a name
            if not os.access(self.path.parent, os.W_OK):
                # a finished run on read-only media: SQLite cannot make the files a reader of a
                # WAL database shares, and nothing can change the file there
                uri += "&immutable=1"
            self.conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
                self._upgrade()
            except (OSError, sqlite3.Error) as exc:
                raise self._fail(exc) from None
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.row_factory = sqlite3.Row

    def _upgrade(self) -> None:
        """Run state written by an earlier version: its segments ran forward, in one piece, and its
        items carry no warnings."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(segments)")}
        for column in ("reverse", "done_frames"):
            if column not in columns:
                self.conn.execute(f"ALTER TABLE segments ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
        item_columns = {row[1] for row in self.conn.execute("PRAGMA table_info(items)")}
        for column in ("warning", "content_hash", "duplicate_of", "thumb", "source_identity"):
            if column not in item_columns:
                self.conn.execute(f"ALTER TABLE items ADD COLUMN {column} TEXT")
        self.conn.execute("CREATE INDEX IF NOT EXISTS items_content ON items (content_hash, config_hash, state)")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, exc: BaseException) -> LedgerError:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.broken = LedgerError(f"{self.path}: cannot write the run ledger ({reason}); what it recorded "
                                  f"before stands: free some space and rerun the same command to finish")
        return self.broken

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                self.conn.execute("ROLLBACK")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction, after the batched updates still waiting (they happened first)."""
        if self.broken is not None:
            raise self.broken
        pending, self.pending = self.pending, []
        self.flushed_at = time.monotonic()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for sql, params in pending:
                self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            self._rollback()
            raise self._fail(exc) from None
        try:
            yield self.conn
        except sqlite3.Error as exc:
            self._rollback()
            raise self._fail(exc) from None
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._fail(exc) from None

    def _write(self, sql: str, params: tuple) -> bool:
        """Runs an update now, or queues it in a batching ledger; True when it ran now."""
        if self.batch_seconds <= 0:
            with self.transaction() as conn:
                conn.execute(sql, params)
            return True
        self.pending.append((sql, params))
        if len(self.pending) >= BATCH_ROWS or time.monotonic() - self.flushed_at >= self.batch_seconds:
            self.flush()
        return False

    def flush(self) -> None:
        """Commits the batched updates in one transaction."""
        if self.pending:
            with self.transaction():
                pass

    def flush_due(self) -> None:
        """Commits the batched updates once the interval has passed (the driver's idle moments)."""
        if self.pending and time.monotonic() - self.flushed_at >= self.batch_seconds:
            self.flush()

    def journal_mode(self) -> str:
        return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])

    # ------------------------------------------------------------------ runs
    def start_run(self, config_hash: str, settings: dict, workers: int = 0) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO runs (config_hash, settings, started, pid, host, workers) VALUES (?, ?, ?, ?, ?, ?)",
                (config_hash, json.dumps(settings, sort_keys=True, default=str), time.time(), os.getpid(),
                 socket.gethostname(), workers))
            return int(cur.lastrowid)

    def set_run_workers(self, run_id: int, workers: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET workers = ? WHERE id = ?", (workers, run_id))

    def finish_run(self, run_id: int, status: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET finished = ?, status = ? WHERE id = ?", (time.time(), status, run_id))

    def last_run(self) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()

    # ------------------------------------------------------------------ items
    def recover_stale(self) -> int:
        """Rows left "running" by a driver that is gone become pending (their work is redone)."""
        with self.transaction() as conn:
            n = conn.execute("UPDATE items SET state = 'pending' WHERE state = 'running'").rowcount
            n += conn.execute("UPDATE segments SET state = 'pending' WHERE state = 'running'").rowcount
        if n:
            log.info("%d unfinished rows from an interrupted run are pending again", n)
        return n

    def upsert_item(self, item_id: str, kind: str, source: Path, output: Path, config_hash: str,
                    units: int = 1, force: bool = False) -> str:
        """Registers an item for this run and returns its state after reconciliation.

        Same config hash and done: stays done (skipped). Same hash and failed: pending again with
        fresh counters; its finished video segments are kept, the others start over. Another hash
        or ``force``: pending from scratch, old segments dropped (a new style must not mix in).
        """
        with self.transaction() as conn:
            return self._upsert(conn, item_id, kind, source, output, config_hash, units, force)

    def upsert_items(self, entries: Iterable[tuple[str, str, Path, Path, bool]], config_hash: str) -> None:
        """upsert_item for (id, kind, source, output, force) of a whole run, in one transaction."""
        with self.transaction() as conn:
            for item_id, kind, source, output, force in entries:
                self._upsert(conn, item_id, kind, source, output, config_hash, 1, force)

    def _upsert(self, conn: sqlite3.Connection, item_id: str, kind: str, source: Path, output: Path,
                config_hash: str, units: int, force: bool) -> str:
        row = conn.execute("SELECT state, config_hash FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO items (id, kind, source, output, state, units, config_hash) "
                         "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                         (item_id, kind, _text(source), str(output), units, config_hash))
            return PENDING
        same = row["config_hash"] == config_hash
        if same and row["state"] == DONE and not force:
            conn.execute("UPDATE items SET source = ?, output = ? WHERE id = ?",
                         (_text(source), str(output), item_id))
            return DONE
        if same and not force and row["state"] != FAILED:
            # pending (or stale running): keep attempts and any finished segments
            conn.execute("UPDATE items SET state = 'pending', source = ?, output = ?, kind = ?, units = ? "
                         "WHERE id = ?", (_text(source), str(output), kind, units, item_id))
            return PENDING
        conn.execute("UPDATE items SET kind = ?, source = ?, output = ?, state = 'pending', attempts = 0, "
                     "error = NULL, worker = NULL, node = NULL, pid = NULL, started_at = NULL, "
                     "finished_at = NULL, seconds = NULL, units = ?, config_hash = ?, duplicate_of = NULL "
                     "WHERE id = ?",
                     (kind, _text(source), str(output), units, config_hash, item_id))
        if same and not force:  # failed under these settings: redo only what did not finish
            conn.execute("UPDATE segments SET state = 'pending', attempts = 0, error = NULL "
                         "WHERE item = ? AND state != 'done'", (item_id,))
        else:
            conn.execute("DELETE FROM segments WHERE item = ?", (item_id,))
        return PENDING

    def item(self, item_id: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()

    def rows(self) -> dict[str, sqlite3.Row]:
        """Every item's row by id, in one query (planning and the report read them all)."""
        return {row["id"]: row for row in self.conn.execute("SELECT * FROM items")}

    def items(self, state: str | None = None) -> list[sqlite3.Row]:
        if state is None:
            return self.conn.execute("SELECT * FROM items ORDER BY id").fetchall()
        return self.conn.execute("SELECT * FROM items WHERE state = ? ORDER BY id", (state,)).fetchall()

    def mark_running(self, item_id: str, run_id: int | None = None) -> None:
        self._write("UPDATE items SET state = 'running', started_at = COALESCE(started_at, ?), run_id = ?, "
                    "pid = ? WHERE id = ?", (time.time(), run_id, os.getpid(), item_id))

    def mark_attempt(self, item_id: str, worker: str, node: str) -> int | None:
        """One more attempt at an item on a worker; returns the attempt number (None while batched)."""
        if self._write("UPDATE items SET state = 'running', attempts = attempts + 1, worker = ?, node = ?, "
                       "started_at = COALESCE(started_at, ?) WHERE id = ?", (worker, node, time.time(), item_id)):
            return int(self.conn.execute("SELECT attempts FROM items WHERE id = ?", (item_id,)).fetchone()[0])
        return None

    def mark_done(self, item_id: str, worker: str | None, node: str | None, seconds: float,
                  worker_pid: int | None = None, thumb: str | None = None) -> None:
        """``thumb``: the thumbnail pack holding its preview (pipeline.batch.thumbs)."""
        self._write("UPDATE items SET state = 'done', error = NULL, worker = COALESCE(?, worker), "
                    "node = COALESCE(?, node), pid = COALESCE(?, pid), finished_at = ?, seconds = ?, "
                    "duplicate_of = NULL, thumb = ? WHERE id = ?",
                    (worker, node, worker_pid, time.time(), seconds, thumb, item_id))

    def set_thumb(self, item_id: str, thumb: str | None) -> None:
        self._write("UPDATE items SET thumb = ? WHERE id = ?", (thumb, item_id))

    def set_source_identities(self, entries: Iterable[tuple[str, str | None]]) -> None:
        """(item id, source identity as planning.source_identity makes it); None leaves the one known."""
        values = [(identity, item_id) for item_id, identity in entries if identity is not None]  # reads first
        with self.transaction() as conn:
            conn.executemany("UPDATE items SET source_identity = ? WHERE id = ?", values)

    def set_content_hash(self, item_id: str, content_hash: str | None) -> None:
        self._write("UPDATE items SET content_hash = ? WHERE id = ?", (content_hash, item_id))

    def done_with_content(self, content_hash: str, config_hash: str) -> list[sqlite3.Row]:
        """Items done under ``config_hash`` from a source with these bytes, oldest first."""
        return self.conn.execute("SELECT * FROM items WHERE content_hash = ? AND config_hash = ? AND state = 'done' "
                                 "ORDER BY finished_at", (content_hash, config_hash)).fetchall()

    def mark_duplicate(self, item_id: str, of: str, thumb: str | None = None) -> None:
        """Done without computing: its output is a copy of ``of``'s (same source bytes, same settings)."""
        self._write("UPDATE items SET state = 'done', error = NULL, worker = NULL, node = NULL, pid = NULL, "
                    "finished_at = ?, seconds = 0, duplicate_of = ?, thumb = ? WHERE id = ?",
                    (time.time(), of, thumb, item_id))

    def set_warning(self, item_id: str, warning: str | None) -> None:
        """Something the user must know about a finished item (e.g. frames lost to a damaged file)."""
        self._write("UPDATE items SET warning = ? WHERE id = ?", (warning, item_id))

    def mark_failed(self, item_id: str, reason: str, worker: str | None = None, node: str | None = None) -> None:
        self._write("UPDATE items SET state = 'failed', error = ?, worker = COALESCE(?, worker), "
                    "node = COALESCE(?, node), finished_at = ? WHERE id = ?", (reason, worker, node, time.time(), item_id))

    def mark_pending(self, item_id: str, reason: str | None = None) -> None:
        self._write("UPDATE items SET state = 'pending', error = ? WHERE id = ?", (reason, item_id))

    # ------------------------------------------------------------------ video segments
    def set_segments(self, item_id: str, specs: Iterable[SegmentSpec], config_hash: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM segments WHERE item = ?", (item_id,))
            conn.executemany("INSERT INTO segments (item, idx, start, stop, shot_start, reverse, config_hash) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(item_id, s.idx, s.start, s.stop, s.shot_start, int(s.reverse), config_hash)
                              for s in specs])

    def segments(self, item_id: str) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM segments WHERE item = ? ORDER BY idx", (item_id,)).fetchall()

    def segment_specs(self, item_id: str) -> list[SegmentSpec]:
        rows = self.segments(item_id)
        # sqlite3.Row: `in` looks at the values, keys() at the column names (older run state lacks reverse)
        has_reverse = bool(rows) and "reverse" in rows[0].keys()  # noqa: SIM118
        return [SegmentSpec(r["idx"], r["start"], r["stop"], r["shot_start"],
                            bool(r["reverse"]) if has_reverse else False) for r in rows]

    def mark_segment_attempt(self, item_id: str, idx: int, worker: str, node: str, attempt: int = 1) -> int | None:
        """A chunk of the segment was sent; ``attempts`` keeps the most tries any chunk needed."""
        if self._write("UPDATE segments SET state = 'running', attempts = MAX(attempts, ?), worker = ?, node = ?, "
                       "started_at = COALESCE(started_at, ?) WHERE item = ? AND idx = ?",
                       (attempt, worker, node, time.time(), item_id, idx)):
            row = self.conn.execute("SELECT attempts FROM segments WHERE item = ? AND idx = ?",
                                    (item_id, idx)).fetchone()
            return int(row[0])
        return None

    def mark_segment_progress(self, item_id: str, idx: int, done_frames: int, seconds: float) -> None:
        """Frames of the segment's chain that are on disk: a rerun continues after them."""
        self._write("UPDATE segments SET done_frames = ?, seconds = COALESCE(seconds, 0) + ? "
                    "WHERE item = ? AND idx = ?", (done_frames, seconds, item_id, idx))

    def mark_segment_done(self, item_id: str, idx: int, worker: str, node: str, seconds: float,
                          worker_pid: int | None = None) -> None:
        """``seconds``: the last chunk's; the segment's total adds up every chunk's."""
        self._write("UPDATE segments SET state = 'done', error = NULL, worker = ?, node = ?, pid = ?, "
                    "finished_at = ?, seconds = COALESCE(seconds, 0) + ?, done_frames = stop - start "
                    "WHERE item = ? AND idx = ?", (worker, node, worker_pid, time.time(), seconds, item_id, idx))

    def mark_segment_failed(self, item_id: str, idx: int, reason: str) -> None:
        self._write("UPDATE segments SET state = 'failed', error = ?, finished_at = ? WHERE item = ? AND idx = ?",
                    (reason, time.time(), item_id, idx))

    def mark_segment_pending(self, item_id: str, idx: int, reason: str | None = None) -> None:
        self._write("UPDATE segments SET state = 'pending', error = ? WHERE item = ? AND idx = ?",
                    (reason, item_id, idx))

    # ------------------------------------------------------------------ summaries
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self.conn.execute("SELECT state, COUNT(*) FROM items GROUP BY state"):
            counts[row[0]] = row[1]
        return counts

    def segment_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self.conn.execute("SELECT state, COUNT(*) FROM segments GROUP BY state"):
            counts[row[0]] = row[1]
        return counts


class DriverLock:
    """An exclusive lock on the output folder: two drivers must not share one ledger.

    flock is released by the kernel when the process dies, so kill -9 never leaves it stuck.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = state_dir(out_dir) / LOCK_NAME
        self.handle: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only media, a file where the folder should be, no permission
            raise NstError(f"{self.path.parent.parent}: cannot write to the output folder "
                           f"({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NstError(f"{self.path.parent.parent}: another nst run is using this output folder "
                           f"(pid {holder}); wait for it or use another -o") from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.handle = fd

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            os.close(self.handle)
            self.handle = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def driver_active(out_dir: Path) -> bool:
    """True when a live driver holds the output folder's lock (status uses it to tell running from stale)."""
    path = state_dir(out_dir) / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
