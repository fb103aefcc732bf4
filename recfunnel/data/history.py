"""Point-in-time history and statistics.

The no-leakage rule: a feature for a query at time ``t`` reads only events
with ``event_time < t``, strictly before. An event at exactly ``t`` is the
query's own event (the click being predicted) or happened concurrently, and
would not be known by a server answering at ``t``. Everything here follows
that rule, for training rows and serving requests alike.

All functions are vectorised: events are sorted once by (key, time) and each
query finds its range with ``searchsorted``. Ties in time keep the original
event order, so of two events at the same time the later row is the newer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class _EventIndex:
    """Events sorted by (key, time, row); finds, per query, the events of its key before a time."""

    def __init__(self, event_key: np.ndarray, event_time: np.ndarray):
        event_key = np.asarray(event_key)
        event_time = np.asarray(event_time, dtype=np.int64)
        if event_key.ndim != 1 or event_key.shape != event_time.shape:
            raise ValueError(f"event key {event_key.shape} and time {event_time.shape} must be equal 1-d shapes")
        self.keys = np.unique(event_key)
        self.times = np.unique(event_time)
        # (key, time) packed in one int64 over dense ranks, so it can never overflow
        self.stride = len(self.times) + 1
        key_rank = np.searchsorted(self.keys, event_key).astype(np.int64)
        time_rank = np.searchsorted(self.times, event_time).astype(np.int64)
        packed = key_rank * self.stride + time_rank
        self.order = np.argsort(packed, kind="stable")
        self.packed = packed[self.order]

    def query(self, query_key: np.ndarray, query_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Q,) dense key rank of each query (-1 when the key has no events), (Q,) query times."""
        query_key = np.asarray(query_key)
        query_time = np.asarray(query_time, dtype=np.int64)
        if query_key.ndim != 1 or query_key.shape != query_time.shape:
            raise ValueError(f"query key {query_key.shape} and time {query_time.shape} must be equal 1-d shapes")
        if len(self.keys) == 0:
            return np.full(len(query_key), -1, np.int64), query_time
        pos = np.clip(np.searchsorted(self.keys, query_key), 0, len(self.keys) - 1)
        found = self.keys[pos] == query_key
        return np.where(found, pos, -1).astype(np.int64), query_time

    def position_before(self, key_rank: np.ndarray, time: np.ndarray | None) -> np.ndarray:
        """(Q,) index into the sorted events of the first event of ``key_rank`` at or after ``time``.

        ``time=None`` gives the first event of the key. Meaningless where ``key_rank == -1``.
        """
        time_rank = 0 if time is None else np.searchsorted(self.times, time, side="left")
        bound = np.maximum(key_rank, 0) * self.stride + time_rank
        return np.searchsorted(self.packed, bound, side="left")


def last_n_before(
    event_user: np.ndarray,
    event_item: np.ndarray,
    event_time: np.ndarray,
    query_user: np.ndarray,
    query_time: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's user's last ``n`` items strictly before the query time.

    Args:
        event_user: (E,) user of each event.
        event_item: (E,) int item index of each event.
        event_time: (E,) int time of each event.
        query_user: (Q,) user of each query (users without events get an empty history).
        query_time: (Q,) int time of each query.
        n: history length.

    Returns:
        items: (Q, n) int64 newest first, -1 padded.
        times: (Q, n) int64 their times, 0 padded.

    >>> items, times = last_n_before(np.array([0, 0, 0]), np.array([7, 8, 9]), np.array([1, 2, 3]),
    ...                              np.array([0, 0]), np.array([3, 1]), 2)
    >>> items.tolist(), times.tolist()
    ([[8, 7], [-1, -1]], [[2, 1], [0, 0]])
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    event_item = np.asarray(event_item, dtype=np.int64)
    event_time = np.asarray(event_time, dtype=np.int64)
    index = _EventIndex(event_user, event_time)
    if event_item.shape != event_time.shape:
        raise ValueError(f"event_item {event_item.shape} and event_time {event_time.shape} differ in shape")
    key_rank, query_time = index.query(query_user, query_time)
    q = len(key_rank)
    if len(index.packed) == 0:
        return np.full((q, n), -1, np.int64), np.zeros((q, n), np.int64)
    end = index.position_before(key_rank, query_time)
    start = index.position_before(key_rank, None)
    count = np.where(key_rank >= 0, end - start, 0)
    slot = np.arange(n)
    valid = slot[None, :] < count[:, None]
    pos = np.clip(end[:, None] - 1 - slot[None, :], 0, len(index.order) - 1)
    rows = index.order[pos]
    items = np.where(valid, event_item[rows], -1)
    times = np.where(valid, event_time[rows], 0)
    return items.astype(np.int64), times.astype(np.int64)


def windowed_counts(
    event_key: np.ndarray,
    event_time: np.ndarray,
    query_key: np.ndarray,
    query_time: np.ndarray,
    windows: Sequence[int | None],
    event_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Events (or summed weights) of each query's key in time windows before the query.

    Window ``w`` counts events with the same key and ``query_time - w <= t < query_time``;
    ``None`` counts every event before ``query_time``.

    Args:
        event_key: (E,) key of each event (user, item, (user, category) code, ...).
        event_time: (E,) int time of each event.
        query_key: (Q,) key of each query.
        query_time: (Q,) int time of each query.
        windows: window lengths in the time unit of the data (>= 0), or None for all time.
        event_weight: (E,) optional weights to sum instead of counting.

    Returns:
        (Q, len(windows)) float64.

    >>> windowed_counts(np.array(["a", "a", "a", "b"]), np.array([1, 5, 9, 5]),
    ...                 np.array(["a", "c"]), np.array([9, 9]), [4, None]).tolist()
    [[1.0, 2.0], [0.0, 0.0]]
    """
    index = _EventIndex(event_key, event_time)
    weight = np.ones(len(index.packed)) if event_weight is None else np.asarray(event_weight, np.float64)
    if weight.shape != (len(index.packed),):
        raise ValueError(f"event_weight has shape {weight.shape}, expected ({len(index.packed)},)")
    key_rank, query_time = index.query(query_key, query_time)
    out = np.zeros((len(key_rank), len(windows)), np.float64)
    if len(index.packed) == 0:
        return out
    prefix = np.concatenate([[0.0], np.cumsum(weight[index.order])])
    end = index.position_before(key_rank, query_time)
    known = key_rank >= 0
    for col, window in enumerate(windows):
        if window is not None and window < 0:
            raise ValueError(f"windows must be >= 0 or None, got {window}")
        start = index.position_before(key_rank, None if window is None else query_time - window)
        out[:, col] = np.where(known, prefix[end] - prefix[start], 0.0)
    return out
