"""Popular channels: global popular, hot (short half-life) and category popular."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.recall.popular import (
    CategoryPopularConfig,
    CategoryPopularRetriever,
    HotConfig,
    HotRetriever,
    PopularConfig,
    PopularRetriever,
)
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_request
from recfunnel.types import RequestBatch

DAY = 86_400


class TestPopularConformance(RetrieverConformance):
    def make_retriever(self) -> PopularRetriever:
        return PopularRetriever(PopularConfig(half_life_days=None))

    def check_planted_answer(self, data, request, out) -> None:
        # known answer: items by number of positives, minus each user's own items
        counts = np.bincount(data.interactions.item_index, minlength=data.n_items)
        for row in range(0, len(request), 7):  # a few rows, checked the slow obvious way
            seen = set(request.exclude[row].indices)
            expected = [i for i in np.argsort(-counts, kind="stable") if i not in seen and counts[i] > 0]
            got = out.item_index[row][out.valid[row]].tolist()
            assert got == expected[: len(got)]
            assert len(got) == min(self.k, len(expected))


def _data(events: list[tuple[str, str, int]]):
    return build_training_data(pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"]))


def _request(n_rows: int, n_items: int, exclude: sp.csr_matrix | None = None,
             time: int = 100 * DAY) -> RequestBatch:
    """Requests without history at ``time`` (by default after every event of these tests)."""
    return RequestBatch(
        np.arange(n_rows), np.full(n_rows, time, np.int64), np.full((n_rows, 1), -1),
        np.zeros((n_rows, 1), np.int64),
        exclude if exclude is not None else sp.csr_matrix((n_rows, n_items)),
    )


def test_constant_timestamps_give_plain_counts() -> None:
    data = _data([("u1", "a", 5), ("u2", "a", 5), ("u3", "b", 5)])
    popular = PopularRetriever().fit(data)
    np.testing.assert_allclose(popular.scores_, [2.0, 1.0])


def test_half_life_halves_an_old_event() -> None:
    data = _data([("u1", "a", 0), ("u2", "b", 30 * DAY)])
    popular = PopularRetriever(PopularConfig(half_life_days=30.0)).fit(data)
    np.testing.assert_allclose(popular.scores_, [0.5, 1.0])
    out = popular.retrieve(_request(1, 2), k=5)
    assert out.item_index.tolist() == [[1, 0]]


def test_window_drops_old_events() -> None:
    data = _data([("u1", "a", 0), ("u2", "a", 0), ("u3", "b", 10 * DAY)])
    popular = PopularRetriever(PopularConfig(half_life_days=None, window_days=5.0)).fit(data)
    np.testing.assert_allclose(popular.scores_, [0.0, 1.0])
    assert popular.retrieve(_request(1, 2), k=5).item_index.tolist() == [[1]]


def test_exclusions_differ_per_row() -> None:
    data = _data([("u", "a", 0)] * 1 + [("u", "b", 0)] * 2 + [("u", "c", 0)] * 3 + [("v", "c", 0)])
    popular = PopularRetriever().fit(data)
    exclude = sp.csr_matrix(np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0]]))
    out = popular.retrieve(_request(3, 3, exclude), k=2)
    assert out.item_index.tolist() == [[1, 0], [-1, -1], [2, 1]]
    assert np.isneginf(out.score[1]).all()


def test_rejects_bad_config() -> None:
    data = _data([("u", "a", 0)])
    with pytest.raises(ConfigError):
        PopularRetriever(PopularConfig(half_life_days=0.0)).fit(data)


def test_items_first_seen_after_the_request_are_not_returned() -> None:
    # point-in-time: "b" is the most popular item, but nobody had it before t = 5 days
    data = _data([("u1", "a", 0), ("u2", "b", 5 * DAY), ("u3", "b", 6 * DAY), ("u4", "c", 1)])
    popular = PopularRetriever(PopularConfig(half_life_days=None)).fit(data)
    request = RequestBatch(np.arange(2), np.array([2 * DAY, 10 * DAY]), np.full((2, 1), -1),
                           np.zeros((2, 1), np.int64), sp.csr_matrix((2, 3)))
    out = popular.retrieve(request, k=2)
    assert out.item_index.tolist() == [[0, 2], [1, 0]]


def test_publish_time_column_counts_as_the_item_time() -> None:
    events = pd.DataFrame([("u1", "a", 10), ("u2", "a", 10), ("u3", "b", 10)],
                          columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"publish_time": [50, 0]}, index=pd.Index(["a", "b"], name="item_id"))
    popular = PopularRetriever().fit(build_training_data(events, items=items))
    assert popular.retrieve(_request(1, 2, time=20), k=2).item_index.tolist() == [[1, -1]]


def test_load_of_an_artifact_without_item_times(tmp_path) -> None:
    with ArtifactWriter(tmp_path / "m", kind="popular") as writer:
        writer.write_arrays("popular.npz", {"scores": np.array([1.0, 3.0], np.float32)})
    popular = PopularRetriever.load(ArtifactReader(tmp_path / "m"), "", PopularConfig())
    assert popular.retrieve(_request(1, 2, time=0), k=2).item_index.tolist() == [[1, 0]]


# --- hot -------------------------------------------------------------------------------------


class TestHotConformance(RetrieverConformance):
    def make_retriever(self) -> HotRetriever:
        return HotRetriever(HotConfig(half_life_days=2.0, window_days=10.0))

    def check_planted_answer(self, data, request, out) -> None:
        # known answer: sum of 2 ** (-age / 2 days) over events of the last 10 days
        inter = data.interactions
        age = (inter.timestamp.max() - inter.timestamp) / DAY
        hot = np.bincount(inter.item_index, weights=np.where(age <= 10, np.exp2(-age / 2.0), 0.0),
                          minlength=data.n_items)
        for row in range(0, len(request), 7):
            seen = set(request.exclude[row].indices)
            expected = [i for i in np.argsort(-hot, kind="stable") if i not in seen and hot[i] > 0]
            got = out.item_index[row][out.valid[row]].tolist()
            assert got == expected[: len(got)] and len(got) == min(self.k, len(expected))
            np.testing.assert_allclose(out.score[row][out.valid[row]], hot[got], rtol=1e-5)


def test_hot_prefers_what_is_recent_and_popular_what_is_frequent() -> None:
    old = [(f"u{j}", "evergreen", 0) for j in range(5)]
    new = [(f"v{j}", "trending", 20 * DAY) for j in range(2)]
    data = _data(old + new)
    assert PopularRetriever().fit(data).retrieve(_request(1, 2), k=2).item_index.tolist() == [[0, 1]]
    hot = HotRetriever().fit(data)
    assert hot.kind == "hot" and hot.name == "hot"
    assert hot.retrieve(_request(1, 2), k=2).item_index.tolist() == [[1]]  # evergreen is out of the window


# --- category popular ------------------------------------------------------------------------


class TestCategoryPopularConformance(RetrieverConformance):
    def make_retriever(self) -> CategoryPopularRetriever:
        return CategoryPopularRetriever(CategoryPopularConfig(half_life_days=None))


_SIZES = (("a", 12), ("b", 8), ("c", 4))


def _category_data():
    """Categories A (items a0..a11), B (b0..b7), C (c0..c3); within a category, lower numbers are
    more popular; user "me" had a5, a6, a7 and b7."""
    events = []
    for cat, n in _SIZES:
        for i in range(n):
            events += [(f"fan{cat}{i}_{j}", f"{cat}{i}", 100 + j) for j in range(15 - i)]
    events += [("me", "a5", 1_000), ("me", "b7", 1_001), ("me", "a7", 1_002), ("me", "a6", 1_003)]
    items = pd.DataFrame({"category": [c.upper() for c, n in _SIZES for _ in range(n)]},
                         index=pd.Index([f"{c}{i}" for c, n in _SIZES for i in range(n)]))
    return build_training_data(pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"]), items=items)


def test_category_popular_follows_the_category_mix() -> None:
    data = _category_data()
    channel = CategoryPopularRetriever(CategoryPopularConfig(half_life_days=None, recency="none")).fit(data)
    me = data.user_ids.index(["me"])
    out = channel.retrieve(make_request(data, me, history_length=10), k=8)
    got = data.item_ids.to_ids(out.item_index[0][out.valid[0]]).tolist()
    # shares A 3/4, B 1/4 -> 6 places for A and 2 for B (D'Hondt), each the hottest unseen, no C
    assert [g for g in got if g.startswith("a")] == ["a0", "a1", "a2", "a3", "a4", "a8"]
    assert [g for g in got if g.startswith("b")] == ["b0", "b1"]
    assert got[:2] == ["a0", "a1"] and len(got) == 8
    assert (np.diff(out.score[0]) <= 0).all()
    # a category that runs dry leaves its places to the others
    more = channel.retrieve(make_request(data, me, history_length=10), k=20)
    assert (more.valid.sum(), sum(g.startswith("b") for g in data.item_ids.to_ids(more.item_index[0]))) == (16, 7)


def test_category_popular_needs_the_column() -> None:
    with pytest.raises(ConfigError, match="no column 'genre'"):
        CategoryPopularRetriever(CategoryPopularConfig(column="genre")).fit(_category_data())
    with pytest.raises(ConfigError):
        CategoryPopularRetriever(CategoryPopularConfig(top_categories=0)).fit(_category_data())


# --- nearline: events and items after the fit ---------------------------------------------------


def _events_after_the_fit(rng, n: int, items: list[str], start: int, span: int) -> list[tuple[str, str, int]]:
    return [(f"late{j}", str(rng.choice(items)), int(start + rng.integers(0, span))) for j in range(n)]


@pytest.mark.parametrize("config", [PopularConfig(), PopularConfig(half_life_days=None), HotConfig(window_days=None)])
def test_nearline_events_give_the_list_a_fit_on_all_events_gives(config) -> None:
    rng = np.random.default_rng(3)
    items = [f"i{i}" for i in range(12)]
    fitted = [(f"u{j}", str(rng.choice(items[:10])), int(rng.integers(0, 20 * DAY))) for j in range(200)]
    # later events, some on items the fit never saw, starting within a half-life of the training data
    # (the hot channel's 6 hours); their span, 2 days, is 8 of hot's half-lives
    late = _events_after_the_fit(rng, 60, items, max(t for _, _, t in fitted) + 3600, 2 * DAY)
    refit = PopularRetriever(config).fit(_data(fitted + late))
    channel = PopularRetriever(config).fit(_data(fitted))
    ids = _data(fitted + late).item_ids
    known = _data(fitted).item_ids
    # the channel's own indices for the late items (new ones appended after the fitted catalogue)
    extended = known.extended(np.array(sorted({i for _, i, _ in late} - set(known.ids)), dtype=object))
    channel.update(extended.index(np.array([i for _, i, _ in late], dtype=object)),
                   np.array([t for _, _, t in late]))
    got = extended.to_ids(channel.order_).tolist()
    assert got == ids.to_ids(refit.order_).tolist()
    np.testing.assert_allclose(channel.scores_[extended.index(np.array(got, dtype=object))],
                               refit.scores_[ids.index(np.array(got, dtype=object))], rtol=1e-5)
    out = channel.retrieve(_request(1, len(extended), time=40 * DAY), k=5)
    assert extended.to_ids(out.item_index[0]).tolist() == got[:5]


def test_a_published_item_enters_with_its_first_events_and_not_before_its_publish_time() -> None:
    data = _data([("u1", "a", 0), ("u2", "a", DAY), ("u3", "b", 2 * DAY)])
    channel = PopularRetriever(PopularConfig(half_life_days=30.0)).fit(data)
    channel.add_items(np.array([2]), np.array([50 * DAY]))
    assert channel.retrieve(_request(1, 3, time=60 * DAY), k=5).item_index.tolist() == [[0, 1]]  # no clicks yet
    channel.update(np.array([2, 2, 2]), np.array([50 * DAY, 50 * DAY + 60, 50 * DAY + 120]))
    assert channel.retrieve(_request(1, 3, time=60 * DAY), k=5).item_index.tolist() == [[2, 0, 1]]
    assert channel.retrieve(_request(1, 3, time=49 * DAY), k=5).item_index.tolist() == [[0, 1, -1]]  # not out yet
    # the scores are as of the newest event: the new item's three clicks of the last minutes count ~3
    assert channel.scores_[2] == pytest.approx(3.0, rel=1e-3)
    # 48 idle days between the training data and the first click count as one half-life (30 days)
    assert channel.idle_offset_ == 18 * DAY
    newest = 50 * DAY + 120 - channel.idle_offset_
    assert channel.scores_[0] == pytest.approx(2 ** (-newest / (30 * DAY)) + 2 ** (-(newest - DAY) / (30 * DAY)),
                                               rel=1e-5)


def test_ties_after_updates_keep_the_lower_index_first() -> None:
    data = _data([("u1", "a", 0), ("u2", "b", 0), ("u3", "c", 0), ("u4", "c", 0)])
    channel = PopularRetriever(PopularConfig(half_life_days=None)).fit(data)
    channel.update(np.array([0, 4, 3]), np.array([1, 1, 1]))  # a: 2, c: 2, d: 1, e: 1 (d, e new)
    assert channel.order_.tolist() == [0, 2, 1, 3, 4]
    assert channel.order_.tolist() == np.argsort(-channel.scores_, kind="stable").tolist()


def test_save_writes_the_fitted_popularity_not_the_nearline_events(tmp_path) -> None:
    data = _data([("u1", "a", 0), ("u2", "a", DAY), ("u3", "b", 2 * DAY)])
    channel = PopularRetriever().fit(data)
    fitted = channel.scores_.copy()
    channel.update(np.array([1, 1, 1]), np.array([3 * DAY] * 3))
    with ArtifactWriter(tmp_path / "m", kind="popular") as writer:
        channel.save(writer, "")
    loaded = PopularRetriever.load(ArtifactReader(tmp_path / "m"), "", PopularConfig())
    np.testing.assert_array_equal(loaded.scores_, fitted)
    assert loaded.ref_time_ == 2 * DAY
    loaded.update(np.array([1, 1, 1]), np.array([3 * DAY] * 3))
    np.testing.assert_array_equal(loaded.scores_, channel.scores_)


def test_a_model_served_long_after_its_data_keeps_its_popularity_scale() -> None:
    fitted = [("u1", "a", 0), ("u2", "a", DAY), ("u3", "b", 2 * DAY), ("u4", "b", 2 * DAY), ("u5", "c", 2 * DAY)]
    channel = PopularRetriever(PopularConfig(half_life_days=30.0)).fit(_data(fitted))
    before = channel.scores_.copy()
    year = 2 * DAY + 365 * DAY
    channel.update(np.array([2, 2]), np.array([year, year + 60]))  # 'c' clicked twice, a year later
    assert channel.idle_offset_ == 365 * DAY - 30 * DAY
    # the year counts as one half-life: the fitted scores halve (a refit would make them ~2 ** -12)
    np.testing.assert_allclose(channel.scores_[:2], before[:2] / 2, rtol=1e-4)
    assert channel.scores_[2] == pytest.approx(before[2] / 2 + 2, rel=1e-4)
    assert channel.order_.tolist() == [2, 1, 0]
    # later events decay the earlier ones as usual from there on
    channel.update(np.array([0]), np.array([year + 30 * DAY]))
    assert channel.scores_[2] == pytest.approx((before[2] / 2 + 2) / 2, rel=1e-3)
