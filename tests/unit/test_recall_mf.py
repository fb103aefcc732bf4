"""ALS, BPR and EASE retrieval: conformance, fold-in against the learned factors, EASE by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.base import Retriever
from recfunnel.stages.recall.ease import EASEConfig, EASERetriever, dense_top_k
from recfunnel.stages.recall.mf import ALSConfig, ALSRetriever, BPRConfig, BPRRetriever
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups
from recfunnel.types import RequestBatch

DAY = 86_400

# tiny planted data (2 groups x 15 items, 5-item histories): 2 factors are one per group,
# more overfit the 5-item fold-in; one thread keeps BPR's SGD reproducible


def _als(**options) -> ALSRetriever:
    return ALSRetriever(ALSConfig(**{"factors": 2, "iterations": 15, "num_threads": 1, **options}))


def _bpr(**options) -> BPRRetriever:
    return BPRRetriever(BPRConfig(**{"factors": 8, "iterations": 100, "num_threads": 1, **options}))


def _ease(**options) -> EASERetriever:
    return EASERetriever(EASEConfig(**{"l2": 10.0, **options}))


class TestALSConformance(RetrieverConformance):
    def make_retriever(self) -> ALSRetriever:
        return _als()


class TestALSHNSWConformance(RetrieverConformance):
    def make_retriever(self) -> ALSRetriever:
        return _als(alpha=4.0, index="hnsw")


class TestBPRConformance(RetrieverConformance):
    def make_retriever(self) -> BPRRetriever:
        return _bpr()


class TestBPRTimeRecencyConformance(RetrieverConformance):
    def make_retriever(self) -> BPRRetriever:
        return _bpr(recency="time", learning_rate=0.05)


class TestEASEConformance(RetrieverConformance):
    def make_retriever(self) -> EASERetriever:
        return _ease()


@pytest.fixture(scope="module")
def planted():
    return make_planted_data()


def _request(history: list[list[int]], n_items: int, time: int = 0) -> RequestBatch:
    history_arr = np.array(history, np.int64)
    b = len(history_arr)
    return RequestBatch(np.zeros(b, np.int64), np.full(b, time), history_arr,
                        np.zeros_like(history_arr), sp.csr_matrix((b, n_items)))


# ---- ALS fold-in ----

def test_als_fold_in_of_a_full_history_is_the_learned_factor(planted) -> None:
    als = ALSRetriever(ALSConfig(factors=8, iterations=20, num_threads=1)).fit(planted)
    users = np.arange(planted.n_users)
    request = make_request(planted, users, history_length=50)  # the whole training history
    vectors, has_history = als.user_vectors(request)
    assert has_history.all()
    learned = als.user_factors_[users]
    cosine = (vectors * learned).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(learned, axis=1)
    assert cosine.min() > 0.9


def test_als_fold_in_solves_the_weighted_least_squares_exactly(planted) -> None:
    alpha, reg = 2.0, 0.1
    als = _als(factors=4, alpha=alpha, regularization=reg).fit(planted)
    # repeats (item 3 twice), padding, an item outside the catalogue, and an empty history
    history = [[3, 5, 3, -1, 99], [7, -1, -1, -1, -1], [-1, -1, -1, -1, -1]]
    vectors, has_history = als.user_vectors(_request(history, planted.n_items))
    assert has_history.tolist() == [True, True, False]
    y = als.item_factors_.astype(np.float64)
    for row in range(2):  # per-user reference of Hu et al. 2008, eq. 4 with a dense C_u
        counts = np.bincount([i for i in history[row] if 0 <= i < planted.n_items], minlength=len(y))
        confidence = 1.0 + alpha * counts
        preference = (counts > 0).astype(float)
        expected = np.linalg.solve(y.T @ (confidence[:, None] * y) + reg * np.eye(4),
                                   y.T @ (confidence * preference))
        np.testing.assert_allclose(vectors[row], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(vectors[2], 0.0)


def test_als_fit_runs_with_single_threaded_blas_and_no_warning(planted) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # implicit warns on a threaded BLAS
        _als().fit(planted)


def test_index_option_reaches_the_index(planted) -> None:
    assert _als(index="hnsw").fit(planted).index_.kind == "hnsw"
    assert _als().fit(planted).index_.kind == "flat"


# ---- BPR fold-in ----

def test_bpr_user_vector_is_the_scaled_recency_weighted_mean(planted) -> None:
    bpr = _bpr(recency_decay=1.0).fit(planted)
    f = bpr.config.factors
    assert bpr.item_factors_.shape == (planted.n_items, f + 1)  # implicit's bias column
    assert bpr.user_scale_ > 0
    vectors, has_history = bpr.user_vectors(_request([[4, 9, -1, 99]], planted.n_items))
    weights = np.array([1.0, 0.5])  # 1 / (1 + pos)
    mean = weights @ bpr.item_factors_[[4, 9], :f] / weights.sum()
    np.testing.assert_allclose(vectors[0, :f], bpr.user_scale_ * mean, rtol=1e-5)
    assert vectors[0, f] == 1.0 and has_history.tolist() == [True]


def test_bpr_time_recency_halves_per_half_life(planted) -> None:
    bpr = _bpr(recency="time", half_life_days=2.0).fit(planted)
    request = RequestBatch(np.zeros(1, np.int64), np.array([10 * DAY]), np.array([[1, 2, -1]]),
                           np.array([[10 * DAY, 8 * DAY, 0]]), sp.csr_matrix((1, planted.n_items)))
    np.testing.assert_allclose(bpr.history_weights(request), [[1.0, 0.5, 0.0]])


# ---- behaviour every channel shares ----

@pytest.mark.parametrize("make", [_als, _bpr, _ease], ids=["als", "bpr", "ease"])
def test_uses_the_request_history_not_the_training_matrix(planted, make) -> None:
    retriever: Retriever = make().fit(planted)
    _, item_group = planted_groups(planted)
    # user 0 (group 0) with a fresh online history of group-1 items gets group-1 items
    out = retriever.retrieve(_request([[20, 21, 22]], planted.n_items), k=5)
    assert out.valid.all()
    assert (item_group[out.item_index[0, :3]] == 1).all()


@pytest.mark.parametrize("make", [_als, _bpr, _ease], ids=["als", "bpr", "ease"])
def test_unknown_history_items_are_ignored_and_k_beyond_the_catalogue(planted, make) -> None:
    retriever: Retriever = make().fit(planted)
    n = planted.n_items
    request = _request([[99, 2, n], [99, -1, n]], n)
    out = retriever.retrieve(request, k=n + 10)
    assert out.item_index.shape == (2, n)
    assert out.valid[0].all() and not out.valid[1].any()  # only unknown items: padding
    assert sorted(out.item_index[0].tolist()) == list(range(n))


# ---- EASE ----

def _data(user_items: dict[str, list[str]]):
    rows = [(u, i, t) for u, items in user_items.items() for t, i in enumerate(items)]
    return build_training_data(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def test_ease_matches_the_direct_formula() -> None:
    # items a, b, c, d: X^T X = [[2,1,1,0],[1,3,1,1],[1,1,2,1],[0,1,1,2]], lambda = 1
    data = _data({"u1": ["a", "b"], "u2": ["a", "b", "c"], "u3": ["b", "c", "d"], "u4": ["d"]})
    x = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 1]], float)
    p = np.linalg.inv(x.T @ x + 1.0 * np.eye(4))
    expected = np.eye(4) - p / np.diag(p)[None, :]
    ease = EASERetriever(EASEConfig(l2=1.0)).fit(data)
    np.testing.assert_allclose(ease.weights_, expected, atol=1e-6)
    assert (np.diag(ease.weights_) == 0).all()
    # scores of a history {a, a, c} (binary: a counts once) are the rows a + c of B
    out = ease.retrieve(_request([[0, 0, 2]], 4), k=4)
    scores = expected[0] + expected[2]
    order = np.argsort(-scores, kind="stable")
    assert out.item_index[0].tolist() == order.tolist()
    np.testing.assert_allclose(out.score[0], scores[order], rtol=1e-5, atol=1e-6)


def test_ease_refuses_catalogues_beyond_max_items(planted) -> None:
    with pytest.raises(ConfigError, match="max_items"):
        EASERetriever(EASEConfig(max_items=planted.n_items - 1)).fit(planted)
    EASERetriever(EASEConfig(max_items=planted.n_items)).fit(planted)  # exactly at the guard


def test_dense_top_k_orders_ties_by_column_and_pads() -> None:
    scores = np.array([[1.0, 3.0, 3.0, -np.inf], [-np.inf, -np.inf, -np.inf, -np.inf]])
    cols, vals = dense_top_k(scores, 3)
    assert cols.tolist() == [[1, 2, 0], [-1, -1, -1]]
    assert vals[0].tolist() == [3.0, 3.0, 1.0] and np.isneginf(vals[1]).all()


# ---- configuration ----

@pytest.mark.parametrize("retriever", [
    ALSRetriever(ALSConfig(regularization=0.0)),
    ALSRetriever(ALSConfig(alpha=-1.0)),
    ALSRetriever(ALSConfig(factors=0)),
    ALSRetriever(ALSConfig(index="annoy")),
    BPRRetriever(BPRConfig(learning_rate=0.0)),
    BPRRetriever(BPRConfig(recency="exp")),
    BPRRetriever(BPRConfig(num_threads=-1)),
    EASERetriever(EASEConfig(l2=0.0)),
], ids=["als-reg", "als-alpha", "als-factors", "als-index", "bpr-lr", "bpr-recency", "bpr-threads", "ease-l2"])
def test_rejects_bad_config(planted, retriever: Retriever) -> None:
    with pytest.raises(ConfigError):
        retriever.fit(planted)


# --------------------------------------------------------------------------- nearline fold-in
def _positive_events(users, items, history_before=None):
    from recfunnel.stages.base import EventBatch

    n = len(users)
    return EventBatch(np.asarray(users), np.asarray(items), np.full(n, DAY), np.ones(n, bool), np.ones(n),
                      history_before)


def _history_of(data, users):
    """``history_before`` from the training positives of ``users`` (the batch's rows)."""
    users = np.asarray(users)
    return lambda rows, length: make_request(data, users[np.asarray(rows)], history_length=length)


@pytest.mark.parametrize("make", [_als, _bpr], ids=["als", "bpr"])
@pytest.mark.parametrize("with_history", [True, False], ids=["history", "fitted-users"])
def test_a_new_item_is_folded_in_and_returned_to_its_group(planted, make, with_history: bool) -> None:
    channel = make().fit(planted)
    new = planted.n_items
    users = np.arange(0, 12)  # group 0 (items 0..14)
    assert channel.publish(_new_items_mf([new]))
    channel.observe(_positive_events(users, np.full(len(users), new),
                                     _history_of(planted, users) if with_history else None))
    assert channel.item_factors_.shape == (new + 1, channel._fitted[0].shape[1])
    group_0 = make_request(planted, np.array([15]), history_length=5)
    group_1 = make_request(planted, np.array([30]), history_length=5)
    found_0 = channel.retrieve(group_0, k=new + 1).item_index[0].tolist()
    found_1 = channel.retrieve(group_1, k=new + 1).item_index[0].tolist()
    # near the top for the group that took it, lower for the other (BPR's fold-in also
    # learns a bias against the users' constant column, so it is not last there)
    assert found_0.index(new) < 3 and found_0.index(new) < found_1.index(new)
    # the fold-in is the ALS item update against the fixed user factors
    alpha = getattr(channel.config, "alpha", 1.0)
    u = channel.user_factors_.astype(np.float64)
    if with_history:
        v = channel.user_vectors(make_request(planted, users, history_length=200))[0].astype(np.float64)
    else:
        v = u[users]
    lhs = u.T @ u + channel.config.regularization * np.eye(u.shape[1]) + alpha * v.T @ v
    np.testing.assert_allclose(channel.item_factors_[new], np.linalg.solve(lhs, (1 + alpha) * v.sum(0)),
                               rtol=1e-4, atol=1e-6)


def test_fold_in_skips_fitted_items_and_impressions(planted) -> None:
    from recfunnel.stages.base import EventBatch

    als = _als().fit(planted)
    factors, index = als.item_factors_, als.index_
    als.observe(_positive_events(np.array([0, 1]), np.array([3, 4])))
    als.observe(EventBatch(np.array([0]), np.array([planted.n_items]), np.zeros(1), np.zeros(1, bool), np.ones(1)))
    assert als.item_factors_ is factors and als.index_ is index


@pytest.mark.parametrize("make", [_als, _bpr], ids=["als", "bpr"])
def test_save_writes_the_fitted_factors_and_index_only(planted, make, tmp_path) -> None:
    from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter

    channel = make().fit(planted)
    fitted = channel.item_factors_.copy()
    channel.observe(_positive_events(np.arange(5), np.full(5, planted.n_items)))
    with ArtifactWriter(tmp_path / "m", kind=channel.kind) as writer:
        channel.save(writer, "c/")
    loaded = type(channel).load(ArtifactReader(tmp_path / "m"), "c/", channel.config)
    np.testing.assert_array_equal(loaded.item_factors_, fitted)
    assert len(loaded.index_) == planted.n_items and len(channel.index_) == planted.n_items + 1
    request = make_request(planted, np.array([0]), history_length=5)
    assert planted.n_items not in loaded.retrieve(request, k=planted.n_items).item_index[0].tolist()
    loaded.observe(_positive_events(np.arange(5), np.full(5, planted.n_items)))  # the log replays it
    np.testing.assert_allclose(loaded.item_factors_, channel.item_factors_, rtol=1e-6)


def _new_items_mf(items):
    from recfunnel.stages.base import NewItems

    return NewItems(np.asarray(items), np.zeros(len(items), np.int64), pd.DataFrame(index=range(len(items))))
