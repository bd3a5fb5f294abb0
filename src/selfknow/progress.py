"""A progress bar that shows tokens/s beside records and ETA, since tokens are what cost time.

A pass made of parts (saved as they go, :func:`selfknow.checkpoints.computed_in_parts`) shows one bar: inside
:func:`parts_progress`, the passes of each part add their tokens to it instead of opening bars of their own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

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


class _TokensOnly:
    """A part's view of the bar of the pass it belongs to: its tokens count, its rows are counted by part."""

    def __init__(self, whole: TokenProgress):
        self._whole = whole

    def advance(self, records: int, tokens: int) -> None:
        self._whole.advance(0, tokens)


_WHOLE_PASS: ContextVar[TokenProgress | None] = ContextVar("selfknow_whole_pass", default=None)


@contextmanager
def token_progress(total: int, description: str, enabled: bool = True) -> Iterator[TokenProgress | _TokensOnly]:
    whole = _WHOLE_PASS.get()
    if whole is not None:
        yield _TokensOnly(whole)
        return
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


@contextmanager
def parts_progress(total: int, description: str, enabled: bool = True) -> Iterator[TokenProgress]:
    """One bar for a pass in parts; the caller advances it by each part's rows (computed or read back)."""
    with token_progress(total, description, enabled) as bar:
        marker = _WHOLE_PASS.set(bar)
        try:
            yield bar
        finally:
            _WHOLE_PASS.reset(marker)
