"""ItemCFRetriever: conformance and the properties of its similarity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.recall.itemcf import ItemCFConfig, ItemCFRetriever
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data
from recfunnel.types import RequestBatch

DAY = 86_400


class TestItemCFConformance(RetrieverConformance):
    def make_retriever(self) -> ItemCFRetriever:
        return ItemCFRetriever(ItemCFConfig(neighbours=20))


class TestItemCFJaccardTimeConformance(RetrieverConformance):
    def make_retriever(self) -> ItemCFRetriever:
        return ItemCFRetriever(ItemCFConfig(similarity="jaccard", recency="time", neighbours=5, normalize=False))


def _data(user_items: dict[str, list[str]]):
    rows = [(u, i, t) for u, items in user_items.items() for t, i in enumerate(items)]
    return build_training_data(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def _similarity(data, **options) -> np.ndarray:
    config = ItemCFConfig(**{"user_activity_penalty": False, "normalize": False, **options})
    return ItemCFRetriever(config).fit(data).similarity_.toarray()


# items a, b, c: u1 {a, b}, u2 {a, b, c}, u3 {b, c} -> n = (2, 3, 2), c_ab = 2, c_ac = 1, c_bc = 2
THREE_ITEMS = {"u1": ["a", "b"], "u2": ["a", "b", "c"], "u3": ["b", "c"]}


def test_cosine_by_hand() -> None:
    expected = np.array([
        [0, 2 / np.sqrt(6), 1 / 2],
        [2 / np.sqrt(6), 0, 2 / np.sqrt(6)],
        [1 / 2, 2 / np.sqrt(6), 0],
    ])
    np.testing.assert_allclose(_similarity(_data(THREE_ITEMS)), expected, rtol=1e-6)


def test_jaccard_by_hand() -> None:
    expected = np.array([[0, 2 / 3, 1 / 3], [2 / 3, 0, 2 / 3], [1 / 3, 2 / 3, 0]])
    np.testing.assert_allclose(_similarity(_data(THREE_ITEMS), similarity="jaccard"), expected, rtol=1e-6)
    # the IUF weights change the co-occurrence, never the union
    weighted = _similarity(_data(THREE_ITEMS), similarity="jaccard", user_activity_penalty=True)
    c_ac = 1 / np.log(4)  # only u2 (3 items) has both a and c
    np.testing.assert_allclose(weighted[0, 2], c_ac / (2 + 2 - 1), rtol=1e-6)


def test_min_cooccurrence_drops_rare_pairs() -> None:
    sim = _similarity(_data(THREE_ITEMS), min_cooccurrence=2, user_activity_penalty=True)
    assert sim[0, 2] == 0 and sim[0, 1] > 0


def test_user_activity_penalty_lowers_a_heavy_user() -> None:
    # a-b co-occur for a light user (2 items), a-c for a heavy one (10 items)
    data = _data({"light": ["a", "b"], "heavy": ["a", "c"] + [f"x{i}" for i in range(8)]})
    a, b, c = data.item_ids.index(["a", "b", "c"])
    plain = _similarity(data)
    assert plain[a, b] == pytest.approx(plain[a, c])
    penalised = _similarity(data, user_activity_penalty=True)
    assert penalised[a, b] > penalised[a, c]
    assert penalised[a, c] == pytest.approx(1 / np.log(11) / np.sqrt(2), rel=1e-6)
    assert penalised[a, b] == pytest.approx(1 / np.log(3) / np.sqrt(2), rel=1e-6)


def test_neighbour_pruning_keeps_exactly_the_top_n() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((60, 25)) < 0.3
    users, items = np.nonzero(x)
    data = build_training_data(pd.DataFrame({
        "user_id": [f"u{u:03d}" for u in users], "item_id": [f"i{i:03d}" for i in items],
        "timestamp": np.zeros(len(users), np.int64),
    }))
    full = _similarity(data, neighbours=1000)
    counts = x.T.astype(float) @ x.astype(float)
    brute = counts / np.sqrt(np.outer(x.sum(0), x.sum(0)))
    np.fill_diagonal(brute, 0)
    np.testing.assert_allclose(full, brute, rtol=1e-5)

    pruned = _similarity(data, neighbours=4)
    assert ((pruned > 0).sum(axis=1) == 4).all()
    for row in range(full.shape[0]):  # brute-force reference, tiny
        expected = sorted(range(full.shape[1]), key=lambda j: (-full[row, j], j))[:4]
        assert sorted(np.flatnonzero(pruned[row])) == sorted(expected)
        np.testing.assert_allclose(pruned[row, expected], full[row, expected])


def test_normalize_scales_rows_to_max_one() -> None:
    sim = ItemCFRetriever(ItemCFConfig(normalize=True)).fit(_data(THREE_ITEMS)).similarity_.toarray()
    np.testing.assert_allclose(sim.max(axis=1), 1.0)


def _recency_request(history_time: list[int], time: int) -> RequestBatch:
    # history: x (newest) then y; x's only neighbour is p, y's only neighbour is q
    return RequestBatch(
        np.array([0]), np.array([time]), np.array([[0, 1]]), np.array([history_time]),
        sp.csr_matrix((1, 4)),
    )


@pytest.mark.parametrize("recency", ["position", "time", "none"])
def test_recency_favours_the_newest_history_item(recency: str) -> None:
    # item indices by id order: 0 = "0x", 1 = "1y", 2 = "2q", 3 = "3p"; q has the lower index so a
    # tie goes to q: only recency can put p first
    data = _data({"u1": ["0x", "3p"], "u2": ["1y", "2q"]})
    itemcf = ItemCFRetriever(ItemCFConfig(recency=recency, half_life_days=1.0)).fit(data)
    out = itemcf.retrieve(_recency_request([10 * DAY, 8 * DAY], 10 * DAY), k=2)
    if recency == "none":
        assert out.item_index.tolist() == [[2, 3]]
        assert out.score[0, 0] == out.score[0, 1]
    else:
        assert out.item_index.tolist() == [[3, 2]]
        assert out.score[0, 0] > out.score[0, 1]
    if recency == "time":
        np.testing.assert_allclose(out.score[0], [1.0, 0.25])


def test_uses_the_request_history_not_the_training_matrix() -> None:
    data = make_planted_data()
    itemcf = ItemCFRetriever(ItemCFConfig(neighbours=20)).fit(data)
    # user 0 (group 0) with a fresh online history of group-1 items gets group-1 items
    request = RequestBatch(np.array([0]), np.array([0]), np.array([[20, 21]]), np.zeros((1, 2), np.int64),
                           sp.csr_matrix((1, data.n_items)))
    out = itemcf.retrieve(request, k=5)
    assert (out.item_index[out.valid] >= 15).all() and out.valid.any()


def test_history_items_outside_the_catalogue_are_ignored() -> None:
    itemcf = ItemCFRetriever().fit(_data(THREE_ITEMS))
    request = RequestBatch(np.array([0]), np.array([0]), np.array([[99, 0]]), np.zeros((1, 2), np.int64),
                           sp.csr_matrix((1, 3)))
    assert set(itemcf.retrieve(request, k=5).item_index[0].tolist()) == {1, 2}


def test_rejects_bad_config() -> None:
    with pytest.raises(ConfigError):
        ItemCFRetriever(ItemCFConfig(neighbours=0)).fit(_data(THREE_ITEMS))
    with pytest.raises(ConfigError):
        ItemCFRetriever(ItemCFConfig(similarity="pearson")).fit(_data(THREE_ITEMS))
