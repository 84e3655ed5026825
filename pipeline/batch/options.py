"""What a run is asked to do (RunOptions) and what it did (RunResult)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config

if TYPE_CHECKING:
    from pipeline.batch.estimate import Estimate

Event = Callable[[str, dict], None]


@dataclass
class RunOptions:
    inputs: Sequence[Path]
    styles: Sequence[Path]
    out_dir: Path
    config: Config
    style_weights: Sequence[float] | None = None
    address: str | None = None
    workers: int | None = None  # None: config's run.workers (0 = automatic)
    gpus_per_worker: float | None = None
    threads_per_worker: int | None = None  # None: fitted to the cores (see scheduling.plan_workers)
    dry_run: bool = False
    overwrite: bool = False  # redo everything, also outputs that exist or are done
    quiet: bool = False
    worker_options: Sequence[dict] | None = None  # per-worker Ray options (e.g. custom resources)
    on_event: Event | None = None  # "submit" / "result" / "failure" notifications (tests, tools)
    executor: str = "ray"  # "ray" (nst run: local runtime or a cluster) | "local" (in this process, one worker)
    style_masks: Sequence[Path | None] | None = None  # one per style (None: the whole image)
    kinds: frozenset[str] = frozenset({"image", "video"})  # what the command paints ("image", "video")


@dataclass
class RunResult:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    refused: int = 0
    records: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    report: Path | None = None
    config_hash: str = ""
    replaced_workers: int = 0  # actors started in place of dead ones
    warnings: int = 0  # items done with something the user must know (e.g. frames lost to a damaged file)
    estimate: Estimate | None = None  # --dry-run: the work and its expected duration

    @property
    def exit_code(self) -> int:
        """0 all done, 1 something failed or was refused, 3 all done but with warnings."""
        return 1 if self.failed or self.refused else 3 if self.warnings else 0
