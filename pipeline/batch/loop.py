"""The item loop of a run: tasks to the executor, results written atomically, the ledger told."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.batch.discover import Item, Plan
from pipeline.batch.files import write_atomic
from pipeline.batch.imagejob import intermediate_path
from pipeline.batch.ledger import DONE, FAILED, Ledger, SegmentSpec
from pipeline.batch.options import RunOptions
from pipeline.batch.progress import console, run_progress, say
from pipeline.batch.protocol import ChunkResult, ImageRequest, ImageResult, Task
from pipeline.batch.report import LiveReport
from pipeline.batch.segments import frames_dir, write_segment_frames
from pipeline.batch.thumbs import thumb_key
from pipeline.batch.videos import VideoEncodes, VideoState, chunk_task, disk_warning, prepare_video
from pipeline.errors import InputError, NstError, TransientError

log = logging.getLogger(__name__)


def run_items(opts: RunOptions, ledger: Ledger, run_id: int, digest: str, todo: list[Item], pool: object,
              worker_count: int, done_now: set[str], notes: dict[str, str] | None = None,
              waiting: dict[str, list[Item]] | None = None, live: LiveReport | None = None) -> None:
    """Runs ``todo`` through the executor. The ledger batches the loop's updates (see Ledger); each is
    queued only after the file it records is in place, and everything is committed before returning."""
    notes = notes if notes is not None else {}
    waiting = waiting if waiting is not None else {}
    cfg = opts.config
    out_dir = Path(opts.out_dir)
    emit = opts.on_event or (lambda kind, data: None)
    tasks = []
    videos: dict[str, VideoState] = {}
    failed_items: set[str] = set()

    last_frames: dict[str, bytes] = {}  # video -> thumbnail of its latest finished frame

    def finished(item: Item, state: str, preview: bytes | None = None, **fields: object) -> None:
        """Tells the live report; ``fields`` go into the item's record (``thumb``: the pack holding ``preview``)."""
        if live is not None:
            live.add({"id": item.id, "kind": item.kind, "source": str(item.source), "state": state, **fields},
                     preview)

    def keep_thumb(item: Item, data: bytes | None) -> str | None:
        """Stores a thumbnail; returns the pack that holds it (recorded with the item)."""
        return live.packs.add(thumb_key(item.id), data) if live is not None and data else None

    def fail_item(item: Item, reason: str) -> None:
        failed_items.add(item.id)
        ledger.mark_failed(item.id, reason)
        finished(item, "failed", reason=reason)
        console.print(f"[red]failed[/red] {item.source}: {reason}", highlight=False)  # even with --quiet
        emit("failure", {"item": item.id, "reason": reason})
        for copy in waiting.pop(item.id, []):
            fail_item(copy, f"identical to {item.source}, which failed: {reason}")

    def write_copies(item: Item, res: ImageResult, pack: str | None = None) -> None:
        """The identical photos get the computed result too, each written atomically."""
        for copy in waiting.pop(item.id, []):
            try:
                for iteration, data in res.intermediates:
                    write_atomic(intermediate_path(copy.output, iteration), data)
                write_atomic(copy.output, res.data)
            except OSError as exc:
                fail_item(copy, f"cannot write {copy.output} ({exc.strerror or exc})")
                continue
            ledger.mark_duplicate(copy.id, item.id, pack)
            done_now.add(copy.id)
            finished(copy, "done", res.thumb, duplicate_of=item.id, seconds=0.0, thumb=pack)
            if res.note:
                notes[copy.id] = res.note
                ledger.set_warning(copy.id, res.note)
            emit("duplicate", {"item": copy.id, "of": item.id})
            say(opts.quiet, f"wrote {copy.output} (identical to {item.id}: copied)")

    def video_done(state: VideoState) -> None:
        data = last_frames.pop(state.item.id, None)
        pack = keep_thumb(state.item, data)
        if pack is not None:
            ledger.set_thumb(state.item.id, pack)
        finished(state.item, "done", data, seconds=state.seconds, thumb=pack)

    encodes = VideoEncodes(opts, ledger, done_now, fail_item, video_done)

    for item in todo:
        ledger.mark_running(item.id, run_id)
        if item.kind == "image":
            def request(item: Item = item) -> ImageRequest:
                try:
                    data = item.source.read_bytes()
                except OSError as exc:
                    raise InputError(item.source, f"cannot be read ({exc.strerror or exc})") from exc
                return ImageRequest(item.id, item.source.name, data, item.output.suffix)

            tasks.append(Task(("image", item.id), request, str(item.source), extra={"item": item}, groupable=True))
            continue
        try:
            state = prepare_video(item, ledger, cfg, digest, worker_count,
                                  picture_only=cfg.video.bars == "keep" and not any(opts.style_masks or []))
        except NstError as exc:
            fail_item(item, getattr(exc, "reason", None) or exc.message)
            continue
        except TransientError as exc:  # its decoder killed from outside while cuts were looked for
            fail_item(item, f"{getattr(exc, 'reason', None) or exc}; rerun to go on")
            continue
        videos[item.id] = state
        if len(state.done) == len(state.specs):  # every segment survived the last run: only encode
            encodes.start(state)
            continue
        for spec in state.specs:
            if spec.idx not in state.done:
                tasks.append(chunk_task(state, spec, state.progress.get(spec.idx, 0), cfg, out_dir))
    short = disk_warning(videos.values(), out_dir, cfg) if videos else None
    if short:  # even with --quiet: it decides whether the night's run finishes
        console.print(f"[yellow]warning[/yellow]: {short}", highlight=False)

    chunk = cfg.video.chunk_frames
    total = sum(1 for t in tasks if "spec" not in t.extra) + sum(
        -(-(t.extra["spec"].stop - t.extra["spec"].start - t.extra["done"]) // chunk) for t in tasks if "spec" in t.extra)
    progress = run_progress(opts.quiet)
    bar = progress.add_task("stylizing", total=total) if progress else None

    def advance() -> None:
        if progress is not None:
            progress.advance(bar)

    def idle() -> None:
        encodes.collect()
        ledger.flush_due()
        if live is not None:
            live.tick()

    if live is not None:
        live.start_clock()
        live.tick(force=True)

    def on_submit(task: object, slot: object) -> None:
        item: Item = task.extra["item"]
        if "spec" in task.extra:
            ledger.mark_segment_attempt(item.id, task.extra["spec"].idx, slot.name, slot.info["node"], task.attempts)
        else:
            ledger.mark_attempt(item.id, slot.name, slot.info["node"])
        emit("submit", {"key": task.key, "item": item.id, "worker": slot.name, "pid": slot.info["pid"],
                        "node": slot.info["node"], "attempt": task.attempts})

    def on_result(task: Task, res: ImageResult | ChunkResult) -> None:
        take_result(task, res)
        if live is not None:  # after the result is in: the page shows it at its next redraw, not one later
            live.tick()

    def take_result(task: Task, res: ImageResult | ChunkResult) -> None:
        item: Item = task.extra["item"]
        who = res.worker
        advance()
        encodes.collect()
        emit("result", {"key": task.key, "item": item.id, "worker": who.name, "pid": who.pid,
                        "seconds": res.seconds, "optim_seconds": res.optim_seconds})
        if isinstance(res, ImageResult):
            try:
                for iteration, data in res.intermediates:  # --save-every: beside the output, sorted
                    write_atomic(intermediate_path(item.output, iteration), data)
                write_atomic(item.output, res.data)  # the driver writes; workers need no shared disk
            except OSError as exc:  # full disk, quota, read-only folder: this item fails, the run goes on
                copies = waiting.pop(item.id, [])
                fail_item(item, f"cannot write {item.output} ({exc.strerror or exc})")
                if copies:  # the result is in memory: the identical photos may still land elsewhere
                    waiting[item.id] = copies
                    write_copies(item, res)
                return
            pack = keep_thumb(item, res.thumb)
            ledger.mark_done(item.id, who.name, who.node, res.seconds, who.pid, pack)
            done_now.add(item.id)
            finished(item, "done", res.thumb, seconds=res.seconds, reason=res.note, worker=who.name, node=who.node,
                     thumb=pack)
            if res.note:
                notes[item.id] = res.note  # e.g. "first frame of an animated GIF", for the report
                # the painting leaves part of the file out: a warning the exit code reflects
                ledger.set_warning(item.id, res.note)
                console.print(f"[yellow]warning[/yellow] {item.source}: {res.note}", highlight=False)
            say(opts.quiet, f"wrote {item.output} ({res.seconds:.1f} s on {who.name} @ {who.node})")
            write_copies(item, res, pack)
            return
        spec: SegmentSpec = task.extra["spec"]
        state = videos[item.id]
        # Kept even when another segment of the video failed: a rerun redoes only what is missing.
        try:
            write_segment_frames(out_dir, item.id, spec, list(res.frames), task.extra["lo"])
        except OSError as exc:
            ledger.mark_segment_failed(item.id, spec.idx, f"cannot write its frames ({exc.strerror or exc})")
            if item.id not in failed_items:
                fail_item(item, f"cannot write frames under {frames_dir(out_dir, item.id)} ({exc.strerror or exc})")
            return
        done = task.extra["done"] + len(res.frames)
        if res.thumb is not None and live is not None:
            last_frames[item.id] = res.thumb
            state.progress[spec.idx] = done
            live.video(item.id, sum(state.progress.get(s.idx, 0) if s.idx not in state.done else s.stop - s.start
                                    for s in state.specs), sum(s.stop - s.start for s in state.specs), res.thumb)
        if done < spec.stop - spec.start:  # the chain goes on from the frame just written
            ledger.mark_segment_progress(item.id, spec.idx, done, res.seconds)
            state.seconds += res.seconds
            pool.push(chunk_task(state, spec, done, cfg, out_dir))
            return
        ledger.mark_segment_done(item.id, spec.idx, who.name, who.node, res.seconds, who.pid)
        cursor = state.cursors.pop(spec.idx, None)
        if cursor is not None:
            cursor.close()
        state.done.add(spec.idx)
        state.seconds += res.seconds
        if len(state.done) == len(state.specs) and item.id not in failed_items:
            encodes.start(state)

    def on_failure(task: object, reason: str) -> None:
        item: Item = task.extra["item"]
        advance()
        if "spec" in task.extra:
            ledger.mark_segment_failed(item.id, task.extra["spec"].idx, reason)
            state = videos.get(item.id)
            cursor = state.cursors.pop(task.extra["spec"].idx, None) if state is not None else None
            if cursor is not None:  # its decoder would idle until the run ends
                cursor.close()
        if item.id not in failed_items:
            fail_item(item, reason)

    def on_retry(task: object, reason: str) -> None:
        item: Item = task.extra["item"]
        if "spec" in task.extra:
            ledger.mark_segment_pending(item.id, task.extra["spec"].idx, reason)
            state = videos.get(item.id)
            cursor = state.cursors.pop(task.extra["spec"].idx, None) if state is not None else None
            if cursor is not None:  # its decoder may be the one that failed: the next attempt opens its own
                cursor.close()
        else:
            ledger.mark_pending(item.id, reason)
        say(opts.quiet, f"[yellow]retrying[/yellow] {task.label}: {reason}")

    if progress is not None:
        progress.start()
    try:
        pool.run(tasks, on_submit, on_result, on_failure, on_retry, max_attempts=cfg.run.max_attempts,
                 max_in_flight=cfg.run.max_in_flight, on_idle=idle)
        encodes.collect(wait=True)
        ledger.flush()
    finally:
        encodes.close()
        if progress is not None:
            progress.stop()



def records(plan: Plan, ledger: Ledger, skipped: dict[str, str], done_now: set[str],
             notes: dict[str, str] | None = None) -> list[dict]:
    records = []
    rows = ledger.rows()
    for item in plan.items:
        row = rows.get(item.id)
        base = {"id": item.id, "kind": item.kind, "source": str(item.source), "output": str(item.output),
                "reason": "", "seconds": None, "worker": None, "node": None,
                "warning": (row["warning"] if row is not None else None) or "",
                "duplicate_of": row["duplicate_of"] if row is not None else None,
                "thumb": row["thumb"] if row is not None else None}
        if item.id in skipped:
            records.append({**base, "state": "skipped", "reason": skipped[item.id],
                            "seconds": row["seconds"] if row is not None else None})
            continue
        if row is None:
            continue
        state = {DONE: "done", FAILED: "failed"}.get(row["state"], "failed")
        reason = row["error"] or ("" if state == "done" else f"left {row['state']}")
        done_reason = (notes or {}).get(item.id, "")
        records.append({**base, "state": state, "reason": reason if state != "done" else done_reason,
                        "seconds": row["seconds"], "worker": row["worker"], "node": row["node"]})
    for refusal in plan.refused:
        records.append({"id": str(refusal.source), "kind": "", "source": str(refusal.source), "output": "",
                        "state": "refused", "reason": refusal.reason, "seconds": None, "worker": None, "node": None})
    return records

