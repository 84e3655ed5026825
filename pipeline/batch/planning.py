"""Planning a run without computing anything: the config hash, what each item needs (decide),
and which photos are identical copies of another (done once, copied to the others)."""
from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.atomic import atomic_target
from pipeline.batch.discover import Item, Plan
from pipeline.batch.ledger import DONE, FAILED, Ledger
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


# ---------------------------------------------------------------- reconciliation with the ledger
@dataclass
class Decision:
    item: Item
    action: str  # "do" | "skip"
    reason: str = ""
    foreign: bool = False  # skipped because a file not made by nst is in the way


def decide(plan: Plan, ledger: Ledger | None, digest: str, overwrite: bool) -> list[Decision]:
    """Without touching anything: what a run would do with each item."""
    decisions = []
    rows = ledger.rows() if ledger is not None else {}  # one query, not one per item
    for item in plan.items:
        row = rows.get(item.id)
        if overwrite:
            decisions.append(Decision(item, "do", "--overwrite"))
        elif row is not None and row["config_hash"] == digest and row["state"] == DONE and item.output.exists():
            decisions.append(Decision(item, "skip", "done in an earlier run with the same settings"))
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
    first: dict[str, Item] = {}
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
        if content in first:
            plan.waiting.setdefault(first[content].id, []).append(item)
            continue
        if reuse_done:
            row = next((r for r in ledger.done_with_content(content, digest)
                        if r["id"] not in todo_ids and reusable_output(r) is not None), None)
            if row is not None:
                plan.earlier.append((item, row))
                continue
        first[content] = item
        plan.compute.append(item)
    plan.hash_seconds = time.perf_counter() - started
    return plan


def copy_output(source: Path, target: Path) -> None:
    """A copy, not a hard link: a user who edits one output in place must not change the others."""
    with atomic_target(target) as tmp:
        shutil.copyfile(source, tmp)

