"""Train / test splits of interaction tables without leakage.

Events are ordered by ``timestamp``; ties keep their original row order (a
stable sort), so of two events with the same timestamp the later row counts as
the newer one. Every function returns ``(train, test)`` DataFrames with a fresh
RangeIndex and the rows in their original order.

* :func:`split_global_time`: one cutoff for everybody (the closest to
  production: train on the past, test on the future).
* :func:`split_user_ratio`: each user's newest fraction of events.
* :func:`split_leave_last_n`: each user's newest ``n`` events.
* :func:`split_random`: a random split; it leaks the future into training and
  is only a baseline.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from recfunnel.errors import DataError

# float slack so that e.g. 0.1 * 30 = 3.0000000000000004 does not round up to 4
_CEIL_SLACK = 1e-9


def _newest_rank(user_index: np.ndarray, timestamp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: its rank from the newest event of its user (0 = newest) and its user's event count."""
    n = len(user_index)
    order = np.lexsort((np.arange(n), timestamp, user_index))
    sorted_users = user_index[order]
    is_start = np.ones(n, bool)
    is_start[1:] = sorted_users[1:] != sorted_users[:-1]
    starts = np.flatnonzero(is_start)
    counts = np.diff(np.append(starts, n))
    group_count = np.repeat(counts, counts)
    position = np.arange(n) - np.repeat(starts, counts)
    rank_sorted = group_count - 1 - position
    newest_rank = np.empty(n, np.int64)
    newest_rank[order] = rank_sorted
    user_count = np.empty(n, np.int64)
    user_count[order] = group_count
    return newest_rank, user_count


def _check_arrays(user_index: np.ndarray, timestamp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    user_index = np.asarray(user_index)
    timestamp = np.asarray(timestamp)
    if user_index.ndim != 1 or user_index.shape != timestamp.shape:
        raise ValueError(f"user_index {user_index.shape} and timestamp {timestamp.shape} must be equal 1-d shapes")
    return user_index, timestamp


def user_temporal_holdout_mask(
    user_index: np.ndarray, timestamp: np.ndarray, ratio: float, min_train: int = 1
) -> np.ndarray:
    """Mask of each user's newest events to hold out.

    A user with ``c`` events holds out ``min(ceil(ratio * c), c - min_train)``
    (never negative) of them, the newest ones. Rounding up means a user with
    2 events and ``ratio=0.2`` holds out one; with ``min_train=1`` a user with a
    single event keeps it in training.

    Args:
        user_index: (N,) integer user of each event.
        timestamp: (N,) time of each event.
        ratio: fraction in [0, 1] of each user's events to hold out.
        min_train: events every user keeps for training.

    Returns:
        (N,) bool, True = holdout.

    >>> user_temporal_holdout_mask(np.array([0, 0, 0, 1]), np.array([5, 1, 5, 9]), 0.3).tolist()
    [False, False, True, False]
    """
    user_index, timestamp = _check_arrays(user_index, timestamp)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    if min_train < 0:
        raise ValueError(f"min_train must be >= 0, got {min_train}")
    newest_rank, user_count = _newest_rank(user_index, timestamp)
    n_holdout = np.ceil(ratio * user_count - _CEIL_SLACK).astype(np.int64)
    n_holdout = np.clip(np.minimum(n_holdout, user_count - min_train), 0, None)
    return newest_rank < n_holdout


def _check_frame(df: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"cannot split: interactions have no {missing} column (columns: {list(df.columns)})")


def _by_mask(df: pd.DataFrame, test: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    return df.loc[~test].reset_index(drop=True), df.loc[test].reset_index(drop=True)


def _user_codes(df: pd.DataFrame) -> np.ndarray:
    codes, _ = pd.factorize(df["user_id"], use_na_sentinel=False)
    return codes.astype(np.int64)


def split_global_time(
    df: pd.DataFrame, *, cutoff: int | None = None, test_fraction: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events at or after ``cutoff`` are test, the rest train.

    Without a cutoff, it is the timestamp of the first of the newest
    ``ceil(test_fraction * N)`` events, so about that fraction is test (more
    when events tie at the cutoff). If that would leave training empty (many
    events at the earliest time), the cutoff moves to the next later
    timestamp; when all timestamps are equal there is no such split and a
    :class:`DataError` is raised (use :func:`split_user_ratio` or
    :func:`split_random`).

    Args:
        df: interactions with a ``timestamp`` column.
        cutoff: first test timestamp; chosen from ``test_fraction`` when None.
        test_fraction: wanted share of test events, in [0, 1).

    Returns:
        (train, test).

    >>> df = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "timestamp": [1, 4, 2, 3]})
    >>> [len(part) for part in split_global_time(df, test_fraction=0.5)]
    [2, 2]
    """
    _check_frame(df, ("timestamp",))
    ts = df["timestamp"].to_numpy()
    if cutoff is None:
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        n = len(ts)
        n_test = math.ceil(test_fraction * n - _CEIL_SLACK)
        if n == 0 or n_test == 0:
            return _by_mask(df, np.zeros(n, bool))
        ordered = np.sort(ts, kind="stable")
        cutoff = ordered[n - n_test]
        if cutoff <= ordered[0]:
            later = ordered[ordered > ordered[0]]
            if len(later) == 0:
                raise DataError(
                    "cannot split by time: all timestamps are equal; use a random or per-user split"
                )
            cutoff = later[0]
    return _by_mask(df, ts >= cutoff)


def split_user_ratio(
    df: pd.DataFrame, test_ratio: float = 0.2, min_train: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's newest ``ceil(test_ratio * count)`` events are test.

    See :func:`user_temporal_holdout_mask` for the rounding and ``min_train``.

    Args:
        df: interactions with ``user_id`` and ``timestamp`` columns.
        test_ratio: fraction of each user's events to hold out.
        min_train: events every user keeps in train (users with a single event stay in train).

    Returns:
        (train, test).
    """
    _check_frame(df, ("user_id", "timestamp"))
    test = user_temporal_holdout_mask(_user_codes(df), df["timestamp"].to_numpy(), test_ratio, min_train)
    return _by_mask(df, test)


def split_leave_last_n(df: pd.DataFrame, n: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's newest ``n`` events are test; every user keeps at least one in train.

    Args:
        df: interactions with ``user_id`` and ``timestamp`` columns.
        n: events per user to hold out (a user with ``c <= n`` events holds out ``c - 1``).

    Returns:
        (train, test).

    >>> df = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "timestamp": [3, 1, 3, 7]})
    >>> train, test = split_leave_last_n(df)
    >>> test.index.size, test["timestamp"].tolist()
    (1, [3])
    """
    _check_frame(df, ("user_id", "timestamp"))
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    newest_rank, user_count = _newest_rank(_user_codes(df), df["timestamp"].to_numpy())
    test = newest_rank < np.minimum(n, user_count - 1)
    return _by_mask(df, test)


def split_random(
    df: pd.DataFrame, test_ratio: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A uniformly random ``round(test_ratio * N)`` events are test (ignores time: a baseline only).

    Args:
        df: interactions.
        test_ratio: share of test events, in [0, 1].
        seed: random seed.

    Returns:
        (train, test).
    """
    if not 0.0 <= test_ratio <= 1.0:
        raise ValueError(f"test_ratio must be in [0, 1], got {test_ratio}")
    n = len(df)
    n_test = int(round(test_ratio * n))
    test = np.zeros(n, bool)
    test[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    return _by_mask(df, test)


#: the protocols of ``recfunnel split --by`` (those the benchmarks use)
SPLIT_PROTOCOLS = ("user-time", "time", "leave-last")


def split_interactions(df: pd.DataFrame, by: str = "user-time",
                       test_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test parts of an interaction log, by one of :data:`SPLIT_PROTOCOLS`.

    * ``user-time``: each user's newest ``test_fraction`` of events (:func:`split_user_ratio`;
      users with one event stay in train): every test user is known to the model.
    * ``time``: every event at or after one global cutoff (:func:`split_global_time`):
      the future, as a platform sees it; some test users may be new.
    * ``leave-last``: each user's newest event (:func:`split_leave_last_n`), the next-item protocol.

    Ties in time keep file order (the later row is the newer), so constant timestamps
    still split for ``user-time`` and ``leave-last``.

    Raises:
        DataError: when the protocol leaves the test part or the training part empty.
    """
    if by not in SPLIT_PROTOCOLS:
        raise DataError(f"unknown split protocol {by!r}; use one of {list(SPLIT_PROTOCOLS)}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"the test fraction must be in (0, 1), got {test_fraction}")
    if by == "user-time":
        train, test = split_user_ratio(df, test_ratio=test_fraction)
    elif by == "time":
        train, test = split_global_time(df, test_fraction=test_fraction)
    else:
        train, test = split_leave_last_n(df, 1)
    if len(test) == 0:
        raise DataError(f"the '{by}' split leaves no test events: every user has a single event"
                        if by != "time" else "the 'time' split leaves no test events")
    if len(train) == 0:
        raise DataError(f"the '{by}' split leaves no training events")
    return train, test
