"""Offline/online consistency: the same (user, time) gets the same ranking features both ways.

Offline: the event log is part of the training data (``append_events``), the
features are computed from statistics indexed on it, and the request comes from
the history store of that data. Online: the model trained without the log,
the same events ingested nearline, the request from ``NearlineState``. The
feature vectors (and so the ranker's scores) must be equal for every
(user, time, candidate) — before, between and after the events, including the
1-hour windows the events fall into.
"""

import copy

import numpy as np
import pandas as pd
import pytest

from recfunnel.config import config_from_dict
from recfunnel.data.dataset import build_training_data
from recfunnel.features.ranking import RankingFeatureBuilder
from recfunnel.pipeline.nearline import NearlineState, append_events
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.storage.events import Event, MemoryEventStore
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.types import Candidates

T0 = 1_700_000_000
DAY = 86_400


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    rows = []
    for u in range(40):
        for it in rng.choice(30, 6, replace=False) + 30 * (u % 2):
            t = T0 + int(rng.integers(0, 10 * DAY))
            rows.append((f"u{u:02d}", f"i{it:02d}", t, 1, float(rng.integers(1, 6))))
            rows.append((f"u{u:02d}", f"i{int(rng.integers(0, 60)):02d}", t - 7, 0, 0.0))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "label", "watch"])
    items = pd.DataFrame({"category": [f"c{i % 4}" for i in range(60)], "year": np.arange(60.0) % 9},
                         index=pd.Index([f"i{i:02d}" for i in range(60)], name="item_id"))
    users = pd.DataFrame({"age": [20.0 + u % 30 for u in range(40)]},
                         index=pd.Index([f"u{u:02d}" for u in range(40)], name="user_id"))
    cfg = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20}],
        "ranker": {"kind": "lightgbm", "params": {"n_estimators": 15, "min_child_samples": 5,
                                                  "early_stopping_rounds": 5, "num_threads": 1}},
        "retrieval_k": 40, "rank_k": 20, "history_length": 8,
    })
    end = int(frame["timestamp"].max())
    # the log: clicks and impressions of known users on known items, in bursts an hour apart,
    # out of time order within a burst, with a resend and an event type that is not feedback
    events = []
    for n in range(120):
        burst = n // 20
        t = end + 600 + burst * 3600 + int(rng.integers(0, 1200))
        user, item = f"u{int(rng.integers(0, 40)):02d}", f"i{int(rng.integers(0, 60)):02d}"
        kind = ["click", "impression", "like", "impression", "play", "share"][n % 6]
        events.append(Event(f"ev{n}", user, item, kind, t))
    events.append(events[5])
    return frame, items, users, cfg, events


def test_ranking_features_are_the_same_offline_and_online(setup):
    frame, items, users, cfg, events = setup
    # online: the model of the older data, the events ingested nearline
    online_funnel = fit_funnel(build_training_data(frame, users, items), cfg, progress=False)
    state = NearlineState(online_funnel, MemoryEventStore())
    for lo in range(0, len(events), 7):
        state.ingest(events[lo:lo + 7])
    assert state.stats()["events_ingested"] == 120 and state.stats()["duplicates"] == 1
    online = online_funnel.ranker

    # offline: the log is training data; the statistics are indexed on it by the same builder
    data = build_training_data(append_events(frame, events), users, items)
    assert len(data.interactions) + len(data.exposures) == len(frame) + 100  # 20 "share" events dropped
    offline = copy.copy(online)
    offline.fit(data)  # what fit_funnel does after the holdout pass: the ranker's statistics on all data
    assert type(offline.features_) is RankingFeatureBuilder
    # fitted parameters (not statistics) are the model's: the CTR prior of the smoothed rate
    offline.features_.ctr_prior_ = online.features_.fitted_.ctr_prior_
    history = UserHistoryStore(data.interactions)
    np.testing.assert_array_equal(data.item_ids.ids, online_funnel.item_ids.ids)
    np.testing.assert_array_equal(data.user_ids.ids, online_funnel.user_ids.ids)

    # every user with an event, at times before, inside and after the bursts (and at event times)
    rng = np.random.default_rng(7)
    event_users = sorted({e.user_id for e in events})
    event_times = sorted({e.timestamp for e in events})
    times = [event_times[0] - 1, *event_times[::9], event_times[-1], event_times[-1] + 1, event_times[-1] + DAY]
    req_users = [u for u in event_users for _ in times]
    req_times = np.array([t for _ in event_users for t in times], np.int64)
    cand_items = np.array([rng.choice(60, 25, replace=False) for _ in req_users])
    channel_scores = {c: rng.random(cand_items.shape).astype(np.float32) for c in online.channel_names_}
    candidates = Candidates(cand_items.astype(np.int64), rng.random(cand_items.shape).astype(np.float32),
                            channel_scores)

    r_on = state.request(req_users, time=req_times)
    r_off = history.request(data.user_ids.index(req_users), time=req_times,
                            history_length=cfg.history_length)
    np.testing.assert_array_equal(r_on.history, r_off.history)
    np.testing.assert_array_equal(r_on.history_time, r_off.history_time)

    f_on, rows_on, cols_on = online.features_.transform(r_on, candidates)
    f_off, rows_off, cols_off = offline.features_.transform(r_off, candidates)
    np.testing.assert_array_equal(rows_on, rows_off)
    np.testing.assert_array_equal(cols_on, cols_off)
    assert f_on.names == f_off.names
    for name in f_on.dense:
        np.testing.assert_array_equal(f_on.dense[name], f_off.dense[name], err_msg=name)
    for name in f_on.sparse:
        np.testing.assert_array_equal(f_on.sparse[name], f_off.sparse[name], err_msg=name)
    np.testing.assert_array_equal(f_on.to_matrix(), f_off.to_matrix())
    # the same vectors give the same scores
    np.testing.assert_array_equal(online.score(r_on, candidates), offline.score(r_off, candidates))

    # and the events did move the features: the check is not vacuous
    before = np.asarray(req_times) < event_times[0]
    plain = RankingFeatureBuilder(online.features_.config, online.channel_names_).fit(
        build_training_data(frame, users, items))
    f_plain, _, _ = plain.transform(history.request(data.user_ids.index(req_users), time=req_times,
                                                    history_length=cfg.history_length), candidates)
    moved = {name for name in f_on.dense
             if not np.array_equal(f_on.dense[name], f_plain.dense[name], equal_nan=True)}
    assert {"item_count", "item_count_1h", "item_exposures", "user_count", "user_count_1h"} <= moved
    same_before = ~np.isin(rows_on, np.flatnonzero(~before))
    np.testing.assert_array_equal(f_on.dense["item_count"][same_before], f_plain.dense["item_count"][same_before])
