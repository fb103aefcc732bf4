"""Micro-batching across requests: the requests that arrive while a batch runs run together.

Every stage of the funnel is vectorised over the users of a
:class:`~recfunnel.types.RequestBatch`, and most of the cost of one user's request is
per call (Python, NumPy and torch dispatch), not per user: eight users scored in one
DIEN forward cost little more than one. :class:`MicroBatcher` is the dynamic batcher
of Triton's model server: a request waits for a free worker; when a worker takes it,
it also takes every request queued behind it (up to ``max_batch``), optionally
waiting ``window_s`` for more, and runs them as one batch. At low load a batch is one
request and nothing waits; under load batches grow by themselves.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Runs ``process`` on batches of the items given to :meth:`submit` from many threads.

    Args:
        process: items -> one result per item, in order; a result that is an exception is
            raised to that item's caller; an exception raised by ``process`` goes to every
            caller of the batch.
        max_batch: the most items in one batch.
        window_s: how long a worker waits for more items after the first (0: it takes what
            is queued and starts at once).
        workers: batches run at once (threads).

    >>> batcher = MicroBatcher(lambda xs: [x * 10 for x in xs], max_batch=4)
    >>> batcher.submit(3)
    30
    >>> batcher.close()
    """

    def __init__(self, process: Callable[[list[T]], Sequence[R | BaseException]], *, max_batch: int = 32,
                 window_s: float = 0.0, workers: int = 1, name: str = "recfunnel-batch"):
        if max_batch < 1 or workers < 1 or window_s < 0:
            raise ValueError("max_batch and workers must be >= 1 and window_s >= 0")
        self.process = process
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self.batches = 0  # batches run, and items in them: the mean batch size is items / batches
        self.items = 0
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, item: T) -> R:
        """Run ``item`` in the next batch and return its result (or raise its exception)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put((item, future))
        return future.result()

    def close(self) -> None:
        """Stop the workers once the queued items are done."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)

    def _take(self) -> list[tuple[T, Future]] | None:
        first = self._queue.get()
        if first is _STOP:
            return None
        batch = [first]
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # for this worker's next take
                break
            batch.append(item)
        return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            self.batches += 1
            self.items += len(batch)
            try:
                results = list(self.process([item for item, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"process returned {len(results)} results for {len(batch)} items")
            except BaseException as e:  # noqa: BLE001 - every caller of the batch gets the error
                results = [e] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
