"""Turns typed progress records into a rich progress bar (or nothing, with --quiet)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from pipeline.core.types import Iterate

# soft_wrap: a message stays one line whatever the terminal width (logs get grepped).
console = Console(stderr=True, soft_wrap=True)


def error_line(message: str) -> None:
    """One red 'error:' line; the message is plain text (paths may contain [brackets])."""
    console.print(Text("error: ", style="red") + Text(message), soft_wrap=True)


def info_line(message: str) -> None:
    console.print(Text(message), soft_wrap=True)



class IterationBar:
    """One bar per image: iteration, loss and ETA across all scales."""

    def __init__(self, progress: Progress | None, label: str, total: int) -> None:
        self.progress, self.label = progress, label
        self.task = progress.add_task(label, total=total, loss=float("nan")) if progress else None
        self._done_before_scale, self._scale = 0, 1

    def __call__(self, it: Iterate) -> None:
        if self.progress is None:
            return
        if it.scale != self._scale:
            self._done_before_scale = self.progress.tasks[self.task].completed
            self._scale = it.scale
        self.progress.update(self.task, completed=self._done_before_scale + it.iteration, loss=it.loss,
                             description=f"{self.label} [{it.size[1]}x{it.size[0]}]")

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total)


@contextmanager
def progress_bars(quiet: bool = False) -> Iterator[Progress | None]:
    if quiet:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4g}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=not sys.stderr.isatty() and False) as bar:
        yield bar


def run_progress(quiet: bool) -> Progress | None:
    """The run's one bar; redrawn twice a second, since its refresh thread costs the driver CPU all run long."""
    if quiet:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False, refresh_per_second=2)


def say(quiet: bool, message: str) -> None:
    if not quiet:
        console.print(message, highlight=False)
