from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recfunnel.data.splits import (
    split_global_time,
    split_leave_last_n,
    split_random,
    split_user_ratio,
    user_temporal_holdout_mask,
)
from recfunnel.errors import DataError


def frame(users, times):
    return pd.DataFrame({"user_id": users, "item_id": [f"i{k}" for k in range(len(users))], "timestamp": times})


def test_holdout_mask_rounds_up_and_keeps_min_train():
    users = np.array([0] * 10 + [1] * 2 + [2])
    times = np.concatenate([np.arange(10), [5, 6], [1]])
    mask = user_temporal_holdout_mask(users, times, 0.25)
    # user 0: ceil(2.5) = 3 newest; user 1: ceil(0.5) = 1; user 2: single event stays in train
    assert mask.tolist() == [False] * 7 + [True] * 3 + [False, True] + [False]
    assert not user_temporal_holdout_mask(users, times, 1.0, min_train=2)[[0, 1, 10, 11, 12]].any()
    assert not user_temporal_holdout_mask(users, times, 0.0).any()


def test_holdout_mask_float_slack():
    users = np.zeros(30, np.int64)
    assert user_temporal_holdout_mask(users, np.arange(30), 0.1).sum() == 3  # not ceil(3.0000000000000004)


def test_holdout_mask_ties_broken_by_row_order_and_unsorted_input():
    users = np.array([1, 0, 1, 1, 0])
    times = np.array([7, 3, 7, 2, 3])
    mask = user_temporal_holdout_mask(users, times, 0.3)
    # user 1: rows 3 (t=2), 0 (t=7), 2 (t=7, later row = newer); ceil(0.9) = 1 holds out row 2
    # user 0: rows 1, 4 at t=3; ceil(0.6) = 1 holds out the later row 4
    assert mask.tolist() == [False, False, True, False, True]


def test_holdout_mask_matches_loop_reference():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 20, 500)
    times = rng.integers(0, 30, 500)
    mask = user_temporal_holdout_mask(users, times, 0.3, min_train=2)
    for u in np.unique(users):
        rows = np.flatnonzero(users == u)
        order = rows[np.lexsort((rows, times[rows]))]
        n_test = max(0, min(int(np.ceil(0.3 * len(rows) - 1e-9)), len(rows) - 2))
        expected = np.zeros(len(rows), bool)
        expected[len(rows) - n_test:] = True
        assert mask[order].tolist() == expected.tolist()


def test_holdout_mask_validates():
    with pytest.raises(ValueError):
        user_temporal_holdout_mask(np.zeros(3), np.zeros(2), 0.2)
    with pytest.raises(ValueError):
        user_temporal_holdout_mask(np.zeros(3), np.zeros(3), 1.5)


def test_global_time_split_puts_cutoff_events_in_test():
    df = frame(["a", "b", "a", "b", "c"], [1, 2, 3, 3, 5])
    train, test = split_global_time(df, cutoff=3)
    assert train["timestamp"].tolist() == [1, 2] and test["timestamp"].tolist() == [3, 3, 5]
    assert isinstance(train.index, pd.RangeIndex) and isinstance(test.index, pd.RangeIndex)
    train, test = split_global_time(df, test_fraction=0.2)
    assert test["timestamp"].tolist() == [5]
    assert train["timestamp"].max() < test["timestamp"].min()


def test_global_time_split_with_ties_and_constant_time():
    df = frame(["a"] * 4 + ["b"], [1, 1, 1, 1, 2])
    # 80% of the events share the first timestamp: the cutoff moves up rather than empty the train set
    train, test = split_global_time(df, test_fraction=0.9)
    assert len(train) == 4 and len(test) == 1
    with pytest.raises(DataError, match="all timestamps are equal"):
        split_global_time(frame(["a", "b"], [4, 4]))
    train, test = split_global_time(df, test_fraction=0.0)
    assert len(test) == 0


def test_user_ratio_split():
    df = frame(["a"] * 5 + ["b"] * 2 + ["c"], [5, 4, 3, 2, 1, 9, 8, 7])
    train, test = split_user_ratio(df, test_ratio=0.4)
    assert sorted(zip(test["user_id"], test["timestamp"], strict=True)) == [("a", 4), ("a", 5), ("b", 9)]
    assert "c" in set(train["user_id"]) and "c" not in set(test["user_id"])
    # no test event precedes a train event of the same user
    for user, rows in test.groupby("user_id"):
        assert rows["timestamp"].min() >= train.loc[train["user_id"] == user, "timestamp"].max()


def test_leave_last_n():
    df = frame(["a"] * 4 + ["b"] * 2 + ["c"], [1, 2, 3, 4, 1, 2, 1])
    train, test = split_leave_last_n(df, n=2)
    assert sorted(zip(test["user_id"], test["timestamp"], strict=True)) == [("a", 3), ("a", 4), ("b", 2)]
    assert len(train) + len(test) == len(df)


def test_random_split_is_seeded_and_exact():
    df = frame([str(k % 7) for k in range(100)], list(range(100)))
    a_train, a_test = split_random(df, test_ratio=0.25, seed=1)
    b_train, b_test = split_random(df, test_ratio=0.25, seed=1)
    assert len(a_test) == 25 and a_test.equals(b_test)
    assert not a_test.equals(split_random(df, test_ratio=0.25, seed=2)[1])
    assert sorted(a_train["item_id"].tolist() + a_test["item_id"].tolist()) == sorted(df["item_id"])


def test_missing_columns():
    with pytest.raises(DataError, match="user_id"):
        split_user_ratio(pd.DataFrame({"timestamp": [1]}))
