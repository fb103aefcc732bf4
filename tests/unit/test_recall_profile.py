"""Profile channels: category / tag index, author and geographic recall, and their shared machinery."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.recall.profile import (
    UNKNOWN_TIME,
    AuthorConfig,
    AuthorRetriever,
    CategoryIndexConfig,
    CategoryIndexRetriever,
    GeoConfig,
    GeoRetriever,
    ItemLists,
    category_columns,
    encode_item_values,
    item_publish_time,
    mix_lists,
)
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups
from recfunnel.types import RequestBatch

DAY = 86_400


def _planted_with(item_columns: dict | None = None, user_columns: dict | None = None):
    """Planted data plus item / user columns computed from each item's and user's group."""
    data = make_planted_data()
    user_group, item_group = planted_groups(data)
    items, users = data.item_features.copy(), data.user_features.copy()
    for name, make in (item_columns or {}).items():
        items[name] = make(item_group, np.arange(data.n_items))
    for name, make in (user_columns or {}).items():
        users[name] = make(user_group, np.arange(data.n_users))
    return replace(data, item_features=items, user_features=users)


# --- shared machinery --------------------------------------------------------------------------


def test_item_lists_count_after_and_membership() -> None:
    lists = ItemLists.build(np.array([0, 0, 0, 1]), np.array([5, 6, 7, 6]), np.array([30, 10, 20, 40]),
                            np.array([30, 10, 20, 40]), n_lists=3, n_items=8)
    assert lists.items.tolist() == [5, 7, 6, 6] and lists.indptr.tolist() == [0, 3, 4, 4]
    counts = lists.count_after(np.array([0, 0, 0, 0, 1, 2]), np.array([5, 10, 25, 99, 39, 0]))
    assert counts.tolist() == [3, 2, 1, 0, 1, 0]
    assert lists.membership.shape == (8, 3) and lists.membership[6].indices.tolist() == [0, 1]


def test_mix_lists_gives_places_in_proportion_and_skips_exclusions() -> None:
    # list 0: items 0..9, list 1: items 10..19, best first in index order
    items = np.arange(20)
    lists = ItemLists.build(items // 10, items, -items.astype(float), np.zeros(20, np.int64), 2, 20)
    exclude = sp.csr_matrix((np.ones(2), ([0, 0], [0, 11])), shape=(1, 20))
    request = RequestBatch(np.array([0]), np.array([100]), np.full((1, 1), -1), np.zeros((1, 1), np.int64), exclude)
    got, priority, _ = mix_lists(lists, request, 8, np.array([0, 0]), np.array([0, 1]), np.array([0.75, 0.25]),
                                 time_ordered=False)
    assert sorted(got[0].tolist()) == [1, 2, 3, 4, 5, 6, 10, 12]  # 6 + 2 places, exclusions skipped
    assert got[0, :2].tolist() == [1, 2] and (np.diff(priority[0]) <= 0).all()


def _mix_reference(lists, request, k, rows, list_ids, weights, starts, stops):
    """mix_lists the slow, obvious way: every survivor of every pair, D'Hondt, best per item, top k."""
    out = []
    for r in range(len(request)):
        best = {}
        for p in np.flatnonzero(rows == r):
            lo, hi = lists.indptr[list_ids[p]], lists.indptr[list_ids[p] + 1]
            entries = range(lo + starts[p], min(lo + stops[p], hi))
            survivors = [e for e in entries if not request.exclude[r, lists.items[e]]
                         and lists.time[e] <= request.time[r]]
            for j, e in enumerate(survivors):
                candidate = (weights[p] / (j + 1), -p, -j)
                if lists.items[e] not in best or candidate > best[lists.items[e]]:
                    best[lists.items[e]] = candidate
        ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)[:k]
        out.append([item for item, _ in ranked])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_mix_lists_matches_a_brute_force_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items, n_lists, b, k = 60, 6, 7, int(rng.integers(1, 15))
    entries = rng.random((n_lists, n_items)) < 0.4  # overlapping lists
    list_id, items = np.nonzero(entries)
    time = rng.integers(0, 100, n_items)
    lists = ItemLists.build(list_id, items, rng.random(len(items)), time[items], n_lists, n_items)
    exclude = sp.csr_matrix(rng.random((b, n_items)) < 0.3)
    request = RequestBatch(np.arange(b), rng.integers(50, 120, b), np.full((b, 1), -1),
                           np.zeros((b, 1), np.int64), exclude)
    rows = np.sort(rng.integers(0, b - 1, 15))  # the last row has no pair
    list_ids = rng.integers(0, n_lists, 15)
    weights = rng.choice([0.1, 0.2, 0.25, 0.5, 1.0], 15)
    length = np.diff(lists.indptr)[list_ids]
    starts = rng.integers(0, 3, 15)
    stops = np.where(rng.random(15) < 0.5, length, starts + rng.integers(0, 20, 15))
    got, priority, position = mix_lists(lists, request, k, rows, list_ids, weights, starts, stops,
                                        time_ordered=False)
    expected = _mix_reference(lists, request, k, rows, list_ids, weights, starts, stops)
    assert [g[g >= 0].tolist() for g in got] == expected
    assert (lists.items[position[got >= 0]] == got[got >= 0]).all()
    assert np.isneginf(priority[got < 0]).all()


def test_publish_time_falls_back_to_the_first_event() -> None:
    events = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "b"], "timestamp": [50, 70, 60]})
    items = pd.DataFrame({"publish_time": [10.0, np.nan, np.nan]}, index=pd.Index(["a", "b", "c"]))
    data = build_training_data(events, items=items)
    assert item_publish_time(data).tolist() == [10, 60, UNKNOWN_TIME]


def test_category_columns_and_encoding() -> None:
    items = pd.DataFrame({
        "category": ["x", "y", None], "tags": [("t1", "t2"), ("t2",), ()], "author_id": ["a", "b", "c"],
        "price": [1.0, 2.0, 3.0],
    })
    assert category_columns(items, 1000) == ("category", "tags")
    assert category_columns(items.drop(columns=["category", "tags"]), 1000) == ()  # ids are skipped
    # no named column: any low-cardinality categorical or multi-value one
    assert category_columns(items.rename(columns={"category": "style", "tags": "labels"}), 1000) == ("style", "labels")
    assert category_columns(items.rename(columns={"category": "style", "tags": "labels"}), 1) == ()
    item, value, weight, vocabulary = encode_item_values(items, ("category", "tags"))
    pairs = sorted(zip(item.tolist(), vocabulary[value].tolist(), weight.tolist(), strict=True))
    assert pairs == [(0, "category=x", 0.5), (0, "tags=t1", 0.25), (0, "tags=t2", 0.25),
                     (1, "category=y", 0.5), (1, "tags=t2", 0.5)]


# --- category index ---------------------------------------------------------------------------


class TestCategoryIndexConformance(RetrieverConformance):
    def make_retriever(self) -> CategoryIndexRetriever:
        return CategoryIndexRetriever()


def _catalogue():
    """Categories F (food, 8 items) and T (travel, 4 items), published an hour apart, item
    index order = publish order; user "me" had f0, f1, t0 (all old); "late" is published in
    the future of the requests."""
    names = [f"f{i}" for i in range(8)] + [f"t{i}" for i in range(4)] + ["late"]
    items = pd.DataFrame({
        "category": ["F"] * 8 + ["T"] * 4 + ["F"],
        "tags": [("spicy",)] * 3 + [("sweet", "spicy")] * 5 + [("sea",)] * 4 + [("spicy",)],
        "author_id": ["ann", "bob"] * 4 + ["cat"] * 4 + ["ann"],
        "city": ["paris"] * 6 + ["rome"] * 6 + ["paris"],
        "publish_time": [DAY + h * 3_600 for h in range(12)] + [100 * DAY],
    }, index=pd.Index(names, name="item_id"))
    events = [("me", "f0", 10 * DAY), ("me", "t0", 10 * DAY + 1), ("me", "f1", 10 * DAY + 2)]
    events += [(f"fan{j}", "f2", 5 * DAY + j) for j in range(3)] + [("fan9", "t1", 5 * DAY)]
    users = pd.DataFrame({"city": ["paris", "rome", "rome", "rome", "paris"]},
                         index=pd.Index(["me", "fan0", "fan1", "fan2", "fan9"], name="user_id"))
    frame = pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"])
    return build_training_data(frame, users=users, items=items)


def _names(data, out, row=0) -> list[str]:
    return data.item_ids.to_ids(out.item_index[row][out.valid[row]]).tolist()


def test_category_index_returns_the_newest_items_of_the_top_category_first() -> None:
    data = _catalogue()
    index = CategoryIndexRetriever(CategoryIndexConfig(columns=("category",), recency="none")).fit(data)
    me = make_request(data, data.user_ids.index(["me"]), history_length=5, time=50 * DAY)
    got = _names(data, index.retrieve(me, k=6))
    # shares F 2/3, T 1/3: 4 newest unseen F, 2 newest unseen T; "late" is not published yet
    assert got[0] == "f7"
    assert [g for g in got if g[0] == "f"] == ["f7", "f6", "f5", "f4"]
    assert [g for g in got if g[0] == "t"] == ["t3", "t2"]
    later = make_request(data, data.user_ids.index(["me"]), history_length=5, time=200 * DAY)
    assert _names(data, index.retrieve(later, k=1)) == ["late"]


def test_category_index_over_several_columns_and_tags() -> None:
    data = _catalogue()
    index = CategoryIndexRetriever(CategoryIndexConfig(top_values=2, recency="none")).fit(data)
    assert set(index.values_) >= {"category=F", "tags=spicy", "tags=sea"}  # auto: category and tags
    me = make_request(data, data.user_ids.index(["me"]), history_length=5, time=50 * DAY)
    got = _names(data, index.retrieve(me, k=4))
    # the top values are category=F (1/3) and tags=spicy (1/3): newest F items, then the spicy ones
    assert got[0] == "f7" and set(got) <= {f"f{i}" for i in range(2, 8)}


def test_category_index_config_errors() -> None:
    data = _catalogue()
    with pytest.raises(ConfigError, match="not found"):
        CategoryIndexRetriever(CategoryIndexConfig(columns=("genre",))).fit(data)
    with pytest.raises(ConfigError, match="no categorical column"):
        CategoryIndexRetriever().fit(replace(data, item_features=data.item_features[["publish_time"]]))
    with pytest.raises(ConfigError, match="recency"):
        CategoryIndexRetriever(CategoryIndexConfig(recency="sometimes")).fit(data)


# --- author -----------------------------------------------------------------------------------


class TestAuthorConformance(RetrieverConformance):
    def make_retriever(self) -> AuthorRetriever:
        return AuthorRetriever()

    def make_data(self):
        # three authors per group
        return _planted_with({"author_id": lambda group, item: [f"a{g}_{i % 3}" for g, i in zip(group, item, strict=True)]})


def test_author_recall_returns_an_authors_newest_items() -> None:
    data = _catalogue()
    authors = AuthorRetriever(AuthorConfig(recency="none")).fit(data)
    me = make_request(data, data.user_ids.index(["me"]), history_length=5, time=50 * DAY)
    got = _names(data, authors.retrieve(me, k=10))
    # "me" had f0 (ann), t0 (cat), f1 (bob): each author's newest unseen items, newest first
    assert [g for g in got if g in {"f2", "f4", "f6"}] == ["f6", "f4", "f2"]  # ann's
    assert [g for g in got if g in {"t1", "t2", "t3"}] == ["t3", "t2", "t1"]  # cat's
    assert got[0] in {"f6", "f7", "t3"} and "late" not in got
    with pytest.raises(ConfigError, match="author_id"):
        AuthorRetriever().fit(replace(data, item_features=data.item_features.drop(columns=["author_id"])))


# --- geographic -------------------------------------------------------------------------------


class TestGeoByUsersConformance(RetrieverConformance):
    def make_retriever(self) -> GeoRetriever:
        return GeoRetriever(GeoConfig(half_life_days=None))

    def make_data(self):
        # users live in their group's city; items have no location: popularity among the city's users
        return _planted_with(user_columns={"city": lambda group, user: [f"city{g}" for g in group]})


class TestGeoByItemConformance(RetrieverConformance):
    def make_retriever(self) -> GeoRetriever:
        return GeoRetriever(GeoConfig(column="region"))

    def make_data(self):
        return _planted_with(item_columns={"region": lambda group, item: [f"r{g}" for g in group]},
                             user_columns={"region": lambda group, user: [f"r{g}" for g in group]})


def test_geo_returns_the_popular_items_of_the_users_city() -> None:
    data = _catalogue()
    request = make_request(data, data.user_ids.index(["me", "fan0", "nobody"]), history_length=3, time=50 * DAY)
    by_item = GeoRetriever(GeoConfig(half_life_days=None)).fit(data)  # items have a city: source "item"
    out = by_item.retrieve(request, k=5)
    # paris' items with events are f0, f1 (both seen by "me") and f2 (3 fans); "nobody" is unknown
    assert _names(data, out, 0) == ["f2"] and _names(data, out, 2) == []
    rome = by_item.retrieve(make_request(data, data.user_ids.index(["fan0"]), history_length=3, time=50 * DAY), 5)
    assert _names(data, rome) == ["t0", "t1"]  # rome's items with events, f2 (paris) is not among them

    by_users = GeoRetriever(GeoConfig(source="users", half_life_days=None)).fit(data)
    rome = by_users.retrieve(make_request(data, data.user_ids.index(["fan9"]), history_length=3, time=50 * DAY), 5)
    assert _names(data, rome) == ["f0", "f1", "t0"]  # what paris users (me, fan9) had, ties by index; t1 seen
    # a request's context overrides the user table; unknown users and places get padding
    moved = replace(request, context={"city": np.array(["rome", "", "atlantis"])})
    out = by_users.retrieve(moved, k=5)
    assert _names(data, out, 0) == ["f2"] and _names(data, out, 2) == []
    assert _names(data, out, 1) == []  # fan0 lives in rome and had f2, the only rome hit


def test_geo_config_errors() -> None:
    data = _catalogue()
    with pytest.raises(ConfigError, match="location column"):
        GeoRetriever().fit(replace(data, user_features=data.user_features.drop(columns=["city"])))
    with pytest.raises(ConfigError, match="source='item'"):
        GeoRetriever(GeoConfig(source="item")).fit(replace(data, item_features=data.item_features.drop(columns=["city"])))
