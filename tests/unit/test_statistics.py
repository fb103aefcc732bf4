import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.features.statistics import EventCounter, counter_from_arrays, counter_to_arrays

events = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 50)), min_size=1, max_size=40)
queries = st.lists(st.tuples(st.integers(-1, 5), st.integers(-5, 60)), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(events, queries, st.sampled_from([None, 1, 7, 30]))
def test_counts_match_brute_force_and_never_read_the_future(ev, qs, window):
    keys = np.array([k for k, _ in ev])
    times = np.array([t for _, t in ev])
    counter = EventCounter(keys, times, n_keys=6)
    qk = np.array([k for k, _ in qs])
    qt = np.array([t for _, t in qs])
    got = counter.count(qk, qt, window)
    for i, (k, t) in enumerate(qs):
        lo = -np.inf if window is None else t - window
        expected = sum(1 for ek, et in ev if ek == k and lo <= et < t) if k >= 0 else 0
        assert got[i] == expected
    last = counter.last_before(qk, qt)
    for i, (k, t) in enumerate(qs):
        before = [et for ek, et in ev if ek == k and et < t]
        if k >= 0 and before:
            assert last[i] == max(before) < t
        else:
            assert last[i] == np.iinfo(np.int64).min


def test_weights_and_round_trip():
    c = EventCounter(np.array([1, 1, 2]), np.array([5, 6, 7]), n_keys=3, weights=np.array([2.0, 3.0, 4.0]))
    assert c.count(np.array([1, 2]), np.array([7, 8]), None).tolist() == [5.0, 4.0]
    restored = counter_from_arrays(counter_to_arrays(c, "x."), "x.")
    assert restored.count(np.array([1]), np.array([6]), 10).tolist() == [2.0]
