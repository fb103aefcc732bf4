"""NewItemRetriever: conformance, age windows as of the request time, quotas, items added after fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.recall.new_items import NewItemConfig, NewItemRetriever
from recfunnel.stages.recall.profile import item_publish_time
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_request

HOUR = 3_600
DAY = 86_400
WINDOWS = (1.0, 6.0, 24.0, 720.0)


def _reference(item_time: np.ndarray, excluded: set[int], t: int, k: int, weights=(1, 1, 1, 1)) -> list[int]:
    """The pools the slow, obvious way: age bands, D'Hondt seat by seat, then newest first."""
    bounds = [0, *[int(w * HOUR) for w in WINDOWS]]
    pools = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        band = [i for i in range(len(item_time)) if i not in excluded and lo <= t - item_time[i] < hi]
        pools.append(sorted(band, key=lambda i: (-item_time[i], i)))
    taken = [0] * len(pools)
    chosen = []
    while len(chosen) < k:
        open_pools = [p for p in range(len(pools)) if taken[p] < len(pools[p]) and weights[p] > 0]
        if not open_pools:
            break
        best = max(open_pools, key=lambda p: (weights[p] / (taken[p] + 1), -p))
        chosen.append(pools[best][taken[best]])
        taken[best] += 1
    return sorted(chosen, key=lambda i: (-item_time[i], chosen.index(i)))


class TestNewItemsConformance(RetrieverConformance):
    def make_retriever(self) -> NewItemRetriever:
        return NewItemRetriever()

    def check_planted_answer(self, data, request, out) -> None:
        # known answer: no publish_time column, so the first event dates every item
        item_time = item_publish_time(data)
        for row in range(0, len(request), 5):
            expected = _reference(item_time, set(request.exclude[row].indices), int(request.time[row]), self.k)
            assert out.item_index[row][out.valid[row]].tolist() == expected
            age_hours = (request.time[row] - item_time[expected]) / HOUR
            np.testing.assert_allclose(out.score[row][out.valid[row]], -age_hours, rtol=1e-6)


class TestPersonalisedNewItemsConformance(RetrieverConformance):
    def make_retriever(self) -> NewItemRetriever:
        return NewItemRetriever(NewItemConfig(personalised=True))


def _dated_data(ages_hours: dict[str, float], now: int, categories: dict[str, str] | None = None):
    """Items published ``age`` hours before ``now``; one old event so the data is not empty."""
    names = list(ages_hours)
    items = pd.DataFrame({"publish_time": [now - int(ages_hours[n] * HOUR) for n in names]},
                         index=pd.Index(names, name="item_id"))
    if categories is not None:
        items["category"] = [categories[n] for n in names]
    events = pd.DataFrame({"user_id": ["u0", "u1"], "item_id": [names[0], names[1]],
                           "timestamp": [now - 100 * DAY, now - 99 * DAY]})
    return build_training_data(events, items=items)


def test_pools_respect_windows_and_the_request_time() -> None:
    now = 1_000 * DAY
    ages = {"h0": 0.5, "h1": 3.0, "h2": 12.0, "d3": 10 * 24.0, "old": 40 * 24.0, "future": -2.5}
    data = _dated_data(ages, now)
    pools = NewItemRetriever().fit(data)
    unknown = make_request(data, np.array([-1]), history_length=3, time=now)
    out = pools.retrieve(unknown, k=10)
    names = data.item_ids.to_ids(out.item_index[0][out.valid[0]]).tolist()
    assert names == ["h0", "h1", "h2", "d3"]  # newest first, no 40-day-old item, nothing from the future
    np.testing.assert_allclose(out.score[0][out.valid[0]], [-0.5, -3.0, -12.0, -240.0])
    # three hours later the "future" item is out, half an hour old, and first (h0 is 3.5 hours old)
    later = pools.retrieve(make_request(data, np.array([-1]), history_length=3, time=now + 3 * HOUR), k=2)
    assert data.item_ids.to_ids(later.item_index[0]).tolist() == ["future", "h0"]
    # a request in the past sees neither the items published since nor their windows
    past = pools.retrieve(make_request(data, np.array([-1]), history_length=3, time=now - 5 * HOUR), k=10)
    assert data.item_ids.to_ids(past.item_index[0][past.valid[0]]).tolist() == ["h2", "d3"]


def test_per_window_quotas() -> None:
    now = 1_000 * DAY
    ages = {f"a{i}": 0.05 * (i + 1) for i in range(6)} | {f"b{i}": 1.5 + 0.5 * i for i in range(6)}
    ages |= {f"c{i}": 30.0 + i for i in range(6)}
    data = _dated_data(ages, now)
    request = make_request(data, np.array([-1]), history_length=3, time=now)

    def pools_of(quota, k):
        out = NewItemRetriever(NewItemConfig(per_window_quota=quota)).fit(data).retrieve(request, k)
        return [n[0] for n in data.item_ids.to_ids(out.item_index[0][out.valid[0]])]

    assert pools_of(None, 6) == ["a", "a", "b", "b", "c", "c"]  # equal quotas (a 4th pool is empty)
    assert pools_of((3.0, 1.0, 0.0, 0.0), 4) == ["a", "a", "a", "b"]
    assert pools_of((3.0, 1.0, 0.0, 0.0), 20) == ["a"] * 6 + ["b"] * 6  # zero quota: never
    assert pools_of((0.0, 0.0, 1.0, 1.0), 3) == ["c", "c", "c"]


def test_items_added_after_fit_enter_at_once(tmp_path) -> None:
    now = 1_000 * DAY
    data = _dated_data({"x": 2.0, "y": 30.0}, now, categories={"x": "food", "y": "travel"})
    pools = NewItemRetriever(NewItemConfig(personalised=True)).fit(data)
    n = data.n_items
    pools.add_items(np.array([n, n + 1]), np.array([now - 60, now + HOUR]), category=["travel", "cars"])
    assert len(pools.item_time_) == n + 2
    request = make_request(data, np.array([-1]), history_length=3, time=now)
    assert pools.retrieve(request, k=5).item_index[0].tolist() == [n, 0, 1]  # n + 1 is not published yet

    # personalised: the user had "y" (travel) -> travel's new items, "cars" is a new category
    travel_fan = make_request(data, data.user_ids.index(["u1"]), history_length=3, time=now)
    assert pools.retrieve(travel_fan, k=5).item_index[0].tolist() == [n]  # y itself is excluded (seen)
    pools.add_items(np.array([n + 1]), np.array([now - 10]), category=["travel"])  # re-dated, re-categorised
    assert pools.retrieve(travel_fan, k=5).item_index[0].tolist() == [n + 1, n]

    with ArtifactWriter(tmp_path / "m", kind="new_items") as writer:
        pools.save(writer, "p/")
    loaded = NewItemRetriever.load(ArtifactReader(tmp_path / "m"), "p/", pools.config)
    assert loaded.retrieve(travel_fan, k=5).item_index[0].tolist() == [n + 1, n]
    np.testing.assert_array_equal(loaded.item_time_, pools.item_time_)


def test_personalised_pools_follow_the_users_categories() -> None:
    now = 1_000 * DAY
    ages = {"seen": 500.0, "f1": 1.0 / 60, "f2": 2.0, "t1": 0.5, "t2": 3.0, "m1": 0.2}
    cats = {"seen": "food", "f1": "food", "f2": "food", "t1": "travel", "t2": "travel", "m1": "music"}
    data = _dated_data(ages, now, categories=cats)  # u0 had "seen" (food), u1 had "f1"
    pools = NewItemRetriever(NewItemConfig(personalised=True)).fit(data)
    food_fan = make_request(data, data.user_ids.index(["u0"]), history_length=3, time=now)
    out = pools.retrieve(food_fan, k=5)
    assert data.item_ids.to_ids(out.item_index[0][out.valid[0]]).tolist() == ["f1", "f2"]
    # users without a history get the plain pools: one item of each non-empty pool first
    anonymous = make_request(data, np.array([-1]), history_length=3, time=now)
    out = pools.retrieve(anonymous, k=3)
    plain = NewItemRetriever().fit(data).retrieve(anonymous, k=3)
    np.testing.assert_array_equal(out.item_index, plain.item_index)
    assert data.item_ids.to_ids(out.item_index[0]).tolist() == ["f1", "f2", "seen"]


def test_bad_config_and_inputs() -> None:
    now = 1_000 * DAY
    data = _dated_data({"x": 1.0, "y": 2.0}, now)
    for cfg in (NewItemConfig(windows_hours=(6.0, 1.0)), NewItemConfig(windows_hours=()),
                NewItemConfig(per_window_quota=(1.0,)), NewItemConfig(per_window_quota=(0.0, 0.0, 0.0, 0.0)),
                NewItemConfig(personalised=True)):  # no category column
        with pytest.raises(ConfigError):
            NewItemRetriever(cfg).fit(data)
    pools = NewItemRetriever().fit(data)
    with pytest.raises(DataError):
        pools.add_items(np.array([5, 6]), np.array([now]))
    with pytest.raises(DataError):
        pools.add_items(np.array([-1]), np.array([now]))
