from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.data.history import last_n_before, windowed_counts


def brute_last_n(eu, ei, et, qu, qt, n):
    items = np.full((len(qu), n), -1, np.int64)
    times = np.zeros((len(qu), n), np.int64)
    for q in range(len(qu)):
        rows = [r for r in range(len(eu)) if eu[r] == qu[q] and et[r] < qt[q]]
        rows.sort(key=lambda r: (et[r], r), reverse=True)  # newest first, later row = newer
        for j, r in enumerate(rows[:n]):
            items[q, j], times[q, j] = ei[r], et[r]
    return items, times


def brute_counts(ek, et, qk, qt, windows, w):
    out = np.zeros((len(qk), len(windows)))
    for q in range(len(qk)):
        for c, win in enumerate(windows):
            lo = -np.inf if win is None else qt[q] - win
            out[q, c] = sum(w[r] for r in range(len(ek)) if ek[r] == qk[q] and lo <= et[r] < qt[q])
    return out


events = st.integers(0, 25).flatmap(
    lambda e: st.tuples(
        st.lists(st.integers(0, 3), min_size=e, max_size=e),
        st.lists(st.integers(0, 9), min_size=e, max_size=e),
        st.lists(st.integers(-3, 12), min_size=e, max_size=e),
        st.lists(st.integers(0, 4), min_size=e, max_size=e),
    )
)
queries = st.integers(0, 10).flatmap(
    lambda q: st.tuples(
        st.lists(st.integers(0, 4), min_size=q, max_size=q),
        st.lists(st.integers(-4, 14), min_size=q, max_size=q),
    )
)


@settings(max_examples=150, deadline=None)
@given(events, queries, st.integers(0, 4))
def test_last_n_before_never_reads_the_present_or_future(ev, qs, n):
    eu, ei, et, _ = (np.array(a, np.int64) for a in ev)
    qu, qt = (np.array(a, np.int64) for a in qs)
    items, times = last_n_before(eu, ei, et, qu, qt, n)
    ref_items, ref_times = brute_last_n(eu, ei, et, qu, qt, n)
    assert items.dtype == np.int64 and items.shape == (len(qu), n)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_array_equal(times, ref_times)
    valid = items >= 0
    assert (times[valid] < np.broadcast_to(qt[:, None], times.shape)[valid]).all()


@settings(max_examples=150, deadline=None)
@given(events, queries, st.lists(st.one_of(st.none(), st.integers(0, 8)), min_size=1, max_size=3),
       st.booleans())
def test_windowed_counts_match_brute_force(ev, qs, windows, weighted):
    ek, _, et, w = (np.array(a, np.int64) for a in ev)
    qk, qt = (np.array(a, np.int64) for a in qs)
    weight = w.astype(np.float64) if weighted else None
    got = windowed_counts(ek, et, qk, qt, windows, event_weight=weight)
    ref = brute_counts(ek, et, qk, qt, windows, weight if weighted else np.ones(len(ek)))
    assert got.shape == (len(qk), len(windows))
    np.testing.assert_allclose(got, ref)


def test_last_n_before_example_and_ties():
    eu = np.array([5, 5, 5, 5, 9])
    ei = np.array([10, 11, 12, 13, 14])
    et = np.array([100, 200, 200, 300, 50])
    items, times = last_n_before(eu, ei, et, np.array([5, 5, 9, 7]), np.array([300, 201, 50, 1000]), 3)
    # the event at exactly t=300 is excluded; of the two at t=200 the later row (12) is newer
    assert items.tolist() == [[12, 11, 10], [12, 11, 10], [-1, -1, -1], [-1, -1, -1]]
    assert times.tolist() == [[200, 200, 100], [200, 200, 100], [0, 0, 0], [0, 0, 0]]


def test_no_events():
    empty = np.zeros(0, np.int64)
    items, times = last_n_before(empty, empty, empty, np.array([1]), np.array([5]), 2)
    assert items.tolist() == [[-1, -1]] and times.tolist() == [[0, 0]]
    assert windowed_counts(empty, empty, np.array([1]), np.array([5]), [None]).tolist() == [[0.0]]


def test_windowed_counts_string_keys_and_large_times():
    t0 = 1_700_000_000_000  # milliseconds
    keys = np.array(["u1", "u2", "u1", "u1"])
    times = np.array([t0, t0 + 10, t0 + 20, t0 + 30])
    got = windowed_counts(keys, times, np.array(["u1", "u1"]), np.array([t0 + 30, t0 + 31]), [10, 0, None],
                          event_weight=np.array([1.0, 2.0, 3.0, 4.0]))
    assert got.tolist() == [[3.0, 0.0, 4.0], [4.0, 0.0, 8.0]]


def test_validation():
    with pytest.raises(ValueError):
        windowed_counts(np.zeros(2), np.zeros(2), np.zeros(1), np.zeros(1), [-1])
    with pytest.raises(ValueError):
        last_n_before(np.zeros(2), np.zeros(3), np.zeros(2), np.zeros(1), np.zeros(1), 1)
