"""UserCFRetriever: conformance, a brute-force reference and point-in-time neighbours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData, build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.recall import usercf as usercf_module
from recfunnel.stages.recall.sparse import keep_top_k_per_row
from recfunnel.stages.recall.usercf import UserCFConfig, UserCFRetriever, top_k_rows
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data, make_request
from recfunnel.types import RequestBatch

DAY = 86_400


class TestUserCFConformance(RetrieverConformance):
    def make_retriever(self) -> UserCFRetriever:
        return UserCFRetriever(UserCFConfig(neighbours=10))


class TestUserCFRecencyCappedConformance(RetrieverConformance):
    def make_retriever(self) -> UserCFRetriever:
        return UserCFRetriever(UserCFConfig(neighbours=3, recency="time", item_popularity_penalty=False,
                                            max_user_items=5, max_item_users=8))


def _data(user_items: dict[str, list[str]]) -> TrainingData:
    """One event per (user, item), in list order (later = newer)."""
    rows = [(u, i, t) for u, items in user_items.items() for t, i in enumerate(items)]
    return build_training_data(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def _request(history: list[list[int]], n_items: int, user_index: list[int] | None = None,
             exclude: sp.csr_matrix | None = None) -> RequestBatch:
    history_array = np.array(history, np.int64)
    b = len(history_array)
    return RequestBatch(
        np.array(user_index if user_index is not None else [-1] * b, np.int64), np.zeros(b, np.int64),
        history_array, np.zeros_like(history_array),
        exclude if exclude is not None else sp.csr_matrix((b, n_items)),
    )


def usercf_reference(x: np.ndarray, h: np.ndarray, neighbours: int) -> np.ndarray:
    """UserCF scores by the definition (User-IIF cosine, top neighbours), dense numpy."""
    penalty = 1.0 / np.log1p(np.maximum(x.sum(axis=0), 1))
    sim = (h * penalty) @ x.T / np.linalg.norm(h, axis=1, keepdims=True) / np.sqrt(x.sum(axis=1))
    scores = np.zeros((len(h), x.shape[1]))
    for row in range(len(h)):  # tiny reference: plain loops are clearest
        best = sorted(np.flatnonzero(sim[row] > 0), key=lambda v: (-sim[row, v], v))[:neighbours]
        scores[row] = sim[row, best] @ x[best]
    return scores


def test_scores_match_the_brute_force_reference() -> None:
    rng = np.random.default_rng(2)
    x = (rng.random((25, 12)) < 0.35).astype(float)
    x[x.sum(axis=1) == 0, 0] = 1.0  # every user has an item, so the ids cover all rows
    users, items = np.nonzero(x)
    data = build_training_data(pd.DataFrame({
        "user_id": [f"u{u:02d}" for u in users], "item_id": [f"i{i:02d}" for i in items],
        "timestamp": np.arange(len(users)),
    }))
    history = [[0, 3, 5, -1], [1, 2, -1, -1], [7, 8, 9, 11]]
    h = np.zeros((3, 12))
    for row, hist in enumerate(history):
        h[row, [i for i in hist if i >= 0]] = 1.0
    expected = usercf_reference(x, h, neighbours=4)
    retriever = UserCFRetriever(UserCFConfig(neighbours=4)).fit(data)
    out = retriever.retrieve(_request(history, 12), k=12)
    got = np.zeros((3, 12))
    rows, cols = np.nonzero(out.valid)
    got[rows, out.item_index[rows, cols]] = out.score[rows, cols]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_similarity_by_hand() -> None:
    # request {a, b}; v1 = {a, b, c}, v2 = {b, d}; |U_a| = 1, |U_b| = 2, |U_c| = |U_d| = 1
    data = _data({"v1": ["a", "b", "c"], "v2": ["b", "d"]})
    a, b, c, d = data.item_ids.index(["a", "b", "c", "d"])
    s1 = (1 / np.log(2) + 1 / np.log(3)) / (np.sqrt(2) * np.sqrt(3))
    s2 = (1 / np.log(3)) / (np.sqrt(2) * np.sqrt(2))
    exclude = sp.csr_matrix(([1.0, 1.0], ([0, 0], [a, b])), shape=(1, 4))
    out = UserCFRetriever().fit(data).retrieve(_request([[a, b]], 4, exclude=exclude), k=5)
    assert out.item_index.tolist() == [[c, d]]
    np.testing.assert_allclose(out.score[0], [s1, s2], rtol=1e-6)


def test_neighbours_come_from_the_request_history() -> None:
    data = make_planted_data()
    retriever = UserCFRetriever(UserCFConfig(neighbours=10)).fit(data)
    # user 0 (group 0) with a fresh online history of group-1 items gets group-1 items
    out = retriever.retrieve(_request([[20, 21]], data.n_items, user_index=[0]), k=5)
    assert out.valid.any() and (out.item_index[out.valid] >= 15).all()


def test_the_user_is_never_their_own_neighbour() -> None:
    # u1 later takes z, which nobody else has: a request as of before z must not find it
    data = _data({"u1": ["a", "b", "z"], "u2": ["a", "b", "c"]})
    a, b, c, z = data.item_ids.index(["a", "b", "c", "z"])
    u1 = int(data.user_ids.index(["u1"])[0])
    request = make_request(data, np.array([u1]), history_length=3, time=int(data.interactions.timestamp.min()) + 2)
    assert sorted(request.history[0][request.history[0] >= 0].tolist()) == sorted([a, b])
    out = UserCFRetriever().fit(data).retrieve(request, k=5)
    assert out.item_index[out.valid].tolist() == [c]


def test_recency_weights_the_newest_history_item() -> None:
    # history x (newest) then y; x's only other user has p, y's has q (q has the lower index)
    data = _data({"v1": ["0x", "3p"], "v2": ["1y", "2q"]})
    request = RequestBatch(np.array([-1]), np.array([10 * DAY]), np.array([[0, 1]]),
                           np.array([[10 * DAY, 8 * DAY]]), sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, 4)))
    plain = UserCFRetriever(UserCFConfig(recency="none")).fit(data).retrieve(request, k=2)
    assert plain.item_index.tolist() == [[2, 3]] and plain.score[0, 0] == plain.score[0, 1]
    for recency in ("position", "time"):
        out = UserCFRetriever(UserCFConfig(recency=recency, half_life_days=1.0)).fit(data).retrieve(request, k=2)
        assert out.item_index.tolist() == [[3, 2]] and out.score[0, 0] > out.score[0, 1]


def test_caps_keep_the_most_recent_edges() -> None:
    data = _data({"u1": ["a", "b", "c"], "u2": ["a", "d"], "u3": ["a", "e"]})
    retriever = UserCFRetriever(UserCFConfig(max_user_items=2, max_item_users=2)).fit(data)
    a, b, c = data.item_ids.index(["a", "b", "c"])
    u1, u2, u3 = data.user_ids.index(["u1", "u2", "u3"])
    assert sorted(retriever.user_items_[u1].indices.tolist()) == [b, c]  # u1's newest two
    # a's users: u1 dropped it, u2 and u3 took it at the same time: both kept
    assert sorted(retriever.item_users_[a].indices.tolist()) == sorted([u2, u3])
    np.testing.assert_allclose(retriever.user_norms_[[u1, u2, u3]], np.sqrt(2.0))


def test_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_planted_data(seed=4)
    request = make_request(data, np.arange(data.n_users), history_length=4)
    retriever = UserCFRetriever(UserCFConfig(neighbours=5)).fit(data)
    whole = retriever.retrieve(request, k=6)
    monkeypatch.setattr(usercf_module, "_CHUNK_PRODUCTS", 50)
    chunked = retriever.retrieve(request, k=6)
    np.testing.assert_array_equal(chunked.item_index, whole.item_index)
    np.testing.assert_array_equal(chunked.score, whole.score)


@pytest.mark.parametrize("density", [0.05, 0.6, 1.0])
@pytest.mark.parametrize("k", [1, 3, 7, 40])
def test_top_k_rows_matches_keep_top_k_per_row(density: float, k: int) -> None:
    rng = np.random.default_rng(int(density * 100) + k)
    dense = rng.integers(1, 4, size=(30, 12)).astype(float)  # few values: many ties
    dense[rng.random(dense.shape) > density] = 0.0
    dense[:5] = 0.0  # empty rows next to full ones
    m = sp.csr_matrix(dense)
    expected = keep_top_k_per_row(m, k)
    got = top_k_rows(m, k)
    np.testing.assert_array_equal(got.toarray(), expected.toarray())


def test_history_items_outside_the_catalogue_are_ignored() -> None:
    data = _data({"v1": ["a", "b"], "v2": ["a", "c"]})
    out = UserCFRetriever().fit(data).retrieve(_request([[99, 0]], 3), k=5)
    assert set(out.item_index[0].tolist()) == {0, 1, 2}


@pytest.mark.parametrize("options", [
    {"neighbours": 0}, {"recency": "exp"}, {"max_user_items": 0}, {"max_item_users": 0},
    {"recency_decay": -1.0}, {"half_life_days": 0.0},
])
def test_rejects_bad_config(options: dict) -> None:
    with pytest.raises(ConfigError):
        UserCFRetriever(UserCFConfig(**options)).fit(_data({"v1": ["a", "b"]}))


# --------------------------------------------------------------------------- nearline
def _events(users, items, histories=None, n_items: int = 31):
    """Positive events; ``histories[r]``: the items of event r's user before it (for history_before)."""
    from recfunnel.stages.base import EventBatch

    n = len(users)
    history_before = None
    if histories is not None:
        def history_before(rows, length):
            rows = np.asarray(rows)
            width = max(1, max(len(histories[r]) for r in rows))
            history = np.full((len(rows), width), -1, np.int64)
            for out, r in enumerate(rows):  # tiny test data
                history[out, :len(histories[r])] = histories[r]
            return RequestBatch(np.full(len(rows), -1), np.zeros(len(rows), np.int64), history,
                                np.zeros_like(history), sp.csr_matrix((len(rows), n_items)))
    return EventBatch(np.asarray(users), np.asarray(items), np.zeros(n, np.int64), np.ones(n, bool), np.ones(n),
                      history_before)


def test_a_new_item_is_reached_through_known_users_who_took_it() -> None:
    data = make_planted_data()  # users 0..19 take items 0..14
    usercf = UserCFRetriever(UserCFConfig(neighbours=10)).fit(data)
    new = data.n_items
    usercf.observe(_events(np.arange(1, 20), np.full(19, new)))
    out = usercf.retrieve(make_request(data, np.array([0]), history_length=5), k=20)
    assert new in out.item_index[0].tolist()
    assert usercf.user_items_.shape == (data.n_users, new + 1)


def test_a_nearline_only_user_gets_one_row_equal_to_a_refit() -> None:
    log = {f"u{u}": ["a", "b", "c"] if u < 3 else ["d", "e"] for u in range(6)}
    data = _data(log)
    usercf = UserCFRetriever(UserCFConfig(neighbours=3)).fit(data)
    a, b, c, d = data.item_ids.index(["a", "b", "c", "d"])
    new = data.n_items  # "zz", published after the fit
    # a new user takes d, then zz, then e in one batch (each history is the one before the event) ...
    usercf.observe(_events([-1, -1], [d, new], [[], [d]], n_items=new + 1))
    e = data.item_ids.index(["e"])[0]
    usercf.observe(_events([-1], [e], [[new, d]], n_items=new + 1))
    assert usercf.user_items_.shape[0] == data.n_users + 1  # ... one row, replaced twice
    refit = UserCFRetriever(UserCFConfig(neighbours=3)).fit(
        _data({**log, "zz_new": ["d", "zz", "e"]}))  # "zz_new" sorts last: the same row index
    np.testing.assert_array_equal(usercf.user_items_.toarray(), refit.user_items_.toarray())
    np.testing.assert_allclose(usercf.user_norms_, refit.user_norms_)
    np.testing.assert_allclose(usercf.item_penalty_, refit.item_penalty_)
    np.testing.assert_allclose(usercf.item_users_.toarray(), refit.item_users_.toarray(), rtol=1e-6)
    # users who took d and e now reach zz through the new user, their neighbour
    out = usercf.retrieve(_request([[d, e]], new + 1, user_index=[3]), k=5)
    assert new in out.item_index[0].tolist()
    # the new user is not their own neighbour: only the other d/e users vote
    own = usercf.retrieve(_request([[e, new, d]], new + 1, user_index=[-1]), k=5)
    assert set(own.item_index[0][own.valid[0]].tolist()) <= {d, e}


def test_save_writes_the_fitted_state_not_the_nearline_rows(tmp_path) -> None:
    from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter

    data = make_planted_data()
    usercf = UserCFRetriever(UserCFConfig(neighbours=10)).fit(data)
    fitted = usercf.user_items_.copy()
    usercf.observe(_events([1, 2, -1], [data.n_items] * 3, [[0], [0], [0, 1]]))
    with ArtifactWriter(tmp_path / "m", kind="usercf") as writer:
        usercf.save(writer, "u/")
    loaded = UserCFRetriever.load(ArtifactReader(tmp_path / "m"), "u/", usercf.config)
    assert loaded.user_items_.shape == fitted.shape and (loaded.user_items_ != fitted).nnz == 0
    loaded.observe(_events([1, 2, -1], [data.n_items] * 3, [[0], [0], [0, 1]]))
    assert (loaded.user_items_ != usercf.user_items_).nnz == 0
    assert (abs(loaded.item_users_ - usercf.item_users_) > 1e-6).nnz == 0
