"""The controller of every command: discover -> ledger -> plan -> executor -> driver writes -> report.

The driver is the only process that writes into the output folder, and it writes each result
atomically before the ledger calls it done; so a run killed at any moment leaves whole files,
and the same command resumes with only the unfinished work.

Its parts: pipeline.batch.planning (config hash, decisions, identical photos), .estimate (--dry-run),
.loop (the item loop), .videos (segments, chunks, encodes), .status (nst status / info), .report.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from pipeline.batch.discover import Item, Plan, Refusal, discover, keep_kinds
from pipeline.batch.estimate import Estimate, estimate
from pipeline.batch.imagejob import check_style_weights, load_styles
from pipeline.batch.ledger import DONE, DriverLock, Ledger, LedgerError, db_path
from pipeline.batch.loop import records as _records
from pipeline.batch.loop import run_items
from pipeline.batch.options import RunOptions, RunResult
from pipeline.batch.planning import config_hash, copy_output, decide, plan_duplicates, run_settings, source_identity
from pipeline.batch.progress import console, say
from pipeline.batch.report import LiveReport, write_report
from pipeline.batch.status import duration, info_lines, status_lines
from pipeline.batch.thumbs import ThumbPacks
from pipeline.batch.videos import VideoState, byte_text, frame_bytes, free_space, key_steps
from pipeline.errors import InputError, NstError, VideoError
from pipeline.media.frames import CODEC_SUFFIX, VIDEO_EXTENSIONS
from pipeline.media.images import load_image

log = logging.getLogger(__name__)

LEDGER_BATCH_SECONDS = 1.0  # the item loop's ledger updates are committed together, at least this often

__all__ = ["Estimate", "RunOptions", "RunResult", "VideoState", "config_hash", "decide", "info_lines", "key_steps",
           "run", "status_lines"]


def ignored_note(plan: Plan) -> str:
    notes = [f"{len(plan.ignored)} sidecar or system files"] if plan.ignored else []
    notes += [f"{len(plan.raw_twins)} RAW files beside a picture of the same name"] if plan.raw_twins else []
    notes += [f"{len(plan.live_clips)} Live Photo clips beside their picture"] if plan.live_clips else []
    notes += [f"{len(plan.hidden_folders)} hidden, thumbnail or trash folders"] if plan.hidden_folders else []
    for kind, noun in (("image", "photos"), ("video", "videos")):
        count = sum(item.kind == kind for item in plan.other_kind)
        notes += [f"{count} {noun} (nst run paints photos and videos)"] if count else []
    return f", {', '.join(notes)} passed over" if notes else ""


def run(opts: RunOptions) -> RunResult:
    """Every command's one path: discover -> ledger -> plan -> executor -> atomic writes -> report."""
    cfg = opts.config
    out_dir = Path(opts.out_dir)
    weights = check_style_weights(opts.styles, opts.style_weights)
    for style in opts.styles:
        if not Path(style).is_file():
            raise InputError(style, "style image not found")
    masks = list(opts.style_masks or [])
    for mask in masks:
        if mask and not Path(mask).is_file():
            raise InputError(mask, "style mask not found")
    if masks and len(masks) != len(opts.styles):
        raise NstError(f"{len(masks)} --style-mask values for {len(opts.styles)} --style images; give one per style "
                       f"(none for a style that covers the whole image)")
    digest = config_hash(cfg, opts.styles, weights, masks)
    plan = discover(opts.inputs, out_dir, cfg.image.format, max_pixels=cfg.image.max_pixels,
                    video_suffix=CODEC_SUFFIX[cfg.video.codec])
    keep_kinds(plan, opts.kinds, opts.inputs, CODEC_SUFFIX[cfg.video.codec])
    result = RunResult(config_hash=digest, refused=len(plan.refused))
    started = time.time()
    if not plan.items and plan.refused and not opts.dry_run:
        # Nothing can be done: say why in one line per input and start nothing (no ledger, no report).
        if len(plan.refused) == 1:
            refusal = plan.refused[0]
            error = VideoError if refusal.source.suffix.lower() in VIDEO_EXTENSIONS else InputError
            raise error(refusal.source, refusal.reason)
        for refusal in plan.refused:
            console.print(f"[red]error[/red]: {refusal.source}: {refusal.reason}", highlight=False)
        return result

    if opts.dry_run:
        ledger = Ledger(out_dir, readonly=True) if db_path(out_dir).is_file() else None
        try:
            decisions = decide(plan, ledger, digest, opts.overwrite)
            # Plain lines, not rich's: a listing of 100,000 files through rich took longer than the planning.
            verbs = {"do": "would do", "skip": "skip", "refuse": "refuse"}
            listing = [f"{verbs[d.action]:8s}  {d.item.kind:5s}  {d.item.source} -> "
                       f"{d.item.output}  ({d.reason})\n" for d in decisions]
            console.file.write("".join(listing).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            result.done = sum(d.action == "do" for d in decisions)
            result.skipped = sum(d.action == "skip" for d in decisions)
            result.refused += sum(d.action == "refuse" for d in decisions)
            todo = [d.item for d in decisions if d.action == "do"]
            if todo:
                result.estimate = estimate(opts, todo, ledger, digest, plan.sizes)
        finally:
            if ledger is not None:
                ledger.close()
        for refusal in plan.refused:
            console.print(f"refuse    {refusal.source}: {refusal.reason}", highlight=False)
        console.print(f"{result.done} to do, {result.skipped} to skip, {result.refused} refused "
                      f"(config {digest})", highlight=False)
        work = result.estimate
        if work is not None:
            console.print(f"work: {work.photos} photo(s), {work.megapixels:.2f} MP at {cfg.image.size} px"
                          + (f", {work.copies} identical cop(ies) copied" if work.copies else "")
                          + f"; {work.videos} video(s), {work.frames} frame(s)", highlight=False)
            console.print(f"estimate: about {duration(work.seconds or 0.0)} ({work.source})", highlight=False)
            if work.frame_sizes:  # painted frames wait on disk until their video is encoded
                need = sum(frame_bytes(n, w, h) for n, (h, w) in work.frame_sizes)
                where, free = free_space(out_dir)
                console.print(f"disk: up to {byte_text(need)} of painted frames until each video is encoded; "
                              f"{byte_text(free)} free under {where}", highlight=False)
        return result

    style_arrays = load_styles(opts.styles, cfg.image.max_pixels)
    from pipeline.media.images import load_mask

    mask_arrays = [load_mask(m, cfg.image.max_pixels) if m else None for m in masks] or None
    init = None
    if cfg.optim.init not in ("content", "noise"):
        init = load_image(Path(cfg.optim.init), cfg.image.max_pixels).rgb
    for refusal in plan.refused:  # one line each, even with --quiet: the user has to act on it
        console.print(f"[red]error[/red]: {refusal.source}: {refusal.reason}", highlight=False)

    lock = DriverLock(out_dir)
    lock.acquire()
    try:
        return _run_locked(opts, plan, result, digest, weights, started, style_arrays, mask_arrays, init)
    finally:
        lock.release()


def _run_locked(opts: RunOptions, plan: Plan, result: RunResult, digest: str, weights: list[float], started: float,
                style_arrays: list, mask_arrays: list | None, init: object) -> RunResult:
    cfg = opts.config
    out_dir = Path(opts.out_dir)
    ledger = Ledger(out_dir, batch_seconds=LEDGER_BATCH_SECONDS)
    settings = run_settings(opts, weights, digest)
    try:
        ledger.recover_stale()  # a killed driver's running rows: pending again
        run_id = ledger.start_run(digest, settings)
        decisions = decide(plan, ledger, digest, opts.overwrite)
        rows = ledger.rows()
        todo: list[Item] = []
        skipped: dict[str, str] = {}
        foreign: set[str] = set()  # skipped for a file nst did not make: not painted, a warning
        refusals = [Refusal(d.item.source, d.reason) for d in decisions if d.action == "refuse"]
        if refusals:  # one line each, even with --quiet, as for any refused input
            for refusal in refusals:
                console.print(f"[red]error[/red]: {refusal.source}: {refusal.reason}", highlight=False)
            refused_ids = {d.item.id for d in decisions if d.action == "refuse"}
            plan.items = [i for i in plan.items if i.id not in refused_ids]
            plan.refused.extend(refusals)
            result.refused = len(plan.refused)
        moved = [(d.item.id, d.identity) for d in decisions if d.action == "skip" and d.identity]
        if moved:  # found elsewhere, touched, or recorded before sources were: known from now on
            ledger.set_source_identities(moved)
        for d in decisions:
            if d.action == "refuse":
                continue
            if d.action == "skip":
                skipped[d.item.id] = d.reason
                if d.foreign:  # a file nst did not make: the user decides, so say it every time
                    say(opts.quiet, f"[yellow]skip[/yellow] {d.item.source}: {d.reason}")
                    foreign.add(d.item.id)
                continue
            todo.append(d.item)
        # One transaction for the whole plan, committed before any output is written.
        afresh = {d.item.id for d in decisions if d.afresh}
        ledger.upsert_items(((i.id, i.kind, i.source, i.output, opts.overwrite or i.id in afresh or (
            i.id in rows and rows[i.id]["state"] == DONE)) for i in todo), digest)
        ledger.set_source_identities((i.id, source_identity(i.source, plan.reals.get(i.id))) for i in todo)
        result.skipped = len(skipped)
        done_now: set[str] = set()
        notes: dict[str, str] = {}
        same = plan_duplicates(todo, ledger, digest, reuse_done=not opts.overwrite)
        log.info("content hashes of %d photo(s) in %.3f s", sum(i.kind == "image" for i in todo), same.hash_seconds)
        todo = same.compute
        refused = [{"id": str(r.source), "source": str(r.source), "state": "refused", "reason": r.reason}
                   for r in plan.refused]
        live = LiveReport(out_dir, settings, started, len(todo) + sum(map(len, same.waiting.values()))
                          + len(same.earlier), len(skipped), refused, packs=ThumbPacks(out_dir, f"r{run_id}"))
        for item, row in same.earlier:
            try:
                copy_output(Path(row["output"]), item.output)
            except OSError as exc:
                log.info("cannot copy %s to %s (%s); stylizing it", row["output"], item.output, exc)
                todo.append(item)
                continue
            ledger.mark_duplicate(item.id, row["id"], row["thumb"])
            done_now.add(item.id)
            live.add({"id": item.id, "kind": item.kind, "source": str(item.source), "state": "done",
                      "duplicate_of": row["id"], "seconds": 0.0, "thumb": row["thumb"]})
            say(opts.quiet, f"wrote {item.output} (identical to {row['id']}, done earlier: copied)")
        ledger.flush()
    except BaseException:
        ledger.close()
        raise
    ray_started = False
    pool = None
    status = "interrupted"
    records: list[dict] = []
    try:
        if todo and opts.executor == "local":
            from pipeline.batch.local_executor import InProcessPool

            ledger.set_run_workers(run_id, 1)
            say(opts.quiet, f"{len(todo)} to do, {len(skipped)} already done or present, "
                            f"{len(plan.refused)} refused{ignored_note(plan)}")
            pool = InProcessPool(cfg, style_arrays, weights, init, masks=mask_arrays)
            result.workers = pool.start()
            run_items(opts, ledger, run_id, digest, todo, pool, 1, done_now, notes, same.waiting, live)
        elif todo:
            import ray

            from pipeline.batch.ray_executor import WorkerPool, plan_workers
            from pipeline.batch.runtime import start_ray

            ray_started = start_ray(opts.address, quiet=opts.quiet)
            workers = cfg.run.workers if opts.workers is None else opts.workers
            gpus = cfg.run.gpus_per_worker if opts.gpus_per_worker is None else opts.gpus_per_worker
            worker_plan = plan_workers(ray.cluster_resources(), workers, gpus)
            if opts.threads_per_worker:
                worker_plan = dataclasses.replace(worker_plan, threads=opts.threads_per_worker,
                                                  num_cpus=min(worker_plan.num_cpus, float(opts.threads_per_worker)))
            ledger.set_run_workers(run_id, worker_plan.count)
            say(opts.quiet, f"{len(todo)} to do, {len(skipped)} already done or present, "
                            f"{len(plan.refused)} refused{ignored_note(plan)}; {worker_plan.reason}")
            pool = WorkerPool(cfg, worker_plan, style_arrays, weights, init, opts.worker_options, masks=mask_arrays)
            result.workers = pool.start(timeout=900)
            run_items(opts, ledger, run_id, digest, todo, pool, worker_plan.count, done_now, notes, same.waiting,
                      live)
        status = "finished"
    except LedgerError:
        pass  # the workers are stopped below, then the run ends with its one line
    finally:
        if pool is not None:
            result.replaced_workers = pool.replacements
            pool.shutdown()
        if ray_started:
            from pipeline.batch.runtime import stop_ray

            stop_ray(ray_started)
        if ledger.broken is None:
            try:
                if status != "finished":
                    ledger.recover_stale()  # what was running is simply pending for the next run
                ledger.finish_run(run_id, status)
            except LedgerError:
                pass  # raised below, after the cleanup
        if ledger.broken is None:
            records = _records(plan, ledger, skipped, done_now, notes)
        ledger.close()
    if ledger.broken is not None:  # the disk refused the ledger: stop here; the rerun redoes what it lost
        live.stop(ledger.broken.message)
        raise ledger.broken
    live.packs.flush()
    for record in records:
        if record["id"] in foreign and record["state"] == "skipped":
            record["warning"] = record["reason"]  # the summary, the report and exit code 3 say it
    result.records = records
    result.done = sum(r["state"] == "done" for r in records)
    result.failed = sum(r["state"] == "failed" for r in records)
    result.warnings = sum(bool(r.get("warning")) for r in records if r["state"] in ("done", "skipped"))
    _, result.report = write_report(out_dir, records, settings, started, time.time(), passed_over={
        "sidecar_or_system": len(plan.ignored), "raw_beside_a_picture": len(plan.raw_twins),
        "live_photo_clips": len(plan.live_clips), "hidden_or_system_folders": len(plan.hidden_folders),
        **({"other_kind": len(plan.other_kind)} if plan.other_kind else {})})
    say(opts.quiet, f"{result.done} done, {result.skipped} skipped, {result.failed} failed, "
                    f"{result.refused} refused" + (f", {result.warnings} with warnings" if result.warnings else "")
                    + f"; report: {result.report}")
    return result
