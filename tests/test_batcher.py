from __future__ import annotations

import asyncio
import threading

import pytest

from selfknow.service.batcher import Batcher, Overloaded


def run(coroutine):
    return asyncio.run(coroutine)


class Recorder:
    """A stand-in model: answers each item with its double and remembers the batches it saw."""

    def __init__(self, delay: float = 0.0, fail_on=None):
        self.calls: list[tuple[list, object]] = []
        self.delay, self.fail_on = delay, fail_on
        self.release = threading.Event()

    def __call__(self, items, key):
        self.calls.append((list(items), key))
        if self.delay:
            self.release.wait(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [2 * x for x in items]


async def _with(batcher: Batcher, body):
    await batcher.start()
    try:
        return await body()
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_batch_and_get_their_own_results():
    work = Recorder()
    batcher = Batcher(work, max_batch=8, window=0.05)

    async def body():
        return await asyncio.gather(*(batcher.submit([i], key=32) for i in range(5)))

    results = run(_with(batcher, body))
    assert results == [[0], [2], [4], [6], [8]]
    assert [sorted(items) for items, _ in work.calls] == [[0, 1, 2, 3, 4]]
    assert batcher.pending == 0


def test_batches_never_exceed_the_maximum_or_mix_keys():
    work = Recorder()
    batcher = Batcher(work, max_batch=3, window=0.05)

    async def body():
        jobs = [batcher.submit([i, i + 100], key=i % 2) for i in range(6)]
        return await asyncio.gather(*jobs)

    results = run(_with(batcher, body))
    assert results == [[2 * i, 2 * (i + 100)] for i in range(6)]
    for items, key in work.calls:
        assert len(items) <= 3
        assert {x % 2 for x in items if x < 100} == {key}
    assert sum(len(items) for items, _ in work.calls) == 12  # nothing lost, nothing run twice


def test_requests_beyond_the_bound_are_refused_and_accepted_ones_all_finish():
    work = Recorder(delay=0.2)
    batcher = Batcher(work, max_batch=2, window=0.0, max_pending=3)

    async def body():
        jobs = [asyncio.ensure_future(batcher.submit([i])) for i in range(8)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = run(_with(batcher, body))
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if not isinstance(r, Exception)]
    assert len(refused) == 5 and len(served) == 3
    assert sorted(x for r in served for x in r) == [0, 2, 4]


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on():
    work = Recorder(fail_on=1)
    batcher = Batcher(work, max_batch=4, window=0.0)

    async def body():
        with pytest.raises(ValueError, match="bad item 1"):
            await batcher.submit([1])
        return await batcher.submit([5])

    assert run(_with(batcher, body)) == [10]


def test_a_request_that_timed_out_is_not_run():
    work = Recorder(delay=0.3)
    batcher = Batcher(work, max_batch=1, window=0.0)

    async def body():
        first = asyncio.ensure_future(batcher.submit(["slow"]))
        await asyncio.sleep(0.01)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit(["late"]), 0.05)
        await first
        await asyncio.sleep(0.05)

    run(_with(batcher, body))
    assert [items for items, _ in work.calls] == [["slow"]]
