"""A progress bar that shows tokens/s beside records and ETA, since tokens are what cost time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TokenProgress:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task
        self._start = time.perf_counter()
        self.tokens = 0

    def advance(self, records: int, tokens: int) -> None:
        self.tokens += tokens
        if self._progress is not None and self._task is not None:
            rate = self.tokens / max(time.perf_counter() - self._start, 1e-9)
            self._progress.update(self._task, advance=records, rate=f"{rate:,.0f} tok/s")


@contextmanager
def token_progress(total: int, description: str, enabled: bool = True) -> Iterator[TokenProgress]:
    if not enabled:
        yield TokenProgress(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        yield TokenProgress(progress, progress.add_task(description, total=total, rate="- tok/s"))
