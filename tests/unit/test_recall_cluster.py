"""ClusterRetriever and ContentEncoder: conformance, the cold-start property, time and quotas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData, build_training_data
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.recall.cluster import ClusterConfig, ClusterRetriever, ContentEncoder
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups
from recfunnel.types import RequestBatch

DAY = 86_400


def planted_with_content(new_items_per_group: int = 0, dim: int = 8, noise: float = 0.3,
                         seed: int = 0) -> tuple[TrainingData, np.ndarray]:
    """The planted groups with group-dependent ``content_*`` vectors, plus items nobody touched.

    Returns:
        (data, centres (2, dim)): new items (indices 30..) have no interactions and
        ``publish_time`` one day after the newest event; the others have no publish time.
    """
    base = make_planted_data()
    _, item_group = planted_groups(base)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, dim))
    groups = np.r_[item_group, np.repeat([0, 1], new_items_per_group)]
    content = centres[groups] + noise * rng.standard_normal((len(groups), dim))
    publish = np.full(len(groups), np.nan)
    publish[len(item_group):] = base.interactions.timestamp.max() + DAY
    items = pd.DataFrame(
        {"category": [f"g{g}" for g in groups], "publish_time": publish,
         **{f"content_{j}": content[:, j].astype(np.float32) for j in range(dim)}},
        index=pd.Index([f"i{i:05d}" for i in range(len(groups))], name="item_id"),
    )
    return build_training_data(base.raw[["user_id", "item_id", "timestamp"]], items=items), centres


class TestClusterContentConformance(RetrieverConformance):
    def make_retriever(self) -> ClusterRetriever:
        return ClusterRetriever(ClusterConfig(seed=3))

    def make_data(self) -> TrainingData:
        return planted_with_content(new_items_per_group=3)[0]


class TestClusterCategoricalConformance(RetrieverConformance):
    """Planted data without content columns: the category multi-hot is clustered."""

    def make_retriever(self) -> ClusterRetriever:
        return ClusterRetriever(ClusterConfig(n_clusters=2, items_per_cluster=8))


@pytest.fixture(scope="module")
def cold() -> tuple[TrainingData, ClusterRetriever]:
    data, _ = planted_with_content(new_items_per_group=3)
    return data, ClusterRetriever(ClusterConfig(n_clusters=2)).fit(data)


def test_clusters_recover_the_groups(cold) -> None:
    data, cluster = cold
    _, item_group = planted_groups(data)
    assert cluster.encoder_.source_ == "content"
    # a perfect 2-clustering up to label swap
    assert len(np.unique(np.c_[item_group, cluster.item_cluster_], axis=0)) == 2


def test_cold_items_of_the_users_cluster_come_first(cold) -> None:
    """The cold-start point: items nobody touched reach the users of their content cluster."""
    data, cluster = cold
    user_group, item_group = planted_groups(data)
    new_items = np.arange(30, 36)
    assert not np.isin(data.interactions.item_index, new_items).any()
    users = np.arange(40)
    request = make_request(data, users, 5, time=int(data.interactions.timestamp.max()) + 2 * DAY)
    out = cluster.retrieve(request, k=10)
    own_new = [set(new_items[item_group[new_items] == g]) for g in user_group[users]]
    assert [set(row[:3]) for row in out.item_index] == own_new  # the newest items, first
    valid = out.valid
    assert (item_group[out.item_index[valid]] == np.broadcast_to(user_group[users, None], valid.shape)[valid]).all()


def test_never_returns_items_published_after_the_request(cold) -> None:
    data, cluster = cold
    t_end = int(data.interactions.timestamp.max())
    rng = np.random.default_rng(0)
    times = rng.integers(t_end - 20 * DAY, t_end + 2 * DAY, size=40)
    request = make_request(data, np.arange(40), 5, time=times)
    out = cluster.retrieve(request, k=10)
    published = cluster.item_time_[np.maximum(out.item_index, 0)]
    assert (published[out.valid] <= np.broadcast_to(times[:, None], out.valid.shape)[out.valid]).all()
    before = cluster.retrieve(make_request(data, np.arange(40), 5, time=t_end + DAY // 2), k=10)
    assert not np.isin(before.item_index, np.arange(30, 36)).any()
    assert before.valid.any()


def test_max_item_age_leaves_out_old_items() -> None:
    data, _ = planted_with_content(new_items_per_group=3)
    cluster = ClusterRetriever(ClusterConfig(n_clusters=2, max_item_age_days=3.0)).fit(data)
    time = int(data.interactions.timestamp.max()) + 2 * DAY
    out = cluster.retrieve(make_request(data, np.arange(40), 5, time=time), k=10)
    age = time - cluster.item_time_[np.maximum(out.item_index, 0)]
    assert (age[out.valid] <= 3 * DAY).all() and out.valid.any()


def test_add_items_indexes_a_new_item_at_once(cold) -> None:
    data, _ = cold
    cluster = ClusterRetriever(ClusterConfig(n_clusters=2)).fit(data)
    _, item_group = planted_groups(data)
    # two items beyond the fitted catalogue, raw content near each group's mean
    raw = np.stack([cluster.encoder_.raw_vectors(data.item_features)[item_group == g].mean(0) for g in (0, 1)])
    t_new = int(data.interactions.timestamp.max()) + 3 * DAY
    new = np.array([data.n_items, data.n_items + 1])
    cluster.add_items(new, raw, publish_time=t_new)
    group_cluster = [cluster.item_cluster_[np.flatnonzero(item_group == g)[0]] for g in (0, 1)]
    assert cluster.item_cluster_[new].tolist() == group_cluster
    # exclusions are as wide as the fitted catalogue: the new items are never excluded
    request = make_request(data, np.array([0, 20]), 5, time=t_new + 1)
    out = cluster.retrieve(request, k=10)
    assert out.item_index[0, 0] == new[0] and new[1] not in out.item_index[0]
    assert out.item_index[1, 0] == new[1] and new[0] not in out.item_index[1]
    early = cluster.retrieve(make_request(data, np.array([0, 20]), 5, time=t_new - 1), k=10)
    assert not np.isin(early.item_index, new).any()
    # all-NaN content: indexed nowhere
    cluster.add_items(np.array([new[1] + 1]), np.full((1, raw.shape[1]), np.nan), publish_time=t_new)
    assert cluster.item_cluster_[-1] == -1


def test_quotas_follow_the_recency_weighted_shares(cold) -> None:
    data, _ = cold
    cluster = ClusterRetriever(ClusterConfig(n_clusters=2, recency_decay=0.0)).fit(data)
    a_items = np.flatnonzero(cluster.item_cluster_ == cluster.item_cluster_[0])
    b_items = np.flatnonzero(cluster.item_cluster_ != cluster.item_cluster_[0])
    # two seeds in A, one in B: shares 2/3 and 1/3; D'Hondt gives 6 slots as 4 + 2
    history = np.array([[a_items[0], b_items[0], a_items[1]]])
    time = int(data.interactions.timestamp.max()) + 2 * DAY
    request = RequestBatch(np.array([-1]), np.array([time]), history, np.zeros_like(history),
                           sp.csr_matrix((1, data.n_items)))
    out = cluster.retrieve(request, k=6)
    got = out.item_index[0]
    in_a = np.isin(got, a_items)
    assert in_a.sum() == 4 and (~in_a).sum() == 2

    def newest(items: np.ndarray, n: int) -> list[int]:
        return items[np.lexsort((items, -cluster.item_time_[items]))][:n].tolist()

    assert got[in_a].tolist() == newest(a_items, 4)
    assert got[~in_a].tolist() == newest(b_items, 2)
    np.testing.assert_allclose(out.score[0], [2 / 3, 1 / 3, 1 / 3, 2 / 9, 1 / 6, 1 / 6], rtol=1e-6)
    # only the last `seeds` usable history items count: with one seed only A remains
    one_seed = ClusterRetriever(ClusterConfig(n_clusters=2, seeds=1)).fit(data)
    assert np.isin(one_seed.retrieve(request, k=6).item_index[0], a_items).all()


def test_save_load_keeps_added_items(tmp_path, cold) -> None:
    data, _ = cold
    cluster = ClusterRetriever(ClusterConfig(n_clusters=2)).fit(data)
    cluster.add_items(np.array([data.n_items]), cluster.encoder_.raw_vectors(data.item_features.iloc[:1]),
                      publish_time=int(data.interactions.timestamp.max()) + 3 * DAY)
    with ArtifactWriter(tmp_path / "m", kind="cluster") as writer:
        cluster.save(writer, "c/")
    loaded = ClusterRetriever.load(ArtifactReader(tmp_path / "m"), "c/", cluster.config)
    request = make_request(data, np.arange(40), 5, time=int(data.interactions.timestamp.max()) + 4 * DAY)
    a, b = cluster.retrieve(request, 10), loaded.retrieve(request, 10)
    np.testing.assert_array_equal(a.item_index, b.item_index)
    np.testing.assert_array_equal(a.score, b.score)
    assert data.n_items in a.item_index


def test_automatic_cluster_count() -> None:
    rng = np.random.default_rng(0)
    n = 250  # sqrt(250 / 10) = 5
    items = pd.DataFrame(rng.standard_normal((n, 4)).astype(np.float32),
                         columns=[f"content_{j}" for j in range(4)], index=[f"i{i:04d}" for i in range(n)])
    interactions = pd.DataFrame({"user_id": ["u"] * 3, "item_id": items.index[:3], "timestamp": [1, 2, 3]})
    cluster = ClusterRetriever().fit(build_training_data(interactions, items=items))
    assert cluster.centroids_.shape == (5, 4)
    np.testing.assert_allclose(np.linalg.norm(cluster.centroids_, axis=1), 1.0, rtol=1e-5)


def test_categorical_fallback_projects_a_large_vocabulary() -> None:
    # 20 tags + 1 author (> 16 dims): items 0..3 share their two tags, item 4 shares none with them
    tags = [tuple(f"t{(i // 4) * 2 + j}" for j in range(2)) for i in range(40)]
    items = pd.DataFrame({"tags": tags, "author": ["a"] * 40, "duration": np.arange(40.0)},
                         index=[f"i{i:03d}" for i in range(40)])
    encoder = ContentEncoder(max_dims=16, seed=1).fit(items)
    assert encoder.source_ == "categorical" and encoder.columns_ == ["tags", "author"]
    assert encoder.projection_.shape == (21, 16) and encoder.dim == 16
    vectors, has_content = encoder.transform(items)
    assert has_content.all()
    assert vectors[0] @ vectors[1] > 0.99 and vectors[0] @ vectors[1] > vectors[0] @ vectors[4] + 0.3
    restored = ContentEncoder.from_arrays(encoder.to_arrays())
    np.testing.assert_array_equal(restored.transform(items)[0], vectors)
    # a categorical column with a distinct value per item (an id, a title) is skipped
    titles = items.assign(title=[f"title {i}" for i in range(40)])
    assert "title" not in ContentEncoder().fit(titles).columns_


def test_items_without_content_or_categories_are_refused() -> None:
    items = pd.DataFrame({"duration": [1.0, 2.0]}, index=["a", "b"])
    interactions = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]})
    with pytest.raises(DataError, match="no 'content_\\*' columns"):
        ClusterRetriever().fit(build_training_data(interactions, items=items))


@pytest.mark.parametrize("options", [
    {"n_clusters": -1}, {"items_per_cluster": 0}, {"seeds": 0}, {"iterations": 0},
    {"recency_decay": -0.1}, {"max_item_age_days": 0.0}, {"max_projection_dims": 0},
])
def test_invalid_configs_are_refused(options: dict) -> None:
    with pytest.raises(ConfigError):
        ClusterRetriever(ClusterConfig(**options)).fit(make_planted_data(n_users_per_group=2, items_per_group=4))
