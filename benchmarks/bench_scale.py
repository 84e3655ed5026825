"""Photo archives at scale; prints numbers (not part of the test suite).

    .venv/bin/python benchmarks/bench_scale.py [--photos 100000] [--skip-plan] [--skip-driver]
        [--skip-report] [--skip-status] [--estimate]

1. Planning: `nst run --dry-run` over --photos generated distinct small JPEGs (64x48) in 1,000 folders,
   in a child process: wall time and the child's peak RSS (ru_maxrss via os.wait4). Run twice: without
   a ledger (the estimate comes from a calibration in a separate process, so TensorFlow stays out of
   the driver) and with one (the estimate from the ledger's record).
2. Driver CPU per photo: `run()` over 10 and over 1,000 generated photos (--size 64, 1 iteration,
   2 Ray workers, --quiet) in child processes that print their own CPU time (getrusage RUSAGE_SELF:
   the driver's threads, not Ray's or the workers' processes); (CPU(1000) - CPU(10)) / 990.
3. Report: write_report at 1,000 and 100,000 items of a synthetic run (wall time, report.html size,
   index files size, summary.json size), and one live rewrite after 10 more items of a 100,000-item run.
4. `nst status` (status_lines) on a synthetic ledger of 100,000 items.
5. With --estimate: the --dry-run estimate against the real duration of a small run
   (bench_archive.estimate_vs_real with --estimate-count photos at --estimate-size px).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = 1000


def make_photos(root: Path, count: int, folders: int = FOLDERS) -> None:
    """``count`` distinct JPEGs: 200 different pictures, each made distinct again by a JPEG comment
    holding its number (every file has its own bytes, so none is an identical copy of another)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    bases = []
    for _ in range(200):
        pixels = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        bases.append(buffer.getvalue())
    per_folder = max(1, count // folders)
    for n in range(count):
        folder = root / f"album{n // per_folder:04d}"
        if n % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        base = bases[n % len(bases)]
        text = f"photo {n}".encode()
        comment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
        (folder / f"IMG_{n:06d}.jpg").write_bytes(base[:2] + comment + base[2:])


def make_style(path: Path) -> Path:
    from PIL import Image

    from pipeline.batch.demo import swirl_painting

    Image.fromarray(np.clip(swirl_painting(64), 0, 255).astype(np.uint8)).save(path)
    return path


def child(code: str, *args: str, tree: Path = ROOT) -> tuple[str, float, float, float]:
    """Runs ``code`` in a fresh interpreter; (stdout, wall seconds, peak RSS in MB, CPU seconds) of that
    process (CPU includes the children it waited for)."""
    started = time.perf_counter()
    env = {**os.environ, "RAY_ADDRESS": ""}
    if tree != ROOT:  # another source tree (e.g. `git archive <commit> pipeline configs`), for the driver
        env.update(PYTHONPATH=str(tree), NST_PRETRAINED_DIR=str(ROOT / "pretrained_model"))  # and its Ray workers
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=tree, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"child failed: {out[-2000:]}")
    return out, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


# The process's own peak (VmHWM: this program only; ru_maxrss would count the forked parent and children).
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

PLAN = PEAK + """
import sys
from pathlib import Path
from pipeline import config as config_mod
from pipeline.batch.driver import RunOptions, run
cfg = config_mod.load(overrides={"image.size": 64, "optim.iterations": 1})
result = run(RunOptions([Path(sys.argv[1])], [Path(sys.argv[2])], Path(sys.argv[3]), cfg, dry_run=True, quiet=True,
                        workers=2))
print(result.done, result.estimate.seconds if result.estimate else None, result.estimate.source if result.estimate else "")
print("tensorflow" in sys.modules)
print(peak_mb())
"""


def planning(photos: int, tree: Path = ROOT) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("NST_BENCH_TMP")) as tmp:
        root = Path(tmp) / "archive"
        started = time.perf_counter()
        make_photos(root, photos)
        print(f"planning: generated {photos} photos in {FOLDERS} folders in {time.perf_counter() - started:.0f} s",
              flush=True)
        style = make_style(Path(tmp) / "style.png")
        out = Path(tmp) / "out"
        printed, wall, _, cpu = child(PLAN, str(root), str(style), str(out), tree=tree)
        lines = printed.strip().splitlines()
        print(f"planning: `nst run --dry-run` over {photos} photos, no ledger: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"(with the calibration's child process), driver peak RSS {float(lines[-1]):.0f} MB, "
              f"TensorFlow in the driver: {lines[-2]}; {lines[0][:200]}", flush=True)
        # The same dry run once a ledger knows the rate (as after a first run): no calibration at all.
        from pipeline.batch.ledger import Ledger
        from pipeline.batch.planning import config_hash

        sys.path.insert(0, str(ROOT))
        from pipeline import config as config_mod

        cfg = config_mod.load(overrides={"image.size": 64, "optim.iterations": 1})
        digest = config_hash(cfg, [style], [1.0])
        with Ledger(out) as ledger:
            ledger.upsert_item("x/old.jpg", "image", root / "old.jpg", out / "x" / "old.jpg", digest)
            ledger.mark_done("x/old.jpg", "w", "n", 1.0)
        printed, wall, _, cpu = child(PLAN, str(root), str(style), str(out), tree=tree)
        lines = printed.strip().splitlines()
        print(f"planning: the same with a ledger (no calibration): {wall:.1f} s wall, {cpu:.1f} s CPU, driver peak "
              f"RSS {float(lines[-1]):.0f} MB, TensorFlow in the driver: {lines[-2]}", flush=True)


DRIVER = """
import resource, sys, time
from pathlib import Path
from pipeline import config as config_mod
from pipeline.batch.driver import RunOptions, run
cfg = config_mod.load(overrides={"image.size": 64, "optim.iterations": 1})
started = time.perf_counter()
result = run(RunOptions([Path(sys.argv[1])], [Path(sys.argv[2])], Path(sys.argv[3]), cfg, quiet=True, workers=2))
usage = resource.getrusage(resource.RUSAGE_SELF)
print(result.done, result.failed, usage.ru_utime + usage.ru_stime, time.perf_counter() - started)
"""


def driver_cpu(repeats: int, tree: Path = ROOT) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("NST_BENCH_TMP")) as tmp:
        style = make_style(Path(tmp) / "style.png")
        costs: dict[int, list[tuple[float, float]]] = {10: [], 1000: []}
        for count in costs:
            make_photos(Path(tmp) / f"in{count}", count, folders=10)
        for r in range(repeats):
            for count in (10, 1000):
                out = Path(tmp) / f"out{count}-{r}"
                printed, _, _, _ = child(DRIVER, str(Path(tmp) / f"in{count}"), str(style), str(out), tree=tree)
                done, failed, cpu, wall = printed.split()[-4:]
                assert int(done) == count and int(failed) == 0, printed
                costs[count].append((float(cpu), float(wall)))
                print(f"  driver: {count} photos, driver CPU {float(cpu):.2f} s, wall {float(wall):.1f} s", flush=True)
        per = [(big[0] - small[0]) / 990 * 1000 for big, small in zip(costs[1000], costs[10])]
        print(f"driver: CPU per photo beyond start-up {statistics.median(per):.2f} ms "
              f"({min(per):.2f}..{max(per):.2f}, n={len(per)}); wall for 1,000 photos "
              f"{statistics.median(c[1] for c in costs[1000]):.0f} s on 2 workers", flush=True)


def synthetic_records(out: Path, count: int) -> list[dict]:
    return [{"id": f"archive/{n // 100:04d}/IMG_{n:06d}.jpg", "kind": "image",
             "source": f"/photos/archive/{n // 100:04d}/IMG_{n:06d}.jpg",
             "output": f"{out}/archive/{n // 100:04d}/IMG_{n:06d}.jpg",
             "state": "failed" if n % 1000 == 7 else "done", "reason": "corrupt image" if n % 1000 == 7 else "",
             "seconds": 1.0 + (n % 7) / 10, "worker": f"worker-{n % 8}", "node": "node-a", "warning": "",
             "duplicate_of": None} for n in range(count)]


def report() -> None:
    from pipeline.batch.report import LiveReport, write_report

    with tempfile.TemporaryDirectory(dir=os.environ.get("NST_BENCH_TMP")) as tmp:
        for count in (1000, 100_000):
            out = Path(tmp) / f"out{count}"
            out.mkdir()
            records = synthetic_records(out, count)
            started = time.perf_counter()
            json_path, html_path = write_report(out, records, {"image": {"size": 384}}, 0.0, 3600.0)
            seconds = time.perf_counter() - started
            index = sum(p.stat().st_size for p in (out / ".nst" / "report").glob("*.js"))
            print(f"report: {count} items written in {seconds:.2f} s; report.html {html_path.stat().st_size / 1e3:.1f} kB, "
                  f"gallery index {index / 1e6:.2f} MB in {len(list((out / '.nst' / 'report').glob('*.js')))} files, "
                  f"summary.json {json_path.stat().st_size / 1e6:.2f} MB", flush=True)
        out = Path(tmp) / "live"
        out.mkdir()
        live = LiveReport(out, {}, time.time(), 200_000, 0, [])
        live.start_clock()
        for record in synthetic_records(out, 100_000):
            live.add(record)
        live.tick(force=True)
        times = []
        for batch in range(5):
            for record in synthetic_records(out, 10):
                live.add({**record, "id": f"{record['id']}-{batch}"})
            started = time.perf_counter()
            live.tick(force=True)
            times.append(time.perf_counter() - started)
        print(f"report: one live rewrite after 10 more items of a run with 100,000 finished: "
              f"{statistics.median(times) * 1000:.1f} ms (median of {len(times)}); "
              f"page {(out / 'report.html').stat().st_size / 1e3:.1f} kB", flush=True)


def status(count: int) -> None:
    from pipeline.batch.ledger import Ledger
    from pipeline.batch.status import status_lines

    with tempfile.TemporaryDirectory(dir=os.environ.get("NST_BENCH_TMP")) as tmp:
        out = Path(tmp) / "out"
        with Ledger(out) as ledger:
            run_id = ledger.start_run("h", {}, 8)
            ledger.upsert_items(((f"a/{n:06d}.jpg", "image", Path(f"/in/{n:06d}.jpg"), out / f"a/{n:06d}.jpg", False)
                                 for n in range(count)), "h")
            with ledger.transaction() as conn:
                conn.execute("UPDATE items SET state = 'done', seconds = 1.0, finished_at = 1.0 WHERE rowid % 3 != 0")
                conn.execute("UPDATE items SET state = 'failed', error = 'corrupt' WHERE rowid % 1000 = 0")
            ledger.finish_run(run_id, "interrupted")
        times = []
        for _ in range(3):
            started = time.perf_counter()
            status_lines(out)
            times.append(time.perf_counter() - started)
        printed, wall, _, _ = child(PEAK + "import atexit, sys\natexit.register(lambda: print(peak_mb()))\n"
                                    "from pipeline.cli.main import run_cli\n"
                                    "sys.argv = ['nst', 'status', sys.argv[1]]\nrun_cli()", str(out))
        peak = float(printed.strip().splitlines()[-1])
        print(f"status: {count} items: status_lines {statistics.median(times):.2f} s (median of 3), "
              f"`nst status` process {wall:.2f} s wall, peak RSS {peak:.0f} MB, {len(printed.splitlines()) - 1} lines",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-plan", action="store_true")
    parser.add_argument("--skip-driver", action="store_true")
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--skip-status", action="store_true")
    parser.add_argument("--estimate", action="store_true")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="run the planning and driver children from this source tree (a comparison)")
    parser.add_argument("--estimate-count", type=int, default=3)
    parser.add_argument("--estimate-size", type=int, default=96)
    args = parser.parse_args()
    if not args.skip_report:
        report()
    if not args.skip_status:
        status(args.photos)
    if not args.skip_plan:
        planning(args.photos, args.tree)
    if not args.skip_driver:
        driver_cpu(args.repeats, args.tree)
    if args.estimate:
        from bench_archive import estimate_vs_real

        estimate_vs_real(args.estimate_count, args.estimate_size)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
