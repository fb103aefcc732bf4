"""ItemCFRetriever: conformance and the properties of its similarity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData, build_training_data
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


def _power_law_data(seed: int, n_users: int = 300, n_items: int = 120) -> TrainingData:
    # popular and rare items, many users with one or two items: plenty of exact ties
    rng = np.random.default_rng(seed)
    x = rng.random((n_users, n_items)) < 0.05 * rng.pareto(1.5, size=n_items)[None, :]
    users, items = np.nonzero(x)
    return build_training_data(pd.DataFrame({
        "user_id": [f"u{u:03d}" for u in users], "item_id": [f"i{i:03d}" for i in items],
        "timestamp": np.zeros(len(users), np.int64),
    }))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("options", [
    {"neighbours": 3}, {"neighbours": 10, "user_activity_penalty": False},
    {"neighbours": 40, "normalize": False}, {"neighbours": 500},
])
def test_kernel_path_equals_the_scipy_path(seed: int, options: dict) -> None:
    data = _power_law_data(seed)
    kernel = ItemCFRetriever(ItemCFConfig(**options)).fit(data)
    scipy_path = ItemCFRetriever(ItemCFConfig(use_kernel=False, **options)).fit(data)
    assert kernel.fit_path_ == "kernel" and scipy_path.fit_path_ == "scipy"
    a, b = kernel.similarity_, scipy_path.similarity_
    np.testing.assert_array_equal(a.indptr, b.indptr)  # the same neighbours ...
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-6)  # ... with the same scores


def test_kernel_ties_past_its_cut_are_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    import recfunnel.stages.recall.itemcf as itemcf_module

    # no margin: the kernel returns neighbours + 1 entries, so ties at the cut reach past it
    monkeypatch.setattr(itemcf_module, "_KERNEL_MIN_MARGIN", 0)
    data = _data({f"u{u}": ["hub", f"x{u}"] for u in range(8)})  # hub's 8 neighbours all tie
    kernel = ItemCFRetriever(ItemCFConfig(neighbours=3, user_activity_penalty=False)).fit(data)
    assert kernel.fit_path_ == "kernel" and kernel.kernel_recomputed_rows_ >= 1
    hub = int(data.item_ids.index(["hub"])[0])
    expected = data.item_ids.index(["x0", "x1", "x2"])  # the lower columns win the tie
    assert sorted(kernel.similarity_[hub].indices.tolist()) == sorted(expected.tolist())
    reference = ItemCFRetriever(ItemCFConfig(neighbours=3, user_activity_penalty=False, use_kernel=False)).fit(data)
    assert (kernel.similarity_ != reference.similarity_).nnz == 0


@pytest.mark.parametrize("options", [{"similarity": "jaccard"}, {"min_cooccurrence": 2}])
def test_options_the_kernel_cannot_express_take_the_scipy_path(options: dict) -> None:
    assert ItemCFRetriever(ItemCFConfig(**options)).fit(_data(THREE_ITEMS)).fit_path_ == "scipy"


def test_kernel_path_in_blocks_with_items_nobody_took(monkeypatch: pytest.MonkeyPatch) -> None:
    import recfunnel.stages.recall.itemcf as itemcf_module

    monkeypatch.setattr(itemcf_module, "_KERNEL_BLOCK_CELLS", 64)  # several row blocks
    base = _power_law_data(3)
    interactions = pd.DataFrame({
        "user_id": base.user_ids.to_ids(base.interactions.user_index),
        "item_id": base.item_ids.to_ids(base.interactions.item_index),
        "timestamp": base.interactions.timestamp,
    })
    # catalogue items without any interaction, sorted between the others: the kernel skips them
    catalogue = pd.DataFrame(index=pd.Index([*base.item_ids.ids, "i000a", "i050a", "zzz"], name="item_id"))
    data = build_training_data(interactions, items=catalogue)
    kernel = ItemCFRetriever(ItemCFConfig(neighbours=7)).fit(data)
    reference = ItemCFRetriever(ItemCFConfig(neighbours=7, use_kernel=False)).fit(data)
    assert kernel.fit_path_ == "kernel"
    assert (kernel.similarity_ != reference.similarity_).nnz == 0
    empty = data.item_ids.index(["i000a", "i050a", "zzz"])
    assert kernel.similarity_[empty].nnz == 0 and kernel.similarity_[:, empty].nnz == 0


# --------------------------------------------------------------------------- nearline
def _events(users, items, time: int = 10 * DAY):
    from recfunnel.stages.base import EventBatch

    n = len(users)
    return EventBatch(np.asarray(users), np.asarray(items), np.full(n, time), np.ones(n, bool), np.ones(n))


def _new_items(items):
    from recfunnel.stages.base import NewItems

    return NewItems(np.asarray(items), np.zeros(len(items), np.int64), pd.DataFrame(index=range(len(items))))


def test_a_new_item_becomes_a_neighbour_through_events_without_refit() -> None:
    from recfunnel.testing.synthetic import make_request

    data = make_planted_data()  # users 0..19 take items 0..14, users 20..39 items 15..29
    itemcf = ItemCFRetriever(ItemCFConfig(neighbours=20)).fit(data)
    new = data.n_items
    assert itemcf.publish(_new_items([new]))
    itemcf.observe(_events(np.arange(1, 8), np.full(7, new)))  # group 0 users click it
    neighbours = itemcf.similarity_[new].indices
    assert len(neighbours) and (neighbours < 15).all()  # its neighbours are group 0 items ...
    assert (itemcf.similarity_[:, new].nonzero()[0] < 15).any()  # ... and it is theirs
    out = itemcf.retrieve(make_request(data, np.array([0]), history_length=5), k=30)
    assert new in set(out.item_index[0][out.valid[0]].tolist())


def _random_log(seed: int, n_users: int = 30, n_items: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.3)
    return pd.DataFrame({"user_id": [f"u{u:02d}" for u in users], "item_id": [f"i{i:02d}" for i in items],
                         "timestamp": np.zeros(len(users), np.int64)})


@pytest.mark.parametrize("options", [
    {}, {"use_kernel": False}, {"neighbours": 3}, {"user_activity_penalty": False, "normalize": False},
    {"similarity": "jaccard", "neighbours": 4}, {"min_cooccurrence": 2, "neighbours": 4},
])
def test_observed_events_give_the_similarity_of_a_refit(options: dict) -> None:
    train = _random_log(0)
    data = build_training_data(train)
    itemcf = ItemCFRetriever(ItemCFConfig(**options)).fit(data)
    rng = np.random.default_rng(1)
    # two batches: known users take a new item ("zz", the last index) and existing items they lacked
    users = rng.integers(0, data.n_users, 14)
    items = np.r_[np.full(6, data.n_items), rng.integers(0, data.n_items, 8)]
    itemcf.publish(_new_items([data.n_items]))
    itemcf.observe(_events(users[:7], items[:7]))
    itemcf.observe(_events(users[7:], items[7:]))
    extra = pd.DataFrame({"user_id": [data.user_ids.ids[u] for u in users],
                          "item_id": ["zz" if i == data.n_items else data.item_ids.ids[i] for i in items],
                          "timestamp": np.ones(len(users), np.int64)})
    refit = ItemCFRetriever(ItemCFConfig(**{**options, "use_kernel": False})).fit(
        build_training_data(pd.concat([train, extra])))
    got, want = itemcf.similarity_, refit.similarity_
    assert got.shape == want.shape
    for row in range(want.shape[0]):  # tiny: compare every neighbour list
        assert got[row].indices.tolist() == want[row].indices.tolist(), row
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-6)


def test_events_of_unknown_users_and_impressions_change_nothing() -> None:
    from recfunnel.stages.base import EventBatch

    data = make_planted_data()
    itemcf = ItemCFRetriever(ItemCFConfig(neighbours=20)).fit(data)
    before = itemcf.similarity_.copy()
    itemcf.observe(EventBatch(np.array([-1, 3]), np.array([20, 20]), np.zeros(2), np.array([True, False]),
                              np.ones(2)))
    assert (itemcf.similarity_ != before).nnz == 0


def test_save_writes_the_fitted_state_not_the_nearline_updates(tmp_path) -> None:
    from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter

    data = make_planted_data()
    itemcf = ItemCFRetriever(ItemCFConfig(neighbours=20)).fit(data)
    fitted = itemcf.similarity_.copy()
    itemcf.publish(_new_items([data.n_items]))
    itemcf.observe(_events(np.arange(5), np.full(5, data.n_items)))
    with ArtifactWriter(tmp_path / "m", kind="itemcf") as writer:
        itemcf.save(writer, "c/")
    loaded = ItemCFRetriever.load(ArtifactReader(tmp_path / "m"), "c/", itemcf.config)
    assert loaded.similarity_.shape == fitted.shape and (loaded.similarity_ != fitted).nnz == 0
    assert loaded.user_items_.shape == (data.n_users, data.n_items)
    # the loaded model replays the same events to the same state
    loaded.publish(_new_items([data.n_items]))
    loaded.observe(_events(np.arange(5), np.full(5, data.n_items)))
    assert (loaded.similarity_ != itemcf.similarity_).nnz == 0


def test_a_model_saved_before_the_user_rows_were_kept_takes_events_without_error(tmp_path, monkeypatch) -> None:
    """Models fitted before X was saved (the tour's, served after an upgrade) answered POST /events with 500."""
    from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter

    data = make_planted_data()
    itemcf = ItemCFRetriever(ItemCFConfig(neighbours=20)).fit(data)
    with ArtifactWriter(tmp_path / "m", kind="itemcf") as writer:
        itemcf.save(writer, "c/")
    has = ArtifactReader.has
    monkeypatch.setattr(ArtifactReader, "has", lambda self, name: not name.endswith("itemcf_users.npz")
                        and has(self, name))
    old = ItemCFRetriever.load(ArtifactReader(tmp_path / "m"), "c/", itemcf.config)
    assert old.user_items_.shape == (0, data.n_items)
    before = old.similarity_.copy()
    old.observe(_events(np.arange(5), np.array([0, 1, 2, 3, 4])))  # known users, known items
    old.publish(_new_items([data.n_items]))
    old.observe(_events(np.arange(5), np.full(5, data.n_items)))
    assert (old.similarity_[:data.n_items, :data.n_items] != before).nnz == 0  # nothing to count them against
