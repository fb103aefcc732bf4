"""Nearline event counters that add to the ranker's fitted statistics at serving time.

The ranker's statistics features (:class:`~recfunnel.features.ranking.RankingFeatureBuilder`)
read :class:`~recfunnel.features.statistics.EventCounter` s indexed at fit time.
Nearline events must count in them within a second, without a refit, and with
the same no-leakage rule (only events strictly before the request time). Here:

* :class:`GrowingCounter` indexes events as they arrive: a log-structured list of
  small sorted :class:`EventCounter` segments, each older segment more than twice
  the size of the next, so a batch of ``n`` events costs ``O(n log N)`` amortised
  and a query ``O(log N)`` segments (``N`` events in all).
* the nearline state gives them to the ranker as a
  :class:`~recfunnel.stages.base.StatisticsOverlay`
  (:meth:`~recfunnel.stages.base.Ranker.use_statistics`); the ranker adds them to its
  fitted counters (:mod:`recfunnel.features.overlay`: :class:`CounterOverlay`,
  :func:`overlay_feature_builder`), so ``transform`` (the code that computed the
  training features) computes the serving features.

>>> counter = GrowingCounter()
>>> counter.add(np.array([0, 2, 0]), np.array([30, 30, 40]))
>>> counter.count(np.array([0, 0, 2]), np.array([31, 41, 31]), window=None).tolist()
[1.0, 2.0, 1.0]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from recfunnel.features.overlay import (
    COUNTER_ATTRIBUTES,
    CounterOverlay,
    NearlineFeatureBuilder,
    overlay_feature_builder,
)
from recfunnel.features.statistics import EventCounter

_NEVER_FIRST = np.iinfo(np.int64).max
_NEVER_LAST = np.iinfo(np.int64).min


@dataclass(frozen=True)
class _Segment:
    keys: np.ndarray
    times: np.ndarray
    weights: np.ndarray
    counter: EventCounter

    @classmethod
    def build(cls, keys: np.ndarray, times: np.ndarray, weights: np.ndarray) -> _Segment:
        n_keys = int(keys.max(initial=-1)) + 1
        return cls(keys, times, weights, EventCounter(keys, times, n_keys, weights))

    def __len__(self) -> int:
        return len(self.keys)


class GrowingCounter:
    """Windowed counts of events added over time (same answers as one ``EventCounter`` of them all).

    Thread-safe: :meth:`add` swaps in a new tuple of segments, readers use the tuple
    they read first.
    """

    def __init__(self) -> None:
        self._segments: tuple[_Segment, ...] = ()
        self._lock = threading.Lock()
        self.first_time_ = np.zeros(0, np.int64)
        self.last_time_ = np.zeros(0, np.int64)
        self.total_ = np.zeros(0, np.float64)
        self.version = 0

    @property
    def n_keys(self) -> int:
        return len(self.first_time_)

    def __len__(self) -> int:
        return sum(len(s) for s in self._segments)

    def add(self, keys: np.ndarray, times: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Index events ``(keys >= 0, times, weights)``; negative keys are dropped."""
        keys = np.asarray(keys, np.int64).ravel()
        times = np.asarray(times, np.int64).ravel()
        w = np.ones(len(keys)) if weights is None else np.asarray(weights, np.float64).ravel()
        ok = keys >= 0
        keys, times, w = keys[ok], times[ok], w[ok]
        if len(keys) == 0:
            return
        with self._lock:
            size = int(keys.max()) + 1
            first, last, total = self.first_time_, self.last_time_, self.total_
            if size > len(first):  # new arrays: readers keep the old ones
                grow = size - len(first)
                first = np.concatenate([first, np.full(grow, _NEVER_FIRST, np.int64)])
                last = np.concatenate([last, np.full(grow, _NEVER_LAST, np.int64)])
                total = np.concatenate([total, np.zeros(grow)])
            else:
                first, last, total = first.copy(), last.copy(), total.copy()
            np.minimum.at(first, keys, times)
            np.maximum.at(last, keys, times)
            np.add.at(total, keys, w)
            segments = list(self._segments)
            new = (keys, times, w)
            # log-structured merge: keep every segment more than twice the size of the next
            while segments and len(segments[-1]) <= 2 * len(new[0]):
                old = segments.pop()
                new = (np.concatenate([old.keys, new[0]]), np.concatenate([old.times, new[1]]),
                       np.concatenate([old.weights, new[2]]))
            segments.append(_Segment.build(*new))
            self.first_time_, self.last_time_, self.total_ = first, last, total
            self._segments = tuple(segments)
            self.version += 1

    def count(self, keys: np.ndarray, times: np.ndarray, window: int | None) -> np.ndarray:
        """(Q,) float64 weight of events of ``keys`` with ``times - window <= t < times``."""
        keys = np.asarray(keys, np.int64)
        out = np.zeros(keys.shape, np.float64)
        for seg in self._segments:
            out += seg.counter.count(keys, times, window)
        return out

    def last_before(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(Q,) int64 time of the key's latest event strictly before ``times``; int64 min when none."""
        keys = np.asarray(keys, np.int64)
        out = np.full(keys.shape, _NEVER_LAST, np.int64)
        for seg in self._segments:
            out = np.maximum(out, seg.counter.last_before(keys, times))
        return out

    def totals(self, keys: np.ndarray) -> np.ndarray:
        """(Q,) float64 weight of all events of ``keys`` (any time)."""
        keys = np.asarray(keys, np.int64)
        total = self.total_
        ok = (keys >= 0) & (keys < len(total))
        out = np.zeros(keys.shape, np.float64)
        out[ok] = total[keys[ok]]
        return out


__all__ = ["COUNTER_ATTRIBUTES", "CounterOverlay", "GrowingCounter", "NearlineFeatureBuilder",
           "overlay_feature_builder"]
