"""Embedding channels (Item2Vec, DeepWalk, Node2vec, EGES): conformance and properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recfunnel.data.dataset import TrainingData, build_training_data
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.recall.embedding import (
    DeepWalkConfig,
    DeepWalkRetriever,
    EGESConfig,
    EGESRetriever,
    Item2VecConfig,
    Item2VecRetriever,
    Node2VecConfig,
    Node2VecRetriever,
)
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups

# the planted users have ~7 events spread over 30 days: one sequence per user, no subsampling
# on a 30-item catalogue, and small batches so that the few pairs make enough steps
TINY = {"session_gap_hours": None, "subsample": 0.0, "dim": 16, "neighbours": 20}
WALKS = {**TINY, "batch_size": 256, "walks_per_node": 5, "walk_length": 10, "epochs": 5}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # two intra-op threads on a busy two-core machine make tiny steps 10x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TestItem2VecConformance(RetrieverConformance):
    def make_retriever(self) -> Item2VecRetriever:
        return Item2VecRetriever(Item2VecConfig(**TINY, batch_size=64, epochs=10))


class TestDeepWalkConformance(RetrieverConformance):
    def make_retriever(self) -> DeepWalkRetriever:
        return DeepWalkRetriever(DeepWalkConfig(**WALKS))


class TestNode2VecConformance(RetrieverConformance):
    def make_retriever(self) -> Node2VecRetriever:
        return Node2VecRetriever(Node2VecConfig(**WALKS, p=2.0, q=0.5, recency="time"))


class TestEGESConformance(RetrieverConformance):
    def make_retriever(self) -> EGESRetriever:
        return EGESRetriever(EGESConfig(**WALKS))


def _with_new_items(base: TrainingData, new_items: dict[str, dict], extra_columns: dict | None = None) -> TrainingData:
    """``base`` rebuilt with extra catalogue items that nobody interacted with."""
    inter = pd.DataFrame({
        "user_id": base.user_ids.to_ids(base.interactions.user_index),
        "item_id": base.item_ids.to_ids(base.interactions.item_index),
        "timestamp": base.interactions.timestamp,
    })
    items = base.item_features.set_index(pd.Index(base.item_ids.ids, name="item_id"))
    for name, values in (extra_columns or {}).items():
        items[name] = values
    new = pd.DataFrame.from_dict(new_items, orient="index")
    return build_training_data(inter, items=pd.concat([items, new]))


@pytest.fixture(scope="module")
def cold_data() -> TrainingData:
    # two cold items, one per planted category, and one whose category no warm item has
    return _with_new_items(make_planted_data(), {
        "new_g0": {"category": "g0"}, "new_g1": {"category": "g1"}, "new_g9": {"category": "g9"},
    })


@pytest.fixture(scope="module")
def eges(cold_data: TrainingData) -> EGESRetriever:
    return EGESRetriever(EGESConfig(**WALKS)).fit(cold_data)


def test_eges_cold_item_lands_among_its_side_information_peers(cold_data: TrainingData,
                                                               eges: EGESRetriever) -> None:
    _, item_group = planted_groups(cold_data)
    warm = np.bincount(cold_data.interactions.item_index, minlength=cold_data.n_items) > 0
    for cold_id, group in (("new_g0", 0), ("new_g1", 1)):
        cold = int(cold_data.item_ids.index([cold_id])[0])
        assert not warm[cold]
        vector = eges.item_vectors_[cold]
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        cosine = eges.item_vectors_[warm] @ vector
        nearest = np.flatnonzero(warm)[np.argsort(-cosine)[:5]]
        assert (item_group[nearest] == group).all()
        # the cold item is in the similarity graph both ways, so it can be retrieved at once
        row = eges.similarity_[cold]
        assert row.nnz > 0 and (item_group[row.indices[np.argsort(-row.data)[:5]]] == group).all()
        assert eges.similarity_[:, cold].nnz > 0
    # a category nobody had carries no information: no vector, no neighbours
    unknown = int(cold_data.item_ids.index(["new_g9"])[0])
    assert not eges.item_vectors_[unknown].any() and eges.similarity_[unknown].nnz == 0


def test_eges_cold_item_is_retrieved_for_its_group(cold_data: TrainingData, eges: EGESRetriever) -> None:
    user_group, _ = planted_groups(cold_data)
    cold = int(cold_data.item_ids.index(["new_g0"])[0])
    out = eges.retrieve(make_request(cold_data, np.arange(cold_data.n_users), 5), k=cold_data.n_items)
    found = (out.item_index == cold).any(axis=1)
    assert found[user_group == 0].any() and not found[user_group == 1].any()


def test_eges_vector_from_side_info_matches_fit_and_survives_save(tmp_path, cold_data: TrainingData,
                                                                  eges: EGESRetriever) -> None:
    rows = pd.DataFrame({"category": ["g0", "g1", "g9", None]})
    vectors = eges.vector_from_side_info(rows)
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    cold = cold_data.item_ids.index(["new_g0", "new_g1"])
    np.testing.assert_allclose(vectors[:2], eges.item_vectors_[cold], atol=1e-6)
    assert not vectors[2:].any()  # unknown and missing values give no vector
    assert not eges.vector_from_side_info(pd.DataFrame({"other": ["x"]})).any()
    with ArtifactWriter(tmp_path / "m", kind="eges") as writer:
        eges.save(writer, "eges/")
    loaded = EGESRetriever.load(ArtifactReader(tmp_path / "m"), "eges/", eges.config)
    np.testing.assert_array_equal(loaded.vector_from_side_info(rows), vectors)
    np.testing.assert_array_equal(loaded.item_vectors_, eges.item_vectors_)


def test_eges_side_columns_auto_and_named() -> None:
    base = make_planted_data(n_users_per_group=6, items_per_group=6)
    n = base.n_items
    extra = {
        "movie_title": [f"Title number {i}" for i in range(n)],  # free text: never side information
        "year": np.linspace(1990, 2000, n),  # numeric: only when named
        "tags": [("a", "b") if i % 2 else ("b",) for i in range(n)],
    }
    data = _with_new_items(base, {"new": {"category": "g0", "year": 1995.0, "tags": ("a",)}}, extra)
    auto = EGESRetriever(EGESConfig(**{**WALKS, "walks_per_node": 2})).fit(data)
    assert [(c.name, c.kind) for c in auto.side_columns_] == [("category", "sparse"), ("tags", "sequence")]
    named = EGESRetriever(EGESConfig(**{**WALKS, "walks_per_node": 2}, side_columns=("year", "category"),
                                     numeric_buckets=4)).fit(data)
    assert [(c.name, c.kind) for c in named.side_columns_] == [("year", "dense"), ("category", "sparse")]
    assert named.side_tables_[0].shape[0] == 3 + 3  # 3 edges -> 4 buckets, plus 0/1 reserved
    with pytest.raises(DataError, match="side_columns"):
        EGESRetriever(EGESConfig(**WALKS, side_columns=("nope",))).fit(data)


@pytest.mark.parametrize("cls, config", [
    (Item2VecRetriever, Item2VecConfig(**TINY, batch_size=64, epochs=3)),
    (Node2VecRetriever, Node2VecConfig(**{**WALKS, "walks_per_node": 2})),
])
def test_item_vectors_are_unit_saved_and_seeded(tmp_path, cls, config) -> None:
    data = _with_new_items(make_planted_data(), {"new": {"category": "g0"}})
    fitted = cls(config).fit(data)
    vectors = fitted.item_vectors_
    assert vectors.shape == (data.n_items, 16) and vectors.dtype == np.float32
    new = int(data.item_ids.index(["new"])[0])
    # no behaviour, no side information channel: the new item has no vector and no neighbours
    assert not vectors[new].any() and fitted.similarity_[new].nnz == 0 and fitted.similarity_[:, new].nnz == 0
    norms = np.linalg.norm(np.delete(vectors, new, axis=0), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert fitted.similarity_.diagonal().sum() == 0
    again = cls(config).fit(data)
    np.testing.assert_array_equal(again.item_vectors_, vectors)
    with ArtifactWriter(tmp_path / "m", kind=cls.kind) as writer:
        fitted.save(writer, "r/")
    loaded = cls.load(ArtifactReader(tmp_path / "m"), "r/", config)
    np.testing.assert_array_equal(loaded.item_vectors_, vectors)


def test_sessions_limit_item2vec_context() -> None:
    # every user has a then b within a minute, and c two days later: a-b are neighbours, c is alone
    day = 86_400
    rows = [(f"u{u}", item, t + u) for u in range(30) for item, t in (("a", 0), ("b", 60), ("c", 2 * day))]
    rows += [(f"v{u}", item, t + u) for u in range(30) for item, t in (("c", 0), ("d", 60))]
    data = build_training_data(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    config = Item2VecConfig(**{**TINY, "session_gap_hours": 24.0}, batch_size=16, epochs=5, negatives=2)
    sim = Item2VecRetriever(config).fit(data).similarity_.toarray()
    a, b, c, d = data.item_ids.index(["a", "b", "c", "d"])
    assert sim[a, b] > sim[a, c] and sim[c, d] > sim[c, b]


@pytest.mark.parametrize("cls, config, message", [
    (Item2VecRetriever, Item2VecConfig(dim=0), "dim"),
    (Item2VecRetriever, Item2VecConfig(recency="oldest"), "recency"),
    (Item2VecRetriever, Item2VecConfig(neighbours=0), "neighbours"),
    (Item2VecRetriever, Item2VecConfig(session_gap_hours=0.0), "session_gap_hours"),
    (Item2VecRetriever, Item2VecConfig(optimizer="lbfgs"), "optimizer"),
    (DeepWalkRetriever, DeepWalkConfig(walk_length=1), "walk_length"),
    (Node2VecRetriever, Node2VecConfig(q=0.0), "p and q"),
    (EGESRetriever, EGESConfig(numeric_buckets=0), "numeric_buckets"),
])
def test_invalid_configs_are_rejected(cls, config, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cls(config).fit(make_planted_data(n_users_per_group=2, items_per_group=4))


def test_eges_without_side_information_is_deepwalk_with_an_id_slot(tmp_path) -> None:
    base = make_planted_data(n_users_per_group=8, items_per_group=8)
    inter = pd.DataFrame({
        "user_id": base.user_ids.to_ids(base.interactions.user_index),
        "item_id": base.item_ids.to_ids(base.interactions.item_index),
        "timestamp": base.interactions.timestamp,
    })
    data = build_training_data(inter)  # no item table at all
    eges = EGESRetriever(EGESConfig(**WALKS)).fit(data)
    assert eges.side_columns_ == [] and eges.side_attention_.shape == (0,)
    assert np.allclose(np.linalg.norm(eges.item_vectors_, axis=1), 1.0, atol=1e-5)
    assert not eges.vector_from_side_info(pd.DataFrame({"category": ["g0"]})).any()
    with ArtifactWriter(tmp_path / "m", kind="eges") as writer:
        eges.save(writer, "")
    loaded = EGESRetriever.load(ArtifactReader(tmp_path / "m"), "", eges.config)
    assert loaded.side_columns_ == [] and loaded.similarity_.nnz == eges.similarity_.nnz
