"""NearlineState on a tiny fitted funnel: events change the next request, counters, pools and vectors."""

import ast
import copy
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import recfunnel
from recfunnel.config import config_from_dict
from recfunnel.data.dataset import build_training_data
from recfunnel.pipeline.nearline import NearlineConfig, NearlineState
from recfunnel.pipeline.nearline.counters import (
    CounterOverlay,
    GrowingCounter,
    NearlineFeatureBuilder,
)
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.stages.base import EventBatch, Incremental, NewItems, Retriever
from recfunnel.stages.recall.lookalike import LookalikeRetriever
from recfunnel.stages.recall.new_items import NewItemRetriever
from recfunnel.stages.recall.popular import PopularRetriever
from recfunnel.storage.events import Event, MemoryEventStore
from recfunnel.storage.stores import open_event_store
from recfunnel.types import Candidates, RequestBatch

T0 = 1_700_000_000
DAY = 86_400


@pytest.fixture(scope="module")
def fitted():
    """60 users in 3 groups, 60 items; every click comes with an exposure of another item."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        group = u % 3
        for it in rng.choice(20, 8, replace=False) + 20 * group:
            t = T0 + int(rng.integers(0, 20 * DAY))
            rows.append((f"u{u:03d}", f"i{it:03d}", t, 1))
            rows.append((f"u{u:03d}", f"i{int(rng.integers(0, 60)):03d}", t - 5, 0))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "label"])
    items = pd.DataFrame({"category": [f"g{i // 20}" for i in range(60)]},
                         index=pd.Index([f"i{i:03d}" for i in range(60)], name="item_id"))
    data = build_training_data(frame, items=items)
    cfg = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 10},
                     {"kind": "new_items", "quota": 10},
                     {"kind": "lookalike", "quota": 10, "params": {"max_item_age_days": None}}],
        "ranker": {"kind": "lightgbm", "params": {"n_estimators": 20, "min_child_samples": 5,
                                                  "early_stopping_rounds": 5, "num_threads": 1}},
        "retrieval_k": 40, "rank_k": 20, "history_length": 10,
    })
    funnel = fit_funnel(data, cfg, progress=False)
    return funnel, int(frame["timestamp"].max())


@pytest.fixture
def funnel(fitted):
    return copy.deepcopy(fitted[0])  # the state mutates its funnel (overlays, new items)


@pytest.fixture
def now(fitted):
    return fitted[1] + 3600


def ids(funnel, index):
    return [funnel.item_ids.ids[i] for i in index if i >= 0]


def excluded(request, funnel, row=0):
    return set(funnel.item_ids.to_ids(request.exclude[row].indices).tolist())


def click(n, user, item, t, type_="click"):
    return Event(f"e{n}", user, item, type_, t)


def test_without_events_requests_equal_the_offline_ones(funnel, fitted, now):
    state = NearlineState(funnel, MemoryEventStore())
    users = ["u000", "u001", "nobody"]
    online = state.request(users, time=now)
    offline = funnel.request(users, time=now)
    np.testing.assert_array_equal(online.history, offline.history)
    np.testing.assert_array_equal(online.history_time, offline.history_time)
    assert (online.exclude != offline.exclude).nnz == 0
    assert online.exclude.shape == (3, len(funnel.item_ids))
    # the overlaid ranker scores exactly like the fitted one while no event has come in
    plain = copy.deepcopy(fitted[0])
    ours, theirs = funnel.run(online, 10)[0], plain.run(plain.request(users, time=now), 10)[0]
    np.testing.assert_array_equal(ours.item_index, theirs.item_index)
    np.testing.assert_array_equal(ours.score, theirs.score)


def test_a_click_changes_the_next_request_and_is_excluded(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    before = state.request(["u000"], time=now)
    item = "i059"  # another group's item: not in u000's history
    assert item not in excluded(before, funnel)
    assert state.ingest([click(1, "u000", item, now - 10)]) == [True]
    after = state.request(["u000"], time=now)
    assert ids(funnel, after.history[0])[0] == item
    assert after.history_time[0, 0] == now - 10
    np.testing.assert_array_equal(after.history[0, 1:], before.history[0, :-1])  # the rest moves down
    assert item in excluded(after, funnel)
    # a request before the event does not see it
    early = state.request(["u000"], time=now - 10)
    np.testing.assert_array_equal(early.history, before.history)
    assert item not in excluded(early, funnel)
    # and the default request time is after it
    assert ids(funnel, state.request(["u000"]).history[0])[0] == item
    out, _ = funnel.run(after, 5)
    assert funnel.item_ids.index([item])[0] not in out.item_index[0]


def test_impressions_exclude_and_the_ttl_expires(funnel, now):
    state = NearlineState(funnel, MemoryEventStore(), NearlineConfig(shown_ttl_seconds=DAY))
    state.ingest([click(1, "u000", "i058", now - 10, "impression"), click(2, "u000", "i057", now - 9, "share")])
    r = state.request(["u000"], time=now)
    assert "i058" in excluded(r, funnel) and "i057" not in excluded(r, funnel)
    assert "i058" not in ids(funnel, r.history[0])  # impressions are not history
    assert "i058" not in excluded(state.request(["u000"], time=now + 2 * DAY), funnel)
    assert state.stats()["events_ignored"] == 1
    # extra exclusions of the caller
    r = state.request(["u000", "u001"], time=now, exclude=[["i001"], ["i002", "not-an-item"]])
    assert "i001" in excluded(r, funnel, 0) and "i002" in excluded(r, funnel, 1)


def test_a_duplicate_event_is_applied_once(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    e = click(1, "u000", "i059", now - 10)
    assert state.ingest([e, e]) == [True, False]
    assert state.ingest([e]) == [False]
    r = state.request(["u000"], time=now)
    assert ids(funnel, r.history[0]).count("i059") == 1
    assert state.item_counts(["i059"])["clicks"].tolist() == [1]
    stats = state.stats()
    assert stats["events_ingested"] == 1 and stats["duplicates"] == 2


def test_an_unknown_user_gets_the_history_of_their_events(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    state.ingest([click(1, "newbie", "i001", now - 30), click(2, "newbie", "i002", now - 20),
                  click(3, "newbie", "i001", now - 10)])
    r = state.request(["newbie"], time=now)
    assert r.user_index.tolist() == [-1]
    assert ids(funnel, r.history[0]) == ["i001", "i002", "i001"]  # newest first, repeats kept
    assert excluded(r, funnel) == {"i001", "i002"}
    out, _ = funnel.run(r, 5)
    recommended = funnel.item_ids.to_ids(out.item_index[0][out.item_index[0] >= 0])
    assert len(recommended) == 5 and not {"i001", "i002"} & set(recommended)
    # item-based channels personalise: group 0 items (i000..i019) come first
    assert sum(int(x[1:]) < 20 for x in recommended) >= 4
    assert state.stats()["users_tracked"] == 1


def test_published_items_are_retrievable_at_once(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    n_items = len(funnel.item_ids)
    assert state.publish_items(pd.DataFrame({"category": ["g0", "g1"], "publish_time": [now - 60, now - 30]},
                                            index=["fresh1", "fresh2"])) == 2
    assert state.publish_items(pd.DataFrame({"category": ["g0"]}, index=["fresh1"])) == 0  # known now
    assert len(funnel.item_ids) == n_items + 2
    new_items = next(c for c in funnel.channels if isinstance(c, NewItemRetriever))
    r = state.request(["u000"], time=now)
    out = new_items.retrieve(r, 5)
    assert funnel.item_ids.to_ids(out.item_index[0][:2]).tolist() == ["fresh2", "fresh1"]  # newest first
    assert r.exclude.shape[1] == n_items + 2
    merged, _ = funnel.retrieve(r)
    assert {"fresh1", "fresh2"} <= set(funnel.item_ids.to_ids(merged.item_index[0][merged.valid[0]]))
    # a user who clicked a new item: the whole funnel, ranker included, still answers
    state.ingest([click(1, "u000", "fresh1", now)])
    r = state.request(["u000"], time=now + 1)
    assert ids(funnel, r.history[0])[0] == "fresh1"
    out, _ = funnel.run(r, 5)
    assert (out.item_index[0] >= 0).sum() == 5
    assert state.stats()["items_published"] == 2


def test_events_on_unpublished_items_count_once_published(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    state.ingest([click(1, "u000", "later", now - 20), click(2, "u001", "later", now - 15, "impression")])
    assert "later" not in excluded(state.request(["u000"], time=now), funnel)
    assert state.stats()["events_pending"] == 2
    state.publish_items(pd.DataFrame({"category": ["g0"], "publish_time": [now - 100]}, index=["later"]))
    assert state.stats()["events_pending"] == 0
    assert state.item_counts(["later"]) == {"clicks": np.array([1]), "impressions": np.array([1])}
    r = state.request(["u000", "u001"], time=now)
    assert ids(funnel, r.history[0])[0] == "later"
    assert "later" in excluded(r, funnel, 0) and "later" in excluded(r, funnel, 1)


def test_lookalike_vector_of_a_new_item_moves_with_events(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    lookalike = next(c for c in funnel.channels if isinstance(c, LookalikeRetriever))
    state.publish_items(pd.DataFrame({"category": ["g1"], "publish_time": [now - 100]}, index=["fresh"]))
    index = int(funnel.item_ids.index(["fresh"])[0])

    def vector():
        items, means, counts = lookalike.lookalike_vectors()
        where = np.flatnonzero(items == index)
        return (means[where[0]].copy(), int(counts[where[0]])) if len(where) else (None, 0)

    assert vector() == (None, 0)
    state.ingest([click(1, "u001", "fresh", now - 50)])  # u001 is in group 1
    first, n = vector()
    assert n == 1 and np.linalg.norm(first) > 0
    # the look-alike channel now offers it, to group 1 (u004) before group 0 (u003)
    out = lookalike.retrieve(state.request(["u004", "u003"], time=now), 100)
    score = [float(out.score[row][out.item_index[row] == index][0]) for row in (0, 1)]
    assert score[0] > score[1]
    state.ingest([click(2, "u002", "fresh", now - 40)])  # group 2: the mean moves
    second, n = vector()
    assert n == 2 and not np.allclose(first, second)
    # the mean is the seed users' vectors as of just before each event
    users = state._request(funnel, ["u001", "u002"], np.array([now - 50, now - 40]), lookalike.config.history_length,
                           full=False)
    np.testing.assert_allclose(second, lookalike.user_vectors(users).mean(axis=0), rtol=1e-5)


def test_events_before_publication_reach_the_lookalike_pool_once_published(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    lookalike = next(c for c in funnel.channels if isinstance(c, LookalikeRetriever))
    state.ingest([click(1, "u001", "early", now - 50), click(2, "u004", "i030", now - 40)])
    state.publish_items(pd.DataFrame({"category": ["g1"], "publish_time": [now - 100]}, index=["early"]))
    index = int(funnel.item_ids.index(["early"])[0])
    items, _, counts = lookalike.lookalike_vectors()
    assert counts[items == index].tolist() == [1]


def _features(funnel, request, items):
    cand = np.tile(funnel.item_ids.index(items), (len(request), 1))
    candidates = Candidates(cand, np.zeros(cand.shape, np.float32))
    feats, _, _ = funnel.ranker.features_.transform(request, candidates)
    return feats.dense


def test_nearline_counts_reach_the_ranker_features_only_after_the_event(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    assert isinstance(funnel.ranker.features_, NearlineFeatureBuilder)
    assert isinstance(funnel.ranker.features_.item_counter_, CounterOverlay)
    items = ["i030", "i031"]
    t_event = now
    base_after = _features(funnel, state.request(["u000"], time=t_event + 60), items)
    base_before = _features(funnel, state.request(["u000"], time=t_event), items)
    state.ingest([click(1, "u005", "i030", t_event), click(2, "u006", "i030", t_event, "impression"),
                  click(3, "u006", "i031", t_event, "impression")])
    after = _features(funnel, state.request(["u000"], time=t_event + 60), items)
    before = _features(funnel, state.request(["u000"], time=t_event), items)  # the event's own time: not yet
    assert after["item_count"].tolist() == (base_after["item_count"] + [1, 0]).tolist()
    assert after["item_count_1h"].tolist() == (base_after["item_count_1h"] + [1, 0]).tolist()
    assert after["item_exposures"].tolist() == (base_after["item_exposures"] + [2, 1]).tolist()
    assert after["item_since_last_days"][0] == pytest.approx(60 / DAY)
    assert after["item_ctr_smoothed"][1] < base_after["item_ctr_smoothed"][1]  # shown, not clicked
    for name in before:
        np.testing.assert_array_equal(before[name], base_before[name], err_msg=name)
    # the user's own counter: u005 clicked once
    u5 = _features(funnel, state.request(["u005"], time=t_event + 60), items)
    u5_before = _features(funnel, state.request(["u005"], time=t_event), items)
    assert u5["user_count"][0] == u5_before["user_count"][0] + 1


def test_replay_at_start_up_and_bind_give_the_same_state(funnel, fitted, now, tmp_path):
    store = open_event_store(f"sqlite:///{tmp_path / 'events.db'}")
    live = NearlineState(funnel, store)
    events = [click(1, "u000", "i059", now - 50), click(2, "u000", "i001", now - 40, "impression"),
              click(3, "newbie", "i002", now - 30), click(4, "u003", "soon", now - 20)]
    live.ingest(events)
    live.publish_items(pd.DataFrame({"category": ["g0"], "publish_time": [now - 100]}, index=["soon"]))
    store.close()
    # a restart: a fresh model copy, the log replayed (published items included)
    fresh = copy.deepcopy(fitted[0])
    replayed = NearlineState(fresh, open_event_store(f"sqlite:///{tmp_path / 'events.db'}"))
    assert replayed.stats()["events_replayed"] == 4 and replayed.stats()["items_replayed"] == 1
    # a new model version bound to the live state
    other = copy.deepcopy(fitted[0])
    live.bind(other)
    assert live.funnel is other and len(other.item_ids) == len(funnel.item_ids)
    users = ["u000", "newbie", "u003"]
    for state in (replayed, live):
        f = state.funnel
        r, ref = state.request(users, time=now), live.request(users, time=now, funnel=funnel)
        np.testing.assert_array_equal(r.history, ref.history)
        assert (r.exclude != ref.exclude).nnz == 0
        assert state.item_counts(["i059", "soon", "i001"])["clicks"].tolist() == [1, 1, 0]
        assert state.item_counts(["i001"])["impressions"].tolist() == [1]
        np.testing.assert_array_equal(_features(f, r, ["i059", "soon"])["item_count"],
                                      _features(funnel, ref, ["i059", "soon"])["item_count"])
    # look-alike sums are applied once per model object, also when an old version comes back
    look = next(c for c in funnel.channels if isinstance(c, LookalikeRetriever))
    counts = look.lookalike_vectors()[2].sum()
    live.bind(funnel)
    assert look.lookalike_vectors()[2].sum() == counts
    assert live.stats()["binds"] == 2


def test_clicks_on_a_published_item_raise_it_in_the_popular_lists_once_per_model(funnel, fitted, now):
    state = NearlineState(funnel, MemoryEventStore())
    popular = next(c for c in funnel.channels if isinstance(c, PopularRetriever))
    state.publish_items(pd.DataFrame({"category": ["g0"], "publish_time": [now - 600]}, index=["trend"]))
    cold = state.request(["nobody"], time=now)
    assert "trend" not in ids(funnel, popular.retrieve(cold, 60).item_index[0])  # no click yet
    state.ingest([click(i, f"fan{i}", "trend", now - 300 + i) for i in range(40)])
    cold = state.request(["nobody"], time=now)
    for channel in (popular, funnel.fallback):  # the channel and the cold-start fallback
        assert ids(funnel, channel.retrieve(cold, 10).item_index[0])[0] == "trend"
    merged, _ = funnel.retrieve(cold)
    assert "trend" in ids(funnel, merged.item_index[0])
    scores = popular.scores_.copy()
    # a new model version counts them too; binding the old one again does not count them twice
    other = copy.deepcopy(fitted[0])
    state.bind(other)
    assert ids(other, other.fallback.retrieve(state.request(["nobody"], time=now), 10).item_index[0])[0] == "trend"
    state.bind(funnel)
    np.testing.assert_array_equal(popular.scores_, scores)
    # and a state told not to leaves the popularity as fitted
    frozen = NearlineState(copy.deepcopy(fitted[0]), MemoryEventStore(), NearlineConfig(popularity_updates=False))
    fitted_scores = frozen.funnel.fallback.scores_.copy()
    frozen.ingest([click(i, f"fan{i}", "i001", now - 300 + i) for i in range(40)])
    np.testing.assert_array_equal(frozen.funnel.fallback.scores_, fitted_scores)


def test_events_already_in_the_model_are_not_counted_twice(funnel, fitted, now):
    state = NearlineState(funnel, MemoryEventStore())
    old = fitted[1] - DAY  # inside the training period
    state.ingest([click(1, "u000", "i059", old)])
    r = state.request(["u000"], time=now)
    offline = funnel.request(["u000"], time=now)
    np.testing.assert_array_equal(r.history, offline.history)  # not in the history twice
    assert "i059" in excluded(r, funnel)  # but still never shown again
    assert state.item_counts(["i059"])["clicks"].tolist() == [0]
    assert state.stats()["events_in_model"] == 1
    everything = NearlineState(copy.deepcopy(fitted[0]), MemoryEventStore(),
                               NearlineConfig(skip_events_in_model=False))
    everything.ingest([click(1, "u000", "i059", old)])
    assert "i059" in ids(everything.funnel, everything.request(["u000"], time=now).history[0])


def test_concurrent_ingest_and_requests(funnel, now):
    state = NearlineState(funnel, MemoryEventStore())
    errors = []

    def writer(w):
        try:
            for j in range(40):
                state.ingest([click(w * 1000 + j, f"u{(w * 7 + j) % 60:03d}", f"i{j % 60:03d}", now + j)])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(20):
                out, _ = funnel.run(state.request(["u000", "u007", "x"]), 5)
                assert out.item_index.shape[0] == 3
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + \
        [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert state.stats()["events_ingested"] == 160
    assert int(state.item_counts([f"i{j:03d}" for j in range(60)])["clicks"].sum()) == 160


def test_growing_counter_matches_one_counter_of_all_events():
    from recfunnel.features.statistics import EventCounter

    rng = np.random.default_rng(1)
    keys, times = rng.integers(0, 30, 500), rng.integers(0, 1000, 500)
    grow = GrowingCounter()
    for lo in range(0, 500, 37):
        grow.add(keys[lo:lo + 37], times[lo:lo + 37])
    assert len(grow._segments) <= 10
    whole = EventCounter(keys, times, 30)
    qk, qt = rng.integers(-1, 35, 300), rng.integers(-10, 1100, 300)
    for window in (None, 50, 400):
        np.testing.assert_array_equal(grow.count(qk, qt, window), whole.count(qk, qt, window))
    np.testing.assert_array_equal(grow.last_before(qk, qt), whole.last_before(qk, qt))
    np.testing.assert_array_equal(grow.first_time_, whole.first_time_)


def test_publishing_links_a_new_item_into_an_eges_similarity_graph():
    import torch

    from recfunnel.pipeline.nearline.items import publish_to_channels
    from recfunnel.stages.recall.embedding import EGESConfig, EGESRetriever
    from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups

    torch.set_num_threads(1)
    data = make_planted_data()
    user_group, item_group = planted_groups(data)
    eges = EGESRetriever(EGESConfig(session_gap_hours=None, subsample=0.0, dim=16, neighbours=20, batch_size=256,
                                    walks_per_node=5, walk_length=10, epochs=5)).fit(data)
    n = data.n_items
    rows = pd.DataFrame({"category": ["g0", "g9"]})  # g9: a category no trained item has
    assert publish_to_channels([eges], np.array([n, n + 1]), rows, np.array([T0, T0])) == [eges.name]
    assert eges.item_vectors_.shape[0] == eges.similarity_.shape[0] == n + 2
    np.testing.assert_allclose(eges.item_vectors_[n], eges.vector_from_side_info(rows)[0], atol=1e-6)
    row = eges.similarity_[n]
    assert row.nnz > 0 and (item_group[row.indices[np.argsort(-row.data)[:5]]] == 0).all()
    assert eges.similarity_[:, n].nnz > 0  # reachable from its neighbours' rows
    assert eges.similarity_[n + 1].nnz == 0 and eges.similarity_[:, n + 1].nnz == 0  # no information
    # the same graph as a fit of the neighbours over the grown catalogue
    from recfunnel.stages.recall.item2item import neighbours_from_vectors

    refit = neighbours_from_vectors(eges.item_vectors_, eges.config.neighbours)
    assert abs(refit - eges.similarity_).max() < 1e-5
    request = make_request(data, np.arange(data.n_users), 5)
    found = (eges.retrieve(request, k=n + 2).item_index == n).any(axis=1)
    assert found[user_group == 0].mean() > 0.5 and not found[user_group == 1].any()


class _Recorder(Retriever, Incremental):
    """A stage nearline has never heard of: it records what it is given and retrieves like ``inner``."""

    kind = "recorder"

    def __init__(self, inner: Retriever):
        super().__init__(None, inner.name)
        self.inner = inner
        self.published: list[NewItems] = []
        self.observed: list[tuple[EventBatch, RequestBatch]] = []

    def fit(self, data):
        return self

    def save(self, writer, prefix):
        raise NotImplementedError

    @classmethod
    def load(cls, reader, prefix, config, name=None):
        raise NotImplementedError

    def retrieve(self, request, k):
        return self.inner.retrieve(request, k)

    def publish(self, items: NewItems) -> bool:
        self.published.append(items)
        return True

    def observe(self, events: EventBatch) -> None:
        self.observed.append((events, events.history_before(np.arange(len(events)), 5)))


def _with_recorder(funnel):
    recorder = _Recorder(funnel.channels[0])
    funnel.channels[0] = recorder
    return recorder


def test_a_stage_unknown_to_nearline_gets_new_items_and_events_through_the_interface(funnel, fitted, now):
    recorder = _with_recorder(funnel)
    state = NearlineState(funnel, MemoryEventStore())
    state.ingest([click(1, "u000", "i059", now - 50), click(2, "newbie", "i001", now - 40, "impression"),
                  click(3, "u003", "fresh", now - 30)])  # 'fresh' is not published yet: it waits
    (events, history), = recorder.observed
    assert events.item_index.tolist() == funnel.item_ids.index(["i059", "i001"]).tolist()
    assert events.user_index.tolist() == [int(funnel.user_ids.index(["u000"])[0]), -1]
    assert events.positive.tolist() == [True, False] and events.time.tolist() == [now - 50, now - 40]
    assert events.value.tolist() == [1.0, 1.0]
    # the users' histories strictly before each event, as a request would see them
    np.testing.assert_array_equal(history.history, state.request(["u000", "newbie"], time=[now - 50, now - 40]).history[:, :5])
    assert state.publish_items(pd.DataFrame({"category": ["g2"], "publish_time": [now - 100]}, index=["fresh"])) == 1
    (items,) = recorder.published
    fresh = int(funnel.item_ids.index(["fresh"])[0])
    assert items.item_index.tolist() == [fresh] and items.publish_time.tolist() == [now - 100]
    assert items.attributes["category"].tolist() == ["g2"]
    # the waiting event arrives once its item is published, after the item
    assert recorder.observed[-1][0].item_index.tolist() == [fresh]
    # once per stage object: binding another version and this one again repeats nothing
    state.bind(copy.deepcopy(fitted[0]))
    state.bind(funnel)
    assert len(recorder.observed) == 2 and sum(len(e) for e, _ in recorder.observed) == 3
    # a frozen stage (by name or kind) observes nothing, and still takes published items
    other = copy.deepcopy(fitted[0])
    frozen = _with_recorder(other)
    state = NearlineState(other, MemoryEventStore(), NearlineConfig(frozen_stages=(frozen.name,)))
    state.ingest([click(1, "u000", "i059", now - 50)])
    state.publish_items(pd.DataFrame({"category": ["g2"]}, index=["fresh"]))
    assert frozen.observed == [] and len(frozen.published) == 1


def test_the_ranker_is_given_the_statistics_overlay_and_can_drop_it(funnel):
    ranker = funnel.ranker
    fitted_builder = ranker.features_
    state = NearlineState(funnel, MemoryEventStore())
    overlaid = ranker.features_
    assert isinstance(overlaid, NearlineFeatureBuilder) and overlaid.fitted_ is fitted_builder
    assert overlaid.item_counter_.extra is state._binding.counters["positives_by_item"]
    assert ranker.use_statistics(None) and ranker.features_ is fitted_builder
    assert ranker.statistics_time() == int(fitted_builder.item_exposure_.t_max)


def _nearline_sources():
    root = Path(recfunnel.__file__).resolve().parent / "pipeline" / "nearline"
    return {path.name: ast.parse(path.read_text()) for path in sorted(root.glob("*.py"))}


def test_nearline_dispatches_on_the_interface_only():
    """No ``isinstance`` against a stage class (the interface aside), no private attribute of another object."""
    interfaces = {("recfunnel.stages.base", "Incremental")}
    for name, tree in _nearline_sources().items():
        stage_names = {alias.asname or alias.name: (node.module, alias.name)
                       for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                       and (node.module or "").startswith("recfunnel.stages") for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                checked = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                for n in checked & set(stage_names):
                    assert stage_names[n] in interfaces, f"{name}: isinstance(..., {n})"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id in ("self", "cls"), \
                    f"{name}:{node.lineno}: private attribute {node.attr} of another object"


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_published_item_survives_a_restart(fitted, now, tmp_path, backend):
    if backend == "redis":
        from recfunnel.testing.redis_server import running_redis_or_skip

        server = running_redis_or_skip(tmp_path / "redis")
        url = server.url
    else:
        server, url = None, f"sqlite:///{tmp_path / 'events.db'}"
    try:
        funnel = copy.deepcopy(fitted[0])
        live = NearlineState(funnel, open_event_store(url))
        # a click on an item before it is published: pending, then counted in its place
        live.ingest([click(1, "u001", "fresh", now - 200)])
        live.publish_items(pd.DataFrame({"category": ["g0", "g1"], "publish_time": [now - 100, now - 90]},
                                        index=["fresh", "other"]))
        live.ingest([click(2, "u000", "fresh", now - 50), click(3, "u002", "other", now - 40, "impression")])
        # published again: the store keeps one record, with the latest attributes
        assert live.publish_items(pd.DataFrame({"category": ["g2"], "publish_time": [now - 80]},
                                               index=["other"])) == 0
        before = live.request(["u000", "u001", "cold"], time=now)
        new_items = next(c for c in funnel.channels if isinstance(c, NewItemRetriever))
        retrieved = ids(funnel, new_items.retrieve(live.request(["cold"], time=now), 5).item_index[0])
        live.store.close()

        restarted = copy.deepcopy(fitted[0])
        state = NearlineState(restarted, open_event_store(url))
        assert state.stats()["items_replayed"] == 2 and state.stats()["events_replayed"] == 3
        assert restarted.item_ids.ids.tolist() == funnel.item_ids.ids.tolist()  # same indices
        after = state.request(["u000", "u001", "cold"], time=now)
        np.testing.assert_array_equal(after.history, before.history)
        assert (after.exclude != before.exclude).nnz == 0
        assert ids(restarted, after.history[0])[0] == "fresh" and "fresh" in excluded(after, restarted, 1)
        counts = state.item_counts(["fresh", "other"])
        assert {k: v.tolist() for k, v in counts.items()} == {"clicks": [2, 0], "impressions": [0, 1]}
        new_items = next(c for c in restarted.channels if isinstance(c, NewItemRetriever))
        assert ids(restarted, new_items.retrieve(state.request(["cold"], time=now), 5).item_index[0]) == retrieved
        records = [r for r in state.store.scan_all() if not isinstance(r, Event)]
        assert [(r.item_id, r.attributes) for r in records] == [("fresh", {"category": "g0"}),
                                                                ("other", {"category": "g2"})]
        # a model swap after the restart: the new version is given the items, with the same indices
        swapped = copy.deepcopy(fitted[0])
        state.bind(swapped)
        assert swapped.item_ids.ids.tolist() == funnel.item_ids.ids.tolist()
        assert state.item_counts(["fresh"])["clicks"].tolist() == [2]
        state.store.close()
    finally:
        if server is not None:
            server.stop()
