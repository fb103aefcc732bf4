"""LookalikeRetriever: conformance, the running mean, spreading to look-alike users, the pool."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.data.dataset import TrainingData, build_training_data
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.recall.lookalike import LookalikeConfig, LookalikeRetriever
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups
from recfunnel.types import RequestBatch

DAY = 86_400
HOUR = 3_600


def planted_with_content(new_items_per_group: int = 0, dim: int = 8, noise: float = 0.3,
                         seed: int = 0) -> TrainingData:
    """The planted groups with group-dependent ``content_*`` vectors, plus items nobody touched.

    New items (indices 30..) have no interactions and ``publish_time`` at the newest event;
    the others have no publish time (their first interaction stands in).
    """
    base = make_planted_data()
    _, item_group = planted_groups(base)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, dim))
    groups = np.r_[item_group, np.repeat([0, 1], new_items_per_group)]
    content = centres[groups] + noise * rng.standard_normal((len(groups), dim))
    publish = np.full(len(groups), np.nan)
    publish[len(item_group):] = base.interactions.timestamp.max()
    items = pd.DataFrame(
        {"category": [f"g{g}" for g in groups], "publish_time": publish,
         **{f"content_{j}": content[:, j].astype(np.float32) for j in range(dim)}},
        index=pd.Index([f"i{i:05d}" for i in range(len(groups))], name="item_id"),
    )
    return build_training_data(base.raw[["user_id", "item_id", "timestamp"]], items=items)


class TestLookalikeSVDConformance(RetrieverConformance):
    """Planted data without content: SVD item vectors; every item is in the pool."""

    def make_retriever(self) -> LookalikeRetriever:
        return LookalikeRetriever(LookalikeConfig(max_item_age_days=None))


class TestLookalikeContentConformance(RetrieverConformance):
    def make_retriever(self) -> LookalikeRetriever:
        return LookalikeRetriever(LookalikeConfig(max_item_age_days=None, recency="time"))

    def make_data(self) -> TrainingData:
        return planted_with_content()


class TestLookalikeFaissConformance(RetrieverConformance):
    """The faiss path (every pool is "large")."""

    def make_retriever(self) -> LookalikeRetriever:
        return LookalikeRetriever(LookalikeConfig(max_item_age_days=None, exact_pool_size=0))

    def make_data(self) -> TrainingData:
        return planted_with_content()


@cache
def _content_data() -> TrainingData:
    return planted_with_content(new_items_per_group=2)


def _fitted(**options) -> LookalikeRetriever:
    return LookalikeRetriever(LookalikeConfig(**options)).fit(_content_data())


def _request(data: TrainingData, users: np.ndarray, time: int | None = None) -> RequestBatch:
    return make_request(data, users, 5, time=time)


def test_item_vectors_follow_the_source() -> None:
    data = _content_data()
    assert _fitted().item_vector_source_ == "content"
    svd = _fitted(item_vectors="svd", svd_dims=4)
    assert svd.item_vector_source_ == "svd" and svd.item_vectors_.shape == (data.n_items, 4)
    # items nobody touched have no SVD vector; the others are unit length
    np.testing.assert_allclose(np.linalg.norm(svd.item_vectors_[:30], axis=1), 1.0, rtol=1e-5)
    assert not svd.item_vectors_[30:].any()
    with pytest.raises(DataError, match="content"):
        LookalikeRetriever(LookalikeConfig(item_vectors="content")).fit(make_planted_data())


@cache
def _running_model() -> LookalikeRetriever:
    """One fitted model that the property test keeps updating (it checks each step against
    the state before it, so earlier examples do not matter)."""
    return _fitted(max_item_age_days=None)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2 ** 31 - 1)), min_size=1, max_size=30))
def test_running_mean_equals_batch_mean(events: list[tuple[int, int]]) -> None:
    lookalike = _running_model()
    dim = lookalike.item_vectors_.shape[1]
    n_items = _content_data().n_items
    # items 0 and 1 hold training events; n_items and n_items + 5 are new to the model
    candidates = np.array([0, 1, n_items, n_items + 5])
    before_items, before_means, before_counts = lookalike.lookalike_vectors()
    vectors = {}
    for choice, seed in events:  # one event at a time, as the nearline consumer does
        vector = np.random.default_rng(seed).standard_normal(dim)
        lookalike.update(candidates[choice], vector)
        vectors.setdefault(candidates[choice], []).append(vector)
    items, means, counts = lookalike.lookalike_vectors()
    slot = {item: s for s, item in enumerate(items)}
    old_slot = {item: s for s, item in enumerate(before_items)}
    for item, added in vectors.items():
        n_before = before_counts[old_slot[item]] if item in old_slot else 0
        sum_before = before_means[old_slot[item]] * n_before if item in old_slot else np.zeros(dim)
        expected = (sum_before + np.sum(added, axis=0)) / (n_before + len(added))
        assert counts[slot[item]] == n_before + len(added)
        np.testing.assert_allclose(means[slot[item]], expected, rtol=1e-9, atol=1e-12)


def test_fit_replays_point_in_time_user_vectors() -> None:
    data = _content_data()
    lookalike = _fitted(max_item_age_days=None, history_length=5)
    inter = data.interactions
    items, means, counts = lookalike.lookalike_vectors()
    for item in (0, 7, 16):  # brute force over the item's events (tiny)
        events = np.flatnonzero(inter.item_index == item)
        users = inter.user_index[events]
        vectors = np.stack([
            lookalike.user_vectors(_request(data, users[e:e + 1], int(inter.timestamp[events[e]])))[0]
            for e in range(len(events))
        ])
        vectors = vectors[np.abs(vectors).sum(axis=1) > 0]  # users with no earlier history are skipped
        slot = np.flatnonzero(items == item)[0]
        assert counts[slot] == len(vectors)
        np.testing.assert_allclose(means[slot], vectors.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_one_interaction_spreads_to_look_alike_users() -> None:
    """A new item one group-0 user took reaches other group-0 users, never group-1 users."""
    data = _content_data()
    user_group, item_group = planted_groups(data)
    t_end = int(data.interactions.timestamp.max())
    lookalike = _fitted(max_item_age_days=2.0)
    new_item = 33  # published at t_end, content of group 1, nobody took it in training
    assert item_group[new_item] == 1 and new_item not in lookalike.pool_items_[:lookalike.pool_size_]
    users = np.arange(40)
    request = _request(data, users, t_end + 2 * HOUR)
    assert not np.isin(lookalike.retrieve(request, k=10).item_index, new_item).any()

    seed_user = np.array([0])
    lookalike.update(new_item, lookalike.user_vectors(_request(data, seed_user, t_end + HOUR))[0], time=t_end + HOUR)
    out = lookalike.retrieve(request, k=10)
    got = np.isin(out.item_index, new_item).any(axis=1)
    others = users != seed_user[0]
    assert got[others & (user_group[users] == 0)].all()
    assert not got[user_group[users] == 1].any()


def test_pool_membership() -> None:
    data = _content_data()
    t_end = int(data.interactions.timestamp.max())
    inter = data.interactions
    counts = np.bincount(inter.item_index, minlength=data.n_items)
    first = pd.Series(inter.timestamp).groupby(inter.item_index).min().reindex(range(data.n_items)).to_numpy()

    def pool(**options) -> set[int]:
        lookalike = _fitted(**options)
        return set(lookalike.pool_items_[:lookalike.pool_size_].tolist())

    young = set(np.flatnonzero(t_end - first <= 10 * DAY).tolist())
    assert young and pool(max_item_age_days=10.0) <= young
    assert pool(max_item_age_days=None, max_interactions=12) <= set(np.flatnonzero(counts <= 12).tolist())
    # min_interactions: items with fewer counted events are kept in the pool but never retrieved
    lookalike = _fitted(max_item_age_days=None, min_interactions=8)
    out = lookalike.retrieve(_request(data, np.arange(40)), k=30)
    items, _, counted = lookalike.lookalike_vectors()
    assert set(np.unique(out.item_index[out.valid])) <= set(items[counted >= 8].tolist())
    assert (counted < 8).any() and out.valid.any()


def test_time_filters_and_prune() -> None:
    data = _content_data()
    t_end = int(data.interactions.timestamp.max())
    lookalike = _fitted(max_item_age_days=3.0)
    fresh = data.n_items + 2  # an item new to the model, first event a day after training
    vector = lookalike.user_vectors(_request(data, np.array([1])))[0]
    lookalike.update(fresh, vector, time=t_end + DAY)
    assert lookalike.item_time_[fresh] == t_end + DAY
    group0 = np.arange(2, 20)
    before = lookalike.retrieve(_request(data, group0, t_end + DAY - 1), k=10)
    after = lookalike.retrieve(_request(data, group0, t_end + DAY + 1), k=10)
    assert not (before.item_index == fresh).any()
    assert (after.item_index == fresh).any(axis=1).all()
    late = lookalike.retrieve(_request(data, group0, t_end + 5 * DAY), k=10)
    age = t_end + 5 * DAY - lookalike.item_time_[np.maximum(late.item_index, 0)]
    assert (age[late.valid] <= 3 * DAY).all()
    # prune: the first fresh item is too old at t_end + 4.5 days, a second one is not
    fresh_b = fresh + 1
    lookalike.update(fresh_b, vector, time=t_end + 4 * DAY)
    now = t_end + 4 * DAY + 12 * HOUR
    kept_before = lookalike.retrieve(_request(data, group0, now), k=10)
    assert (kept_before.item_index == fresh_b).any(axis=1).all()
    size = lookalike.pool_size_
    assert lookalike.prune(now) == 1 and lookalike.pool_size_ == size - 1
    assert lookalike.slot_of_item_[fresh] == -1 and lookalike.slot_of_item_[fresh_b] >= 0
    after_prune = lookalike.retrieve(_request(data, group0, now), k=10)
    np.testing.assert_array_equal(after_prune.item_index, kept_before.item_index)
    np.testing.assert_allclose(after_prune.score, kept_before.score, rtol=1e-6)  # BLAS blocking differs


def test_faiss_path_matches_numpy() -> None:
    data = _content_data()
    users = np.arange(40)
    rng = np.random.default_rng(0)
    extra = sp.csr_matrix((rng.random((40, data.n_items)) < 0.2).astype(np.float32))
    base = _request(data, users, int(data.interactions.timestamp.max()) - 5 * DAY)
    request = RequestBatch(base.user_index, base.time, base.history, base.history_time,
                           ((base.exclude + extra) > 0).astype(np.float32).tocsr())
    exact = _fitted(max_item_age_days=20.0).retrieve(request, k=4)
    approx = _fitted(max_item_age_days=20.0, exact_pool_size=0).retrieve(request, k=4)
    np.testing.assert_allclose(approx.score, exact.score, rtol=1e-5)
    same = np.isclose(exact.score[:, :, None], exact.score[:, None, :], rtol=1e-6).sum(axis=2) == 1
    np.testing.assert_array_equal(approx.item_index[same], exact.item_index[same])  # ties may swap


def test_save_load_keeps_online_updates(tmp_path) -> None:
    data = _content_data()
    lookalike = _fitted(max_item_age_days=5.0)
    t_end = int(data.interactions.timestamp.max())
    vectors = lookalike.user_vectors(_request(data, np.array([3, 25])))
    lookalike.update(np.array([30, data.n_items + 1]), vectors, time=t_end + HOUR)
    with ArtifactWriter(tmp_path / "m", kind="lookalike") as writer:
        lookalike.save(writer, "l/")
    loaded = LookalikeRetriever.load(ArtifactReader(tmp_path / "m"), "l/", lookalike.config)
    request = _request(data, np.arange(40), t_end + 2 * HOUR)
    a, b = lookalike.retrieve(request, 10), loaded.retrieve(request, 10)
    np.testing.assert_array_equal(a.item_index, b.item_index)
    np.testing.assert_array_equal(a.score, b.score)
    assert (a.item_index == data.n_items + 1).any()
    # the loaded model keeps learning
    loaded.update(30, vectors[0])
    assert loaded.lookalike_vectors()[2][loaded.slot_of_item_[30]] == 2


def test_shrinkage_scales_the_mean() -> None:
    data = _content_data()
    request = _request(data, np.arange(5))
    plain = _fitted(max_item_age_days=None, shrinkage=0.0)
    shrunk = _fitted(max_item_age_days=None, shrinkage=2.0)
    a, b = plain.retrieve(request, 30), shrunk.retrieve(request, 30)
    items, _, counts = plain.lookalike_vectors()
    n = dict(zip(items.tolist(), counts.tolist(), strict=True))
    # same item set; each score divided by (n + 2) / n
    expected = {(r, i): s * n[i] / (n[i] + 2) for r, (row, srow) in enumerate(zip(a.item_index, a.score, strict=True))
                for i, s in zip(row, srow, strict=True) if i >= 0}
    got = {(r, i): s for r, (row, srow) in enumerate(zip(b.item_index, b.score, strict=True))
           for i, s in zip(row, srow, strict=True) if i >= 0}
    assert expected.keys() == got.keys()
    np.testing.assert_allclose([got[key] for key in expected], list(expected.values()), rtol=1e-5)


@pytest.mark.parametrize("options", [
    {"item_vectors": "bert"}, {"recency": "linear"}, {"svd_dims": 0}, {"min_interactions": 0},
    {"min_interactions": 3, "max_interactions": 2}, {"max_item_age_days": 0.0}, {"shrinkage": -1.0},
    {"half_life_days": 0.0},
])
def test_invalid_configs_are_refused(options: dict) -> None:
    with pytest.raises(ConfigError):
        LookalikeRetriever(LookalikeConfig(**options)).fit(make_planted_data(n_users_per_group=2, items_per_group=4))


def test_sparse_svd_matches_the_dense_one() -> None:
    from recfunnel.stages.recall.lookalike import _svd_item_vectors

    rng = np.random.default_rng(0)
    # two blocks with different strengths, so the top singular values are distinct
    x = np.zeros((60, 80))
    x[:30, :40] = rng.random((30, 40)) < 0.5
    x[30:, 40:] = rng.random((30, 40)) < 0.2
    sparse = _svd_item_vectors(sp.csr_matrix(x), dims=2, seed=0)  # ARPACK: 60 > dims + 1
    _, sigma, vt = np.linalg.svd(x, full_matrices=False)
    dense = vt[:2].T * np.sqrt(sigma[:2])
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(sparse @ sparse.T, dense @ dense.T, atol=1e-4)  # equal up to signs
    assert np.abs(sparse[:40] @ sparse[40:].T).max() < 1e-4  # the blocks stay apart
