"""`nst status` and `nst info`: what the ledger says of a run, and what devices the workers see."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from pipeline.batch.ledger import DONE, FAILED, PENDING, Ledger, driver_active

LISTED = 100  # failed, warned or running items named one per line; the report and summary.json have them all


def status_lines(out_dir: Path) -> tuple[list[str], int]:
    """What `nst status` prints, from the ledger alone; the int is the number of failed items.

    Counts and means come from SQL aggregates, so a ledger of 100,000 items is never loaded whole."""
    out_dir = Path(out_dir)
    with Ledger(out_dir, readonly=True) as ledger:
        conn = ledger.conn
        counts = ledger.counts()
        segs = ledger.segment_counts()
        active = driver_active(out_dir)
        last = ledger.last_run()
        running_rows = conn.execute("SELECT id, worker, node FROM items WHERE state = 'running' AND kind = 'image' "
                                    "ORDER BY id LIMIT ?", (LISTED,)).fetchall() if active else []
        failed_rows = conn.execute("SELECT id, error FROM items WHERE state = 'failed' ORDER BY id LIMIT ?",
                                   (LISTED,)).fetchall()
        warned = conn.execute("SELECT COUNT(*) FROM items WHERE warning IS NOT NULL AND warning != ''").fetchone()[0]
        warned_rows = conn.execute("SELECT id, warning FROM items WHERE warning IS NOT NULL AND warning != '' "
                                   "ORDER BY id LIMIT ?", (LISTED,)).fetchall()
        mean_image, images_timed = conn.execute(
            "SELECT AVG(seconds), COUNT(*) FROM items WHERE kind = 'image' AND state = 'done' AND seconds > 0"
        ).fetchone()
        images_left = conn.execute("SELECT COUNT(*) FROM items WHERE kind = 'image' AND state IN ('pending', "
                                   "'running')").fetchone()[0]
        seg_rows = conn.execute("SELECT * FROM segments").fetchall()
        # an image handed to the executor is marked running before a worker takes it up
        queued = conn.execute("SELECT COUNT(*) FROM items WHERE state = 'running' AND kind = 'image' "
                              "AND worker IS NULL").fetchone()[0] if active else 0
    lines = []
    if last is not None:
        # a run still marked running with no driver holding the folder was killed
        ended = "interrupted" if last["status"] == "running" else last["status"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started"]))
        lines.append(f"last run: started {when}, config {last['config_hash']}, "
                     f"{last['workers'] or '?'} worker(s), {'RUNNING now' if active else ended}")
    running = counts["running"] - queued if active else 0
    stale = counts["running"] if not active else 0
    remaining = counts[PENDING] + counts["running"]
    lines.append(f"items: {counts[DONE]} done, {running} running" + (f", {queued} queued" if queued else "")
                 + f", {counts[FAILED]} failed, {remaining} remaining"
                 + (f" ({stale} interrupted, redone on the next run)" if stale else ""))
    if sum(segs.values()):
        frames_total = sum(r["stop"] - r["start"] for r in seg_rows)
        frames_done = sum(_segment_frames_done(r) for r in seg_rows)
        lines.append(f"video segments: {segs[DONE]} done, {segs['running'] if active else 0} running, "
                     f"{segs[FAILED]} failed, {segs[PENDING] + segs['running']} remaining; "
                     f"{frames_done} of {frames_total} segment frames done")
    lines += [f"  running  {r['id']} on {r['worker']} @ {r['node']}" if r["worker"] else f"  queued   {r['id']}"
              for r in running_rows]
    lines += [f"  failed   {r['id']}: {r['error']}" for r in failed_rows]
    if counts[FAILED] > len(failed_rows):
        lines.append(f"  ... and {counts[FAILED] - len(failed_rows)} more failed (report.html and summary.json "
                     f"list them all)")
    lines += [f"  warning  {r['id']}: {r['warning']}" for r in warned_rows]
    if warned > len(warned_rows):
        lines.append(f"  ... and {warned - len(warned_rows)} more with warnings")
    workers = (last["workers"] if last is not None else 0) or 1
    eta = _eta(mean_image if images_timed else None, images_left, seg_rows, workers)
    if remaining and eta is not None:
        lines.append(f"ETA: about {duration(eta)} of work left at {workers} worker(s)"
                     + ("" if active else " (no run in progress: rerun the same command to resume)"))
    elif remaining:
        lines.append("ETA: unknown until something finishes" + ("" if active else "; no run in progress"))
    return lines, counts[FAILED]


def _segment_frames_done(row: sqlite3.Row) -> int:
    if row["state"] == DONE:
        return row["stop"] - row["start"]
    return row["done_frames"] if "done_frames" in row.keys() else 0  # noqa: SIM118 - column names


def _eta(mean_image: float | None, images_left: int, seg_rows: list, workers: int) -> float | None:
    """Seconds of work left: images at the mean time per image, video at the mean time per frame
    (segments report every finished chunk, so this is known long before a segment ends)."""
    frames_done = sum(_segment_frames_done(r) for r in seg_rows)
    frames_left = sum(r["stop"] - r["start"] - _segment_frames_done(r) for r in seg_rows if r["state"] != FAILED)
    video_seconds = sum(r["seconds"] or 0.0 for r in seg_rows)
    work = 0.0
    if images_left:
        if mean_image is None:
            return None
        work += images_left * float(mean_image)
    if frames_left:
        if not frames_done or not video_seconds:
            return None
        work += frames_left * video_seconds / frames_done
    return work / max(1, workers)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def info_lines(address: str | None = None) -> list[str]:
    """Devices as Ray and TensorFlow see them, on every node (a tiny local runtime if none is given)."""
    import ray

    from pipeline.batch.runtime import start_ray, stop_ray

    started = start_ray(address)  # all cores declared, so the worker plan below is what `nst run` would do
    try:
        lines = [f"Ray {ray.__version__}: {'embedded local runtime, dashboard off' if started else 'cluster'}"]
        total = ray.cluster_resources()
        lines.append("cluster resources: " + ", ".join(f"{k}={v:g}" for k, v in sorted(total.items())
                                                       if not k.startswith("node:") and k != "object_store_memory"
                                                       and k != "memory")
                     + f", memory={total.get('memory', 0) / 1e9:.1f} GB")

        @ray.remote(num_cpus=0)
        def probe_node() -> dict:
            from pipeline.core.tfsetup import tf

            return {"host": os.uname().nodename, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "tf": tf.__version__,
                    "devices": [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]}

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            res = node.get("Resources", {})
            gpus = res.get("GPU", 0)
            ref = probe_node.options(num_gpus=gpus, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False)).remote()
            seen = ray.get(ref, timeout=300)
            lines.append(f"node {node['NodeManagerAddress']} ({seen['host']}, {node['NodeID'][:8]}): "
                         f"CPU={res.get('CPU', 0):g} GPU={gpus:g}")
            lines.append(f"  TensorFlow {seen['tf']} sees: {', '.join(seen['devices']) or 'nothing'}")
            lines.append(f"  CUDA_VISIBLE_DEVICES={seen['cuda_visible_devices']!s} ray.get_gpu_ids()={seen['gpu_ids']}")
        from pipeline.batch.ray_executor import plan_workers

        lines.append(f"nst run would start: {plan_workers(total).reason}")
        return lines
    finally:
        stop_ray(started)
