"""How :meth:`~recfunnel.pipeline.online.funnel.Funnel.run` runs each stage.

The funnel owns the order of the stages (channels -> merge -> rank -> re-rank); a
:class:`StageRunner` owns how each one runs:

* :class:`PlainRunner` (the default): inline, one after the other; an exception
  propagates. The offline path (evaluation, batch recommendation) uses it.
* :class:`BudgetedRun`, one per request, made by a shared :class:`BudgetedRunner`:
  the online service's runner, where a request is always answered in time, if need
  be from the fallback.

  - every retrieval channel runs concurrently in the runner's shared thread pool and
    has ``channel_timeout`` to answer; a channel that raises or is late is dropped from
    this request (its thread cannot be killed: it finishes in the background, and a
    channel with ``max_late`` calls still running is skipped outright until they end,
    so a hung channel never occupies the whole pool);
  - a fallback that raises is replaced by the static list (minus each user's excluded
    items) given to :meth:`BudgetedRunner.start`;
  - rank and re-rank each have ``stage_timeout`` and never run past the end-to-end
    budget: a stage that fails, is late or has no time left is skipped and the
    previous stage's order is kept;
  - the answer is ``degraded`` when anything was dropped or skipped, or when the
    channels found fewer than ``k`` candidates and the fallback filled the rest.

  The result is the same as the plain run whenever nothing is late or fails.

Every outcome is a :class:`~recfunnel.types.StageTrace` with its ``status``
(:data:`OK`, :data:`TIMEOUT`, :data:`ERROR`, :data:`BUSY`, :data:`SKIPPED`).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass

import numpy as np

from recfunnel.stages.base import Retriever
from recfunnel.stages.recall.sparse import exclusion_mask
from recfunnel.types import (
    BUSY,
    ERROR,
    FALLBACK,
    OK,
    PAD,
    SKIPPED,
    TIMEOUT,
    Candidates,
    RequestBatch,
    StageTrace,
)

__all__ = ["StageRunner", "PlainRunner", "Budget", "BudgetedRunner", "BudgetedRun",
           "OK", "TIMEOUT", "ERROR", "BUSY", "SKIPPED", "filter_excluded"]


class StageRunner(ABC):
    """How the funnel runs its stages; :meth:`Funnel.run` decides which run and in what order."""

    @abstractmethod
    def channels(self, request: RequestBatch, calls: Sequence[tuple[Retriever, int]]) -> list[StageTrace]:
        """Run every ``(channel, quota)`` of ``calls`` for ``request``.

        Returns one ``retrieval:<channel>`` trace per call, in order; the channels whose
        trace is :data:`OK` carry their output in ``candidates``, the others are dropped.
        """

    @abstractmethod
    def stage(self, name: str, stage: object, fn: Callable[[Candidates], Candidates],
              candidates: Candidates) -> tuple[Candidates, StageTrace]:
        """Run ``fn(candidates)`` as stage ``name`` (``stage`` is the stage object behind it).

        Returns the output and its trace; where the stage cannot run the output is
        ``candidates`` unchanged (the previous stage's order is kept).
        """

    def fallback(self, request: RequestBatch, fn: Callable[[], Candidates]) -> tuple[Candidates, StageTrace | None]:
        """The fallback's candidates (``fn()``) and a trace when it did not run as planned."""
        return fn(), None

    def finish(self, candidates: Candidates, traces: Sequence[StageTrace], wanted: int) -> None:  # noqa: B027
        """Called once with the answer and every trace; ``wanted``: min(k, retrieval_k)."""


class PlainRunner(StageRunner):
    """Every stage inline, one after the other; an exception propagates to the caller."""

    def channels(self, request: RequestBatch, calls: Sequence[tuple[Retriever, int]]) -> list[StageTrace]:
        zeros = np.zeros(len(request), np.int64)
        traces = []
        for channel, quota in calls:
            t0 = time.perf_counter()
            out = channel.retrieve(request, quota)
            traces.append(StageTrace(f"retrieval:{channel.name}", zeros, _count(out), time.perf_counter() - t0, out))
        return traces

    def stage(self, name: str, stage: object, fn: Callable[[Candidates], Candidates],
              candidates: Candidates) -> tuple[Candidates, StageTrace]:
        t0 = time.perf_counter()
        out = fn(candidates)
        return out, StageTrace(name, _count(candidates), _count(out), time.perf_counter() - t0, out)


@dataclass(frozen=True)
class Budget:
    """Time limits in seconds (see :class:`~recfunnel.serving.settings.ServingSettings`).

    Attributes:
        total: end-to-end budget of a request, from the start of its channels.
        channel_timeout: how long the channels (all at once) have to answer.
        stage_timeout: how long rank and re-rank each have.
        max_late: calls of one stage still running after their request gave up on them
            past which the stage is skipped (:data:`BUSY`) until they end.
    """

    total: float = 0.25
    channel_timeout: float = 0.1
    stage_timeout: float = 0.1
    max_late: int = 2


class _Task:
    """One call in the pool; knows whether the request gave up waiting for it."""

    __slots__ = ("_runner", "_key", "abandoned", "finished", "seconds")

    def __init__(self, runner: BudgetedRunner, key: int):
        self._runner, self._key = runner, key
        self.abandoned = self.finished = False
        self.seconds = 0.0

    def __call__(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds = time.perf_counter() - t0
            with self._runner._lock:
                self.finished = True
                if self.abandoned:
                    self._runner._release_late(self._key)


class BudgetedRunner:
    """The shared part of budgeted runs: the thread pool and the count of late calls per stage.

    One per service; :meth:`start` makes the runner of one request.

    Args:
        budget: the time limits.
        workers: threads of the pool (channels of concurrent requests and late calls share it).

    Example::

        run = runner.start(static_fallback)
        candidates, traces = funnel.run(request, k, trace=True, runner=run)
        run.degraded, run.reasons, run.fallback_items
    """

    def __init__(self, budget: Budget, workers: int = 16):
        self.budget = budget
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recfunnel-stage")
        self._lock = threading.Lock()
        self._late: dict[int, int] = {}

    def start(self, static_fallback: Candidates | None = None, *, arrived: float | None = None) -> BudgetedRun:
        """The runner of one request (not reusable); ``static_fallback``: (1, F) candidates
        answered, minus each user's excluded items, if the funnel's fallback itself raises;
        ``arrived``: the request's arrival (``time.perf_counter()``), from which the budget
        counts (default: when the channels start), so time spent queueing is spent budget."""
        return BudgetedRun(self, static_fallback, arrived)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def late_calls(self, stage: object) -> int:
        """Calls of ``stage`` still running after their request gave up on them."""
        with self._lock:
            return self._late.get(id(stage), 0)

    def _release_late(self, key: int) -> None:  # under self._lock
        left = self._late.get(key, 0) - 1
        if left > 0:
            self._late[key] = left
        else:
            self._late.pop(key, None)

    def _submit(self, stage: object, fn, *args) -> tuple[_Task, Future] | None:
        """Submit ``fn(*args)`` for ``stage``; None when the stage has too many late calls."""
        key = id(stage)
        with self._lock:
            if self._late.get(key, 0) >= self.budget.max_late:
                return None
        task = _Task(self, key)
        return task, self.pool.submit(task, fn, *args)

    def _abandon(self, task: _Task) -> bool:
        """Give up waiting for ``task``; False when it finished after all."""
        with self._lock:
            if task.finished:
                return False
            task.abandoned = True
            self._late[task._key] = self._late.get(task._key, 0) + 1
            return True


class BudgetedRun(StageRunner):
    """One request run within the budget of its :class:`BudgetedRunner`.

    After :meth:`Funnel.run`:

    Attributes:
        degraded: (B,) bool, true where a stage was dropped or skipped or the fallback
            filled what the channels did not find.
        reasons: one line per degradation, for the response.
        fallback_items: (B,) items of the answer that came from the fallback.
        seconds: wall time from the request's arrival (else the start of the channels) to the answer.
    """

    def __init__(self, runner: BudgetedRunner, static_fallback: Candidates | None = None,
                 arrived: float | None = None):
        self.runner = runner
        self.budget = runner.budget
        self.static_fallback = static_fallback
        self.reasons: list[str] = []
        self.degraded = np.zeros(0, bool)
        self.fallback_items = np.zeros(0, np.int64)
        self.seconds = 0.0
        self._start = self._deadline = None
        self._arrived = arrived

    def _begin(self) -> None:
        if self._start is not None:
            raise RuntimeError("a BudgetedRun runs one request; make another with BudgetedRunner.start()")
        self._start = time.perf_counter() if self._arrived is None else self._arrived
        self._deadline = self._start + self.budget.total

    def channels(self, request: RequestBatch, calls: Sequence[tuple[Retriever, int]]) -> list[StageTrace]:
        self._begin()
        t0 = time.perf_counter()
        zeros = np.zeros(len(request), np.int64)
        if self._deadline <= t0:  # the request queued past its budget: no channel is worth starting
            self.reasons.append("no budget left for the channels (the request queued past it)")
            return [StageTrace(f"retrieval:{channel.name}", zeros, zeros, 0.0, None, SKIPPED) for channel, _ in calls]
        submitted = [(channel, self.runner._submit(channel, channel.retrieve, request, quota))
                     for channel, quota in calls]
        timeout = max(0.0, min(self.budget.channel_timeout, self._deadline - time.perf_counter()))
        wait_futures([s[1] for _, s in submitted if s is not None], timeout=timeout)
        traces = []
        for channel, call in submitted:
            name = f"retrieval:{channel.name}"
            if call is None:
                traces.append(StageTrace(name, zeros, zeros, 0.0, None, BUSY))
                self.reasons.append(f"channel {channel.name} skipped: earlier calls still running")
                continue
            task, future = call
            if not future.done() and self.runner._abandon(task):
                traces.append(StageTrace(name, zeros, zeros, time.perf_counter() - t0, None, TIMEOUT))
                self.reasons.append(f"channel {channel.name} timed out")
                continue
            exc = future.exception()
            if exc is not None:
                traces.append(StageTrace(name, zeros, zeros, task.seconds, None, ERROR, _describe(exc)))
                self.reasons.append(f"channel {channel.name} failed: {_describe(exc)}")
                continue
            out = future.result()
            traces.append(StageTrace(name, zeros, _count(out), task.seconds, out))
        return traces

    def fallback(self, request: RequestBatch, fn: Callable[[], Candidates]) -> tuple[Candidates, StageTrace | None]:
        # inline, without a timeout: the fallback is a cheap precomputed list
        t0 = time.perf_counter()
        try:
            return fn(), None
        except Exception as e:  # noqa: BLE001 - the fallback of last resort: the static list
            self.reasons.append(f"fallback failed: {_describe(e)}")
            out = (Candidates.empty(len(request)) if self.static_fallback is None
                   else filter_excluded(self.static_fallback, request))
            zeros = np.zeros(len(request), np.int64)
            return out, StageTrace(f"retrieval:{FALLBACK}", zeros, _count(out), time.perf_counter() - t0, out,
                                   ERROR, _describe(e))

    def stage(self, name: str, stage: object, fn: Callable[[Candidates], Candidates],
              candidates: Candidates) -> tuple[Candidates, StageTrace]:
        n_in = _count(candidates)
        t0 = time.perf_counter()
        status, out, error = self._call(stage, min(self.budget.stage_timeout, self._deadline - t0), fn, candidates)
        seconds = time.perf_counter() - t0
        if status == OK:
            return out, StageTrace(name, n_in, _count(out), seconds, out)
        self.reasons.append(f"{name} {status}" + (f": {error}" if error else "") + "; kept the previous order")
        return candidates, StageTrace(name, n_in, np.zeros(len(n_in), np.int64), seconds, None, status, error)

    def _call(self, stage: object, timeout: float, fn, *args):
        """(status, result, error) of one stage call with a timeout."""
        if timeout <= 0:
            return SKIPPED, None, None
        submitted = self.runner._submit(stage, fn, *args)
        if submitted is None:
            return BUSY, None, None
        task, future = submitted
        done, _ = wait_futures([future], timeout=timeout)
        if not done and self.runner._abandon(task):
            return TIMEOUT, None, None
        exc = future.exception()
        if exc is not None:
            return ERROR, None, _describe(exc)
        return OK, future.result(), None

    def finish(self, candidates: Candidates, traces: Sequence[StageTrace], wanted: int) -> None:
        merged = next(t for t in traces if t.stage == "retrieval")
        short = (_count(merged.candidates) - _fallback_count(merged.candidates)) < wanted
        if short.any():
            self.reasons.append("channels found fewer than k candidates: filled from the fallback")
        self.degraded = short | any(t.status != OK for t in traces)
        self.fallback_items = _fallback_count(candidates)
        self.seconds = time.perf_counter() - self._start


def _count(c: Candidates) -> np.ndarray:
    return c.valid.sum(axis=1).astype(np.int64)


def _fallback_count(c: Candidates) -> np.ndarray:
    fb = c.channel_scores.get(FALLBACK)
    if fb is None:
        return np.zeros(len(c), np.int64)
    # an item found by a channel carries NaN under "fallback"
    return (~np.isnan(fb) & c.valid).sum(axis=1).astype(np.int64)


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def filter_excluded(candidates: Candidates, request: RequestBatch) -> Candidates:
    """``candidates`` broadcast to the batch with each row's excluded items removed."""
    b = len(request)
    items = np.broadcast_to(candidates.item_index, (b, candidates.item_index.shape[1]))
    score = np.broadcast_to(candidates.score, items.shape)
    keep = (items >= 0) & ~exclusion_mask(request.exclude, np.arange(b)[:, None], items)
    score = np.where(keep, score, -np.inf).astype(np.float32)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept items first, in their order
    rows = np.arange(b)[:, None]
    return Candidates(np.where(keep, items, PAD)[rows, order], score[rows, order])
