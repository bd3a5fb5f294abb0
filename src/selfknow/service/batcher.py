"""Gather concurrent requests into batches for one model worker, with a hard bound on waiting work.

A model answers a batch of questions in little more time than one (the matrix products grow taller, not
longer), so requests that arrive within a short window are run together. Requests wait for at most
``window`` seconds after the first of a batch, a batch holds at most ``max_batch`` questions, and at most
``max_pending`` requests may be accepted and unfinished at once: the next one is refused at once
(:class:`Overloaded`, HTTP 503) rather than queued without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


class Overloaded(Exception):
    """The service already holds its maximum of unfinished requests."""


@dataclass
class _Job:
    items: list[Any]
    key: Hashable  # only jobs with equal keys share a batch (e.g. the same token limit)
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Runs ``work(items, key) -> results`` (one result per item) in a worker thread, one batch at a time."""

    def __init__(
        self,
        work: Callable[[list[Any], Hashable], Sequence[Any]],
        *,
        max_batch: int = 16,
        window: float = 0.01,
        max_pending: int = 64,
    ):
        if max_batch < 1 or max_pending < 1 or window < 0:
            raise ValueError("max_batch and max_pending must be ≥ 1 and window ≥ 0")
        self.work, self.max_batch, self.window, self.max_pending = work, max_batch, window, max_pending
        self.pending = 0  # accepted and not yet finished
        self.batches: list[int] = []  # questions per batch run, for monitoring and tests
        self._queue: asyncio.Queue[_Job] | None = None
        self._held: list[_Job] = []  # taken from the queue but left for a later batch (another key)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, items: Sequence[Any], key: Hashable = None) -> list[Any]:
        """Results for ``items``, in order, once a batch containing them has run."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self.pending >= self.max_pending:
            raise Overloaded(f"{self.pending} requests are already waiting (limit {self.max_pending})")
        if len(items) > self.max_batch:
            raise ValueError(f"{len(items)} items in one request; at most {self.max_batch}")
        job = _Job(list(items), key, asyncio.get_running_loop().create_future())
        self.pending += 1
        job.future.add_done_callback(self._finished)
        self._queue.put_nowait(job)
        return await job.future

    def _finished(self, _future: asyncio.Future) -> None:
        self.pending -= 1

    async def _next(self, timeout: float | None) -> _Job | None:
        assert self._queue is not None
        try:
            if timeout is None:
                return await self._queue.get()
            return await asyncio.wait_for(self._queue.get(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            return None

    async def _collect(self) -> list[_Job]:
        """The oldest live job, then every job of the same key that arrives within the window and fits."""
        loop = asyncio.get_running_loop()
        first = self._held.pop(0) if self._held else await self._next(None)
        batch, size = [first], len(first.items)
        for job in list(self._held):
            if job.key == first.key and size + len(job.items) <= self.max_batch:
                self._held.remove(job)
                batch.append(job)
                size += len(job.items)
        deadline = loop.time() + self.window
        while size < self.max_batch:
            job = await self._next(deadline - loop.time())
            if job is None:
                break
            if job.key == first.key and size + len(job.items) <= self.max_batch:
                batch.append(job)
                size += len(job.items)
            else:
                self._held.append(job)
        return [job for job in batch if not job.future.done()]  # a timed-out request is dropped

    async def _serve(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            items = [item for job in batch for item in job.items]
            self.batches.append(len(items))
            try:
                results = await asyncio.to_thread(self.work, items, batch[0].key)
            except Exception as error:  # the requests of this batch fail; the worker lives on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in batch:
                if not job.future.done():
                    job.future.set_result(list(results[start : start + len(job.items)]))
                start += len(job.items)
