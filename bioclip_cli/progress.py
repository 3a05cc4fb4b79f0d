"""The one progress-bar factory: rich bars with count, rate and ETA, silenced by `--quiet`.

Every layer that does long work takes its bars from here, so one switch turns them all off.
Bars write to stderr; results go to stdout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_quiet: bool | None = None  # None: follow the BIOCLIP_QUIET environment variable


def set_quiet(quiet: bool | None) -> None:
    """Turn every progress bar of this process off (True) or on (False); None: follow BIOCLIP_QUIET."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    if _quiet is not None:
        return _quiet
    return os.environ.get("BIOCLIP_QUIET", "") not in ("", "0")


class Bar:
    """A handle on one bar. `advance(n)` moves it; `update(total=, description=, **info)` changes it.

    Extra keyword arguments of `update` are shown as `key=value` after the ETA (e.g. the loss).
    A quiet bar accepts the same calls and does nothing.
    """

    def __init__(self, progress=None, task_id=None, unit: str = "it"):
        self._progress = progress
        self._task = task_id
        self._unit = unit

    def advance(self, n: float = 1) -> None:
        if self._progress is None:
            return
        self._progress.advance(self._task, n)
        speed = self._progress._tasks[self._task].speed
        if speed and self._unit != "B":  # byte bars show size and speed with rich's own columns
            self._progress.update(self._task, rate=f"{speed:,.1f} {self._unit}/s")

    def update(self, **fields) -> None:
        if self._progress is None:
            return
        known = {k: fields.pop(k) for k in ("total", "completed", "description") if k in fields}
        if fields:
            known["info"] = "  ".join(f"{k}={v}" for k, v in fields.items())
        self._progress.update(self._task, **known)


@contextmanager
def progress_bar(total: float | None, description: str, unit: str = "it", transient: bool = False) -> Iterator[Bar]:
    """A context manager yielding a :class:`Bar` with count, rate and ETA (`unit="B"`: sizes and bytes/s)."""
    if is_quiet():
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    byte_bar = unit == "B"
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn() if byte_bar else MofNCompleteColumn(),
        TransferSpeedColumn() if byte_bar else TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        transient=transient,
    )
    with progress:
        task = progress.add_task(description, total=total, rate="", info="")
        yield Bar(progress, task, unit)


def track(items: Iterable[T], total: int | None, description: str, unit: str = "it") -> Iterator[T]:
    """Iterate `items` with a progress bar."""
    with progress_bar(total, description, unit) as bar:
        for item in items:
            yield item
            bar.advance(1)
