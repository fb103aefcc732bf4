"""Ranking features are point-in-time: events at or after the request time never change them."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.data.dataset import build_training_data
from recfunnel.features.ranking import RankingFeatureBuilder, RankingFeatureConfig
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.types import Candidates

DAY = 86_400
T0 = 1_700_000_000

event = st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(0, 40 * DAY))


def _data(events, items):
    df = pd.DataFrame([(f"u{u}", f"i{i}", T0 + t) for u, i, t in events], columns=["user_id", "item_id", "timestamp"])
    return build_training_data(df, items=items)


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=30), st.lists(event, min_size=1, max_size=15),
       st.integers(1, 40 * DAY))
def test_future_events_never_change_features(past, extra, cut):
    items = pd.DataFrame({"genre": [("a", "b") if i % 2 else ("c",) for i in range(8)], "year": np.arange(8.0)},
                         index=pd.Index([f"i{i}" for i in range(8)], name="item_id"))
    past = [e for e in past if e[2] < cut]
    future = [(u, i, max(t, cut)) for u, i, t in extra]  # at or after the request time
    if not past:
        return
    base = _data(past, items)
    both = _data(past + future, items)
    config = RankingFeatureConfig()
    out = []
    for data in (base, both):
        builder = RankingFeatureBuilder(config, ("ch",)).fit(data)
        users = data.user_ids.index([f"u{u}" for u in range(6)])
        request = UserHistoryStore(data.interactions).request(users, time=T0 + cut, history_length=5)
        cand_items = data.item_ids.index([f"i{i}" for i in range(8)])
        cand = np.tile(cand_items, (len(users), 1))
        candidates = Candidates(cand, np.zeros(cand.shape, np.float32),
                                {"ch": np.tile(np.arange(8, 0, -1, dtype=np.float32), (len(users), 1))})
        feats, rows, cols = builder.transform(request, candidates)
        out.append((feats, rows, cols))
    (f1, r1, c1), (f2, r2, c2) = out
    # ids are sorted strings, so both id maps agree on the entities present in `past`
    assert f1.names == f2.names
    for name in f1.dense:
        np.testing.assert_allclose(f1.dense[name], f2.dense[name], equal_nan=True, err_msg=name)
    for name in f1.sparse:
        np.testing.assert_array_equal(f1.sparse[name], f2.sparse[name], err_msg=name)
