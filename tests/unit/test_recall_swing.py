"""SwingRetriever: conformance, a brute-force reference and the property that sets it apart."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from recfunnel.data.dataset import TrainingData, build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.recall import swing as swing_module
from recfunnel.stages.recall.itemcf import ItemCFConfig, ItemCFRetriever
from recfunnel.stages.recall.swing import SwingConfig, SwingRetriever
from recfunnel.testing.conformance import RetrieverConformance


class TestSwingConformance(RetrieverConformance):
    def make_retriever(self) -> SwingRetriever:
        return SwingRetriever(SwingConfig(neighbours=20))


class TestSwingTimeCappedConformance(RetrieverConformance):
    def make_retriever(self) -> SwingRetriever:
        return SwingRetriever(SwingConfig(recency="time", neighbours=5, normalize=False,
                                          max_user_items=4, max_item_users=6))


def _data(user_items: dict[str, list[str]]) -> TrainingData:
    """One event per (user, item), in list order (later = newer)."""
    rows = [(u, i, t) for u, items in user_items.items() for t, i in enumerate(items)]
    return build_training_data(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def _similarity(data: TrainingData, **options) -> np.ndarray:
    config = SwingConfig(**{"normalize": False, "neighbours": 1000, "max_user_items": None,
                            "max_item_users": None, **options})
    return SwingRetriever(config).fit(data).similarity_.toarray().astype(np.float64)


def swing_reference(data: TrainingData, alpha: float = 1.0, user_alpha: float = 5.0,
                    user_beta: float = 0.3) -> np.ndarray:
    """Swing by its definition, with plain loops (Yang et al. 2020, eq. 1)."""
    inter = data.interactions
    items_of: dict[int, set[int]] = {}
    for u, i in zip(inter.user_index.tolist(), inter.item_index.tolist(), strict=True):
        items_of.setdefault(u, set()).add(i)
    weight = {u: (len(items) + user_alpha) ** -user_beta for u, items in items_of.items()}
    sim = np.zeros((data.n_items, data.n_items))
    for i, j in itertools.permutations(range(data.n_items), 2):
        both = [u for u, items in items_of.items() if i in items and j in items]
        for u, v in itertools.permutations(both, 2):
            sim[i, j] += weight[u] * weight[v] / (alpha + len(items_of[u] & items_of[v]))
    return sim


# u1 {a, b, c}, u2 {a, b}, u3 {b, c}: overlaps c12 = 2, c13 = 2, c23 = 1
THREE_USERS = {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["b", "c"]}


def test_three_users_by_hand() -> None:
    w1, w23 = (3 + 5) ** -0.3, (2 + 5) ** -0.3
    ab = 2 * w1 * w23 / (1 + 2)  # u1 and u2 (and back), who share 2 items
    bc = 2 * w1 * w23 / (1 + 2)  # u1 and u3
    expected = np.array([[0, ab, 0], [ab, 0, bc], [0, bc, 0]])  # a-c: only u1 has both
    sim = _similarity(_data(THREE_USERS))
    np.testing.assert_allclose(sim, expected, rtol=1e-6)
    np.testing.assert_allclose(sim, swing_reference(_data(THREE_USERS)), rtol=1e-6)


@pytest.mark.parametrize("alpha,user_alpha,user_beta", [(1.0, 5.0, 0.3), (0.5, 0.0, 1.0), (2.0, 1.0, 0.0)])
def test_matches_the_brute_force_reference(alpha: float, user_alpha: float, user_beta: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.random((14, 9)) < 0.45
    users, items = np.nonzero(x)
    data = build_training_data(pd.DataFrame({
        "user_id": [f"u{u:02d}" for u in users], "item_id": [f"i{i:02d}" for i in items],
        "timestamp": np.arange(len(users)),
    }))
    sim = _similarity(data, alpha=alpha, user_alpha=user_alpha, user_beta=user_beta)
    expected = swing_reference(data, alpha, user_alpha, user_beta)
    assert (expected > 0).sum() > 20  # a non-trivial case
    np.testing.assert_allclose(sim, expected, rtol=1e-5)


def test_overlapping_users_count_less_than_independent_ones() -> None:
    # (a, b) and (c, d) are each co-consumed by two users, all four users with 7 items;
    # u1 and u2 also share x1..x5, u3 and u4 share nothing else
    data = _data({
        "u1": ["a", "b"] + [f"x{i}" for i in range(5)],
        "u2": ["a", "b"] + [f"x{i}" for i in range(5)],
        "u3": ["c", "d"] + [f"y{i}" for i in range(5)],
        "u4": ["c", "d"] + [f"z{i}" for i in range(5)],
    })
    a, b, c, d = data.item_ids.index(["a", "b", "c", "d"])
    itemcf = ItemCFRetriever(ItemCFConfig(normalize=False, neighbours=1000)).fit(data).similarity_.toarray()
    assert itemcf[a, b] == pytest.approx(itemcf[c, d])  # co-occurrence cannot tell them apart
    sim = _similarity(data)
    assert sim[c, d] > sim[a, b] > 0
    w = (7 + 5) ** -0.3
    assert sim[a, b] == pytest.approx(2 * w * w / (1 + 7), rel=1e-6)
    assert sim[c, d] == pytest.approx(2 * w * w / (1 + 2), rel=1e-6)


def test_blocking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = rng.random((30, 12)) < 0.4
    users, items = np.nonzero(x)
    data = build_training_data(pd.DataFrame({
        "user_id": [f"u{u:02d}" for u in users], "item_id": [f"i{i:02d}" for i in items],
        "timestamp": np.zeros(len(users), np.int64),
    }))
    whole = _similarity(data, neighbours=4)
    monkeypatch.setattr(swing_module, "_BLOCK_TRIPLES", 7)
    monkeypatch.setattr(swing_module, "_BLOCK_PRODUCTS", 5)
    np.testing.assert_allclose(_similarity(data, neighbours=4), whole, rtol=1e-6)
    assert ((whole > 0).sum(axis=1) <= 4).all()


def test_caps_keep_the_most_recent_edges() -> None:
    # item "a" has users u1..u4 in this time order; with max_item_users=2 only u3, u4 count
    events = [("u1", "a", 0), ("u1", "b", 1), ("u2", "a", 2), ("u2", "b", 3),
              ("u3", "a", 4), ("u3", "c", 5), ("u4", "a", 6), ("u4", "c", 7)]
    data = build_training_data(pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"]))
    a, b, c = data.item_ids.index(["a", "b", "c"])
    full = _similarity(data)
    assert full[a, b] > 0 and full[a, c] > 0
    capped = _similarity(data, max_item_users=2)
    assert capped[a, b] == 0 and capped[a, c] == pytest.approx(full[a, c])
    # a user's cap keeps their newest items: u5 takes x, then the a-c pair twice over with u6
    more = _data({"u5": ["x", "a", "c"], "u6": ["x", "a", "c"]})
    a, c, x = more.item_ids.index(["a", "c", "x"])
    capped = _similarity(more, max_user_items=2)
    assert capped[a, x] == 0 and capped[a, c] > 0


def test_rows_are_normalised_to_max_one() -> None:
    sim = SwingRetriever().fit(_data(THREE_USERS)).similarity_.toarray()
    has = sim.max(axis=1) > 0
    np.testing.assert_allclose(sim.max(axis=1)[has], 1.0)


@pytest.mark.parametrize("options", [
    {"neighbours": 0}, {"alpha": 0.0}, {"user_beta": -1.0}, {"max_item_users": 1},
    {"max_user_items": 0}, {"recency": "exp"}, {"half_life_days": 0.0},
])
def test_rejects_bad_config(options: dict) -> None:
    with pytest.raises(ConfigError):
        SwingRetriever(SwingConfig(**options)).fit(_data(THREE_USERS))
