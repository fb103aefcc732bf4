"""Budgets and degradation: a request is always answered in time, if need be from the fallback.

:class:`BudgetedRunner` runs one request batch through a :class:`Funnel` the way the
online service needs it:

* every retrieval channel runs concurrently in a shared thread pool and has
  ``channel_timeout`` to answer; a channel that raises or is late is dropped from
  this request (its thread cannot be killed: it finishes in the background, and a
  channel with ``max_late`` calls still running is skipped outright until they end,
  so a hung channel never occupies the whole pool);
* the surviving channels are merged by the funnel's own :meth:`Funnel.merge` (quotas,
  RRF, the popular fallback filling short rows), then ranked and re-ranked by
  :meth:`Funnel.rank` / :meth:`Funnel.rerank`, each with ``stage_timeout`` and never
  past the end-to-end budget: a stage that fails, is late or has no time left is
  skipped and the previous stage's order is kept;
* the answer is ``degraded`` when anything was dropped or skipped, or when the
  channels found fewer than ``k`` candidates and the fallback filled the rest.

The result is the same as :meth:`Funnel.run` whenever nothing is late or fails.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

import numpy as np

from recfunnel.pipeline.online.funnel import Funnel
from recfunnel.stages.recall.merge import FALLBACK
from recfunnel.stages.recall.sparse import exclusion_mask
from recfunnel.types import PAD, Candidates, RequestBatch, top_k_columns

OK, TIMEOUT, ERROR, BUSY, SKIPPED = "ok", "timeout", "error", "busy", "skipped"


@dataclass(frozen=True)
class Budget:
    """Time limits in seconds (see :class:`~recfunnel.serving.settings.ServingSettings`)."""

    total: float = 0.25
    channel_timeout: float = 0.1
    stage_timeout: float = 0.1
    max_late: int = 2

    @classmethod
    def from_settings(cls, settings) -> Budget:
        return cls(settings.budget_ms / 1e3, settings.channel_timeout_ms / 1e3,
                   settings.stage_timeout_ms / 1e3, settings.max_late_per_channel)


@dataclass
class StageOutcome:
    """What one stage or channel did for one request batch.

    Attributes:
        stage: ``retrieval:<channel>``, ``retrieval`` (the merge), ``rank`` or ``rerank``.
        status: ok, timeout (late, dropped), error (raised, dropped), busy (skipped: earlier
            calls still hung) or skipped (no time left in the budget).
        seconds: wall time the request spent on it.
        n_in / n_out: (B,) candidates entering / leaving it (n_out 0 unless ok).
        candidates: its output when ok.
        error: the exception's one-line description when it raised.
    """

    stage: str
    status: str
    seconds: float
    n_in: np.ndarray
    n_out: np.ndarray
    candidates: Candidates | None = None
    error: str | None = None


@dataclass
class BudgetedResult:
    """The answer to a request batch and how it was reached."""

    candidates: Candidates
    stages: list[StageOutcome]
    degraded: np.ndarray  # (B,) bool
    fallback_items: np.ndarray  # (B,) items of the answer that came from the fallback
    seconds: float
    reasons: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> list[str]:
        return [s.stage for s in self.stages if s.status != OK]


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
    """Runs request batches through funnels within a budget, on a shared thread pool.

    Args:
        budget: the time limits.
        workers: threads of the pool (channels of concurrent requests and late calls share it).
    """

    def __init__(self, budget: Budget, workers: int = 16):
        self.budget = budget
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recfunnel-stage")
        self._lock = threading.Lock()
        self._late: dict[int, int] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ late calls
    def _release_late(self, key: int) -> None:  # under self._lock
        left = self._late.get(key, 0) - 1
        if left > 0:
            self._late[key] = left
        else:
            self._late.pop(key, None)

    def late_calls(self, stage: object) -> int:
        with self._lock:
            return self._late.get(id(stage), 0)

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

    def _call_stage(self, stage: object, timeout: float, fn, *args):
        """(status, result, error) of one stage call with a timeout."""
        if timeout <= 0:
            return SKIPPED, None, None
        submitted = self._submit(stage, fn, *args)
        if submitted is None:
            return BUSY, None, None
        task, future = submitted
        done, _ = wait_futures([future], timeout=timeout)
        if not done and self._abandon(task):
            return TIMEOUT, None, None
        exc = future.exception()
        if exc is not None:
            return ERROR, None, _describe(exc)
        return OK, future.result(), None

    # ------------------------------------------------------------------ run
    def run(self, funnel: Funnel, request: RequestBatch, k: int, *,
            static_fallback: Candidates | None = None) -> BudgetedResult:
        """Up to ``k`` items per user of ``request``, always answered within the budget.

        ``static_fallback``: (1, F) candidates used, minus each user's excluded items, if
        the funnel's fallback itself raises.
        """
        start = time.perf_counter()
        deadline = start + self.budget.total
        b = len(request)
        zeros = np.zeros(b, np.int64)
        stages: list[StageOutcome] = []
        reasons: list[str] = []

        # retrieval: every channel at once, one shared timeout
        cfg = funnel.config
        calls = []
        for spec, channel in zip(cfg.channels, funnel.channels, strict=True):
            calls.append((channel, self._submit(channel, channel.retrieve, request, spec.quota)))
        timeout = max(0.0, min(self.budget.channel_timeout, deadline - time.perf_counter()))
        wait_futures([c[1][1] for c in calls if c[1] is not None], timeout=timeout)
        outputs: dict[str, Candidates] = {}
        for channel, submitted in calls:
            name = f"retrieval:{channel.name}"
            if submitted is None:
                stages.append(StageOutcome(name, BUSY, 0.0, zeros, zeros))
                reasons.append(f"channel {channel.name} skipped: earlier calls still running")
                continue
            task, future = submitted
            if not future.done() and self._abandon(task):
                stages.append(StageOutcome(name, TIMEOUT, time.perf_counter() - start, zeros, zeros))
                reasons.append(f"channel {channel.name} timed out")
                continue
            exc = future.exception()
            if exc is not None:
                stages.append(StageOutcome(name, ERROR, task.seconds, zeros, zeros, error=_describe(exc)))
                reasons.append(f"channel {channel.name} failed: {_describe(exc)}")
                continue
            out = future.result()
            outputs[channel.name] = out
            stages.append(StageOutcome(name, OK, task.seconds, zeros, _count(out), out))

        # merge with the fallback (computed here: a cheap precomputed list)
        try:
            fallback = funnel.fallback.retrieve(request, cfg.retrieval_k)
        except Exception as e:  # noqa: BLE001 - the fallback of last resort: the static list
            reasons.append(f"fallback failed: {_describe(e)}")
            fallback = (Candidates.empty(b) if static_fallback is None
                        else filter_excluded(static_fallback, request))
        candidates = funnel.merge(request, outputs, fallback)
        found = _count(candidates) - _fallback_count(candidates)
        stages.append(StageOutcome("retrieval", OK, time.perf_counter() - start, zeros,
                                   _count(candidates), candidates))
        short = found < min(k, cfg.retrieval_k)
        if short.any():
            reasons.append("channels found fewer than k candidates: filled from the fallback")

        # rank and rerank, each with its timeout, never past the budget
        if funnel.ranker is not None:
            candidates = self._stage(stages, reasons, "rank", funnel.ranker, deadline,
                                     funnel.rank, request, candidates, k)
        if funnel.reranker is not None:
            candidates = self._stage(stages, reasons, "rerank", funnel.reranker, deadline,
                                     funnel.rerank, request, candidates, k)
        if candidates.item_index.shape[1] > k or funnel.reranker is None:
            candidates = candidates.take(top_k_columns(candidates.score, k))
        degraded = short | bool(any(s.status != OK for s in stages))
        return BudgetedResult(candidates, stages, degraded, _fallback_count(candidates),
                              time.perf_counter() - start, reasons)

    def _stage(self, stages, reasons, name, stage, deadline, fn, request, candidates, k) -> Candidates:
        n_in = _count(candidates)
        t0 = time.perf_counter()
        timeout = min(self.budget.stage_timeout, deadline - t0)
        status, out, error = self._call_stage(stage, timeout, fn, request, candidates, k)
        seconds = time.perf_counter() - t0
        if status == OK:
            stages.append(StageOutcome(name, OK, seconds, n_in, _count(out), out))
            return out
        zeros = np.zeros(len(n_in), np.int64)
        stages.append(StageOutcome(name, status, seconds, n_in, zeros, error=error))
        reasons.append(f"{name} {status}" + (f": {error}" if error else "") + "; kept the previous order")
        return candidates


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
