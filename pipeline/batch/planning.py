"""Planning a run without computing anything: the config hash, what each item needs (decide),
and which photos are identical copies of another (done once, copied to the others)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.atomic import atomic_target
from pipeline.batch.discover import Item, Plan
from pipeline.batch.ledger import DONE, FAILED, Ledger, state_dir
from pipeline.batch.options import RunOptions
from pipeline.config import Config

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(config: Config, styles: Sequence[Path], weights: Sequence[float],
                masks: Sequence[Path | None] | None = None) -> str:
    """What decides whether an old result still stands: settings, style and mask contents, blend weights."""
    extra = [f"style:{file_sha256(Path(p))}" for p in styles] + [f"weight:{w!r}" for w in weights]
    extra += [f"mask:{file_sha256(Path(m)) if m else 'none'}" for m in masks or ()]
    if config.optim.init not in ("content", "noise") and Path(config.optim.init).is_file():
        extra.append(f"init:{file_sha256(Path(config.optim.init))}")
    return config.digest(*extra)


def run_settings(opts: RunOptions, weights: Sequence[float], digest: str) -> dict:
    return {"config": opts.config.to_dict(), "styles": [str(p) for p in opts.styles], "style_weights": list(weights),
            "style_masks": [str(m) if m else None for m in opts.style_masks or []],
            "config_hash": digest, "inputs": [str(p) for p in opts.inputs]}


# ---------------------------------------------------------------- which file an output was made from
PRINT_BYTES = 1 << 16


def source_print(path: Path | str, size: int) -> str:
    """SHA-256 of the size and the first and last 64 KiB: the same for a copied or touched file,
    and for another file or an edited one different but for an edit that keeps the size and both
    ends, without reading a whole video."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(PRINT_BYTES))
        if size > 2 * PRINT_BYTES:
            handle.seek(size - PRINT_BYTES)
        digest.update(handle.read(PRINT_BYTES))
    return digest.hexdigest()


def _identity(real: str, stamp: list[int], print_: str | None) -> str:
    return json.dumps({"real": real, "stamp": stamp, "print": print_})


def source_identity(path: Path, real: str | None = None) -> str | None:
    """Where the source is (``real``: its real path, if known), its size and time, and its print, as
    the ledger keeps them; None if it cannot be read (the worker's read reports that)."""
    try:
        st = os.stat(path)
        real = real or os.path.realpath(path)
        return _identity(real, [st.st_size, st.st_mtime_ns], source_print(real, st.st_size))
    except OSError:
        return None


def source_relation(recorded: str | None, path: Path, real: str | None = None,
                    state: str | None = None) -> tuple[str, str | None]:
    """How ``path`` stands to the source an item was made from: "same" (same place, size and time),
    "moved" (the same contents elsewhere, or touched), "edited" (same place, other contents) or
    "other" (another file); with the identity to record when it differs from ``recorded``.

    ``state``: the real path of the output's state folder. nst's own files there (a preview's part
    of a clip) are named after the clip, its time and the range, so their path is their identity:
    cut again, the same path is the same part, and another path an edited clip."""
    try:
        st = os.stat(path)
        real = real or os.path.realpath(path)
        stamp = [st.st_size, st.st_mtime_ns]
        if not recorded:  # made before sources were recorded: trusted, and recorded from now on
            return "same", _identity(real, stamp, None)
        old = json.loads(recorded)
        old_real, old_stamp, old_print = old["real"], old["stamp"], old["print"]
    except (OSError, ValueError, KeyError, TypeError):
        return "same", None  # unreadable now: the worker's read reports it
    if state is not None and real.startswith(state + os.sep):
        return ("same" if real == old_real else "edited"), None
    if real == old_real and stamp == old_stamp:
        return "same", None
    if stamp[0] != old_stamp[0]:  # another size: no print can match
        return ("edited" if real == old_real else "other"), None
    try:
        print_ = source_print(real, stamp[0])
    except OSError:
        return "same", None
    # recorded by size and time only: the same size and time count as a copy
    if (stamp == old_stamp) if old_print is None else (print_ == old_print):
        return "moved", _identity(real, stamp, print_)
    return ("edited" if real == old_real else "other"), None


def _kept_work(ledger: Ledger | None, row: sqlite3.Row, output: Path) -> bool:
    """Whether an item's ledger row stands for work another file must not take over: a painting in
    place, or a video's frames kept for resuming."""
    if row["state"] == DONE:
        return output.exists()
    return ledger is not None and any(s["state"] == DONE or s["done_frames"] for s in ledger.segments(row["id"]))


# ---------------------------------------------------------------- reconciliation with the ledger
@dataclass
class Decision:
    item: Item
    action: str  # "do" | "skip" | "refuse"
    reason: str = ""
    foreign: bool = False  # skipped because a file not made by nst is in the way
    afresh: bool = False  # the source was edited: nothing kept from the earlier result
    identity: str | None = None  # the source's identity to record, when it differs from the ledger's


def decide(plan: Plan, ledger: Ledger | None, digest: str, overwrite: bool) -> list[Decision]:
    """Without touching anything: what a run would do with each item."""
    decisions = []
    rows = ledger.rows() if ledger is not None else {}  # one query, not one per item
    state = os.path.realpath(state_dir(ledger.out_dir)) if ledger is not None else None
    owners = {r["output"]: r for r in rows.values()}  # output path -> the item that made it
    for item in plan.items:
        row = rows.get(item.id)
        owner = owners.get(str(item.output))
        relation, identity = "same", None
        if row is not None and not overwrite:
            # a ledger from before sources were recorded has no such column
            recorded = row["source_identity"] if "source_identity" in row.keys() else None  # noqa: SIM118 - a Row's "in" looks at values
            relation, identity = source_relation(recorded, item.source, plan.reals.get(item.id), state)
        if owner is not None and owner["id"] != item.id and _kept_work(ledger, owner, item.output):
            # clip.mov painted after clip.mp4 into one folder, in runs of their own: both want
            # clip.mp4. Taken over, the first one's painting would pass for done in its next run.
            made = "holds the painting of" if owner["state"] == DONE else "keeps the frames painted from"
            decisions.append(Decision(item, "refuse", f"{item.output} {made} {owner['source']}, another file whose "
                                                      f"output has this name (use another --output, or paint both "
                                                      f"in one run, which names them apart)"))
        elif overwrite:
            decisions.append(Decision(item, "do", "--overwrite"))
        elif relation == "other" and _kept_work(ledger, row, item.output):
            # Two files of one name in one output folder (two camera cards' DCIM, say): the second
            # must neither pass for done nor take over the first one's output or frames.
            made = "holds the painting of" if row["state"] == DONE else "keeps the frames painted from"
            decisions.append(Decision(item, "refuse", f"{item.output} {made} {row['source']}, another file of "
                                                      f"the same name (use another --output; --overwrite would "
                                                      f"repaint every file of the run)"))
        elif relation == "other":
            decisions.append(Decision(item, "do", f"another file of the same name ({row['source']}) was begun "
                                                  f"here and left nothing to keep", afresh=True))
        elif relation == "edited":
            decisions.append(Decision(item, "do", "the source changed since it was made", afresh=True))
        elif row is not None and row["config_hash"] == digest and row["state"] == DONE and item.output.exists():
            decisions.append(Decision(item, "skip", "done in an earlier run with the same settings",
                                      identity=identity))
        elif row is None and item.output.exists():
            decisions.append(Decision(item, "skip", f"{item.output} exists and is not from an nst run here "
                                                    f"(use --overwrite)", foreign=True))
        elif row is not None and row["config_hash"] != digest:
            decisions.append(Decision(item, "do", "settings or style changed since it was made"))
        else:
            decisions.append(Decision(item, "do", "failed before" if row is not None and row["state"] == FAILED
                                      else "resume" if row is not None else "new"))
    return decisions


# ---------------------------------------------------------------- identical photos
@dataclass
class Duplicates:
    """Photos of this run whose bytes another item already has, under the same settings.

    ``waiting``: computed item id -> the identical items that get a copy of its output.
    ``earlier``: items whose output is copied from one done in an earlier run (its ``items`` row).
    """

    compute: list[Item]
    waiting: dict[str, list[Item]] = field(default_factory=dict)
    earlier: list[tuple[Item, sqlite3.Row]] = field(default_factory=list)
    hash_seconds: float = 0.0


def reusable_output(row: sqlite3.Row) -> Path | None:
    """The done output of an earlier item, if it is still there as nst wrote it (not edited since)."""
    output = Path(row["output"])
    try:
        st = output.stat()
    except OSError:
        return None
    # Written atomically before the ledger called it done: a later mtime means someone changed it.
    return output if output.is_file() and st.st_mtime <= (row["finished_at"] or 0) + 1.0 else None


def plan_duplicates(todo: list[Item], ledger: Ledger, digest: str, reuse_done: bool) -> Duplicates:
    """Hashes the photos about to be stylized (SHA-256 of the bytes; videos are not hashed) and
    keeps one of each content for the workers; the ledger keeps every hash for later runs."""
    plan = Duplicates([])
    first: dict[tuple[str, str], Item] = {}
    todo_ids = {item.id for item in todo}
    started = time.perf_counter()
    for item in todo:
        if item.kind != "image":
            plan.compute.append(item)
            continue
        try:
            content = file_sha256(item.source)
        except OSError:  # the worker request reports the read error with the item
            plan.compute.append(item)
            continue
        ledger.set_content_hash(item.id, content)
        # Copied only into the same kind of file: the same bytes named a.jpg and b.png give a JPEG
        # and a PNG, which a copy of one would not.
        kind = item.output.suffix.lower()
        if (content, kind) in first:
            plan.waiting.setdefault(first[content, kind].id, []).append(item)
            continue
        if reuse_done:
            row = next((r for r in ledger.done_with_content(content, digest)
                        if r["id"] not in todo_ids and Path(r["output"]).suffix.lower() == kind
                        and reusable_output(r) is not None), None)
            if row is not None:
                plan.earlier.append((item, row))
                continue
        first[content, kind] = item
        plan.compute.append(item)
    plan.hash_seconds = time.perf_counter() - started
    return plan


def copy_output(source: Path, target: Path) -> None:
    """A copy, not a hard link: a user who edits one output in place must not change the others."""
    with atomic_target(target) as tmp:
        shutil.copyfile(source, tmp)

