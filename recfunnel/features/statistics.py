"""Point-in-time event statistics, indexed once and queried many times.

:class:`EventCounter` answers "how many events (or how much weight) did key k
have in the window ``[t - w, t)``" for millions of (k, t) queries with two
``searchsorted`` calls. The window is closed on the left and open on the right:
an event at the query time itself is never counted, which is the no-leakage rule
of the whole feature layer (see :mod:`recfunnel.data.history`).
"""

from __future__ import annotations

import numpy as np

DAY = 86_400


class EventCounter:
    """Windowed counts of keyed, timestamped events.

    Args:
        keys: (N,) int64 event keys in ``[0, n_keys)`` (item or user indices).
        times: (N,) int64 event times.
        weights: (N,) optional event weights (counts when omitted).
        n_keys: size of the key space.

    >>> c = EventCounter(np.array([0, 0, 1]), np.array([10, 20, 20]), n_keys=2)
    >>> c.count(np.array([0, 0, 1]), np.array([20, 21, 20]), window=None).tolist()
    [1.0, 2.0, 0.0]
    >>> c.count(np.array([0]), np.array([21]), window=5).tolist()
    [1.0]
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray, n_keys: int, weights: np.ndarray | None = None):
        keys = np.asarray(keys, np.int64)
        times = np.asarray(times, np.int64)
        self.n_keys = int(n_keys)
        self.t_min = int(times.min()) if len(times) else 0
        self.t_max = int(times.max()) if len(times) else 0
        # slots per key: times shifted to [1, span-2]; 0 and span-1 are sentinels for clipped queries
        self.span = self.t_max - self.t_min + 3
        if self.n_keys * self.span >= np.iinfo(np.int64).max // 2:
            raise ValueError("time range too large for the combined key; use coarser time units")
        combined = keys * self.span + (times - self.t_min + 1)
        order = np.argsort(combined, kind="stable")
        self.combined_ = combined[order]
        w = np.ones(len(keys)) if weights is None else np.asarray(weights, np.float64)[order]
        self.cumulative_ = np.concatenate([[0.0], np.cumsum(w)])
        first_time = np.full(self.n_keys, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first_time, keys, times)
        self.first_time_ = first_time
        last_time = np.full(self.n_keys, np.iinfo(np.int64).min, np.int64)
        np.maximum.at(last_time, keys, times)
        self.last_time_ = last_time

    def _position(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Number of events with combined key < (key, time): the events of earlier keys and of this key before time."""
        shifted = np.clip(times - self.t_min + 1, 0, self.span - 1)
        return np.searchsorted(self.combined_, keys * self.span + shifted, side="left")

    def count(self, keys: np.ndarray, times: np.ndarray, window: int | None) -> np.ndarray:
        """(Q,) float64 weight of events of ``keys`` with ``times - window <= t < times``.

        ``window=None`` counts everything before ``times``. Keys < 0 (unknown) give 0.
        """
        keys = np.asarray(keys, np.int64)
        times = np.asarray(times, np.int64)
        known = (keys >= 0) & (keys < self.n_keys)
        k = np.where(known, keys, 0)
        hi = self._position(k, times)
        if window is None:
            lo = self._position(k, np.full_like(times, self.t_min - 10))
        else:
            lo = self._position(k, times - int(window))
        out = self.cumulative_[hi] - self.cumulative_[lo]
        return np.where(known, out, 0.0)

    def last_before(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(Q,) int64 time of the key's latest event strictly before ``times``; int64 min when none."""
        keys = np.asarray(keys, np.int64)
        known = (keys >= 0) & (keys < self.n_keys)
        k = np.where(known, keys, 0)
        hi = self._position(k, np.asarray(times, np.int64))
        lo = self._position(k, np.full(len(k), self.t_min - 10, np.int64))
        has = known & (hi > lo)
        prev = self.combined_[np.maximum(hi - 1, 0)] - k * self.span - 1 + self.t_min
        return np.where(has, prev, np.iinfo(np.int64).min)


def counter_to_arrays(counter: EventCounter, prefix: str) -> dict[str, np.ndarray]:
    """Arrays that restore ``counter`` exactly (for npz artifacts)."""
    return {
        f"{prefix}combined": counter.combined_,
        f"{prefix}cumulative": counter.cumulative_,
        f"{prefix}first": counter.first_time_,
        f"{prefix}last": counter.last_time_,
        f"{prefix}meta": np.array([counter.n_keys, counter.t_min, counter.t_max, counter.span], np.int64),
    }


def counter_from_arrays(arrays: dict[str, np.ndarray], prefix: str) -> EventCounter:
    counter = EventCounter.__new__(EventCounter)
    n_keys, t_min, t_max, span = (int(v) for v in arrays[f"{prefix}meta"])
    counter.n_keys, counter.t_min, counter.t_max, counter.span = n_keys, t_min, t_max, span
    counter.combined_ = arrays[f"{prefix}combined"]
    counter.cumulative_ = arrays[f"{prefix}cumulative"]
    counter.first_time_ = arrays[f"{prefix}first"]
    counter.last_time_ = arrays[f"{prefix}last"]
    return counter
