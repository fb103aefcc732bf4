"""MMRReRanker: item similarity from features and greedy MMR with a sliding window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.rerank.mmr import MMRConfig, MMRReRanker
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.synthetic import make_planted_data
from recfunnel.types import Candidates, RequestBatch


def fit_on(items: pd.DataFrame, **options) -> MMRReRanker:
    """An MMR re-ranker fitted on an item table (ids "0".."n-1" keep their order)."""
    interactions = pd.DataFrame({"user_id": "u", "item_id": items.index[:1], "timestamp": [0]})
    data = build_training_data(interactions, items=items)
    return MMRReRanker(MMRConfig(**{"max_distinct_ratio": 1.0, **options})).fit(data)


def request(b: int) -> RequestBatch:
    return RequestBatch(np.zeros(b, np.int64), np.zeros(b, np.int64), np.full((b, 1), -1),
                        np.zeros((b, 1), np.int64), sp.csr_matrix((b, 1)))


def ranked(items: list[list[int]], scores: list[list[float]]) -> Candidates:
    score = np.asarray(scores, np.float32)
    return Candidates(np.asarray(items, np.int64), score, {"itemcf": score.copy()}, {"rank": score.copy()})


# A and B share a category and tag t1; C shares nothing with them
THREE = pd.DataFrame(
    {"category": ["x", "x", "y"], "tags": [("t1", "t2"), ("t1",), ("t3",)]},
    index=pd.Index(["0", "1", "2"], name="item_id"),
)
SIM_AB = (1.0 + 1.0 / np.sqrt(2.0)) / 2.0  # mean of the category and tags cosines


def test_similarity_by_hand() -> None:
    mmr = fit_on(THREE)
    assert mmr.feature_columns_ == ["category", "tags"]
    sim = mmr.pairwise_similarity(np.array([[0, 1, 2, -1]]))[0]
    expected = np.array([[1, SIM_AB, 0, 0], [SIM_AB, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(sim, expected, rtol=1e-6, atol=1e-7)


def test_three_candidates_by_hand() -> None:
    mmr = fit_on(THREE, relevance_weight=0.5)
    # relevance after min-max: A 1, B 0.6, C 0
    out = mmr.rerank(request(1), ranked([[0, 1, 2]], [[1.0, 0.8, 0.5]]), k=3)
    assert out.item_index.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(out.stage_scores["rerank"][0], [0.5, 0.0, 0.5 * 0.6 - 0.5 * SIM_AB], rtol=1e-6)
    # score keeps the ranker's relevance; other scores travel with their items
    np.testing.assert_allclose(out.score[0], [1.0, 0.5, 0.8])
    np.testing.assert_allclose(out.stage_scores["rank"][0], [1.0, 0.5, 0.8])
    np.testing.assert_allclose(out.channel_scores["itemcf"][0], [1.0, 0.5, 0.8])
    # a higher relevance weight keeps B second: 0.7 * 0.6 - 0.3 * SIM_AB > 0
    out = fit_on(THREE, relevance_weight=0.7).rerank(request(1), ranked([[0, 1, 2]], [[1.0, 0.8, 0.5]]), k=3)
    assert out.item_index.tolist() == [[0, 1, 2]]


def test_theta_one_keeps_the_ranked_order() -> None:
    data = make_planted_data()
    mmr = MMRReRanker(MMRConfig(relevance_weight=1.0)).fit(data)
    rng = np.random.default_rng(0)
    items = np.stack([rng.permutation(data.n_items)[:12] for _ in range(5)])
    scores = -np.sort(-rng.random((5, 12)), axis=1)
    out = mmr.rerank(request(5), ranked(items.tolist(), scores.tolist()), k=8)
    np.testing.assert_array_equal(out.item_index, items[:, :8])


def test_near_duplicates_get_separated() -> None:
    data = make_planted_data()  # items 0..14 are group 0, 15..29 group 1
    mmr = MMRReRanker(MMRConfig(relevance_weight=0.5)).fit(data)
    out = mmr.rerank(request(2), ranked([[0, 1, 2, 20], [25, 26, 3, 4]],
                                        [[1.0, 0.99, 0.98, 0.5], [1.0, 0.99, 0.9, 0.8]]), k=4)
    assert out.item_index.tolist() == [[0, 20, 1, 2], [25, 3, 26, 4]]


WINDOWED = pd.DataFrame({"category": ["a", "b", "a", "c"]}, index=pd.Index(["0", "1", "2", "3"], name="item_id"))


@pytest.mark.parametrize(("window", "expected"), [(1, [0, 1, 2, 3]), (None, [0, 1, 3, 2]), (2, [0, 1, 3, 2])])
def test_window_limits_the_similarity_to_recent_choices(window: int | None, expected: list[int]) -> None:
    # after A, B: A2 resembles A (two slots back) only; C is weakly relevant but new
    mmr = fit_on(WINDOWED, relevance_weight=0.5, window=window)
    out = mmr.rerank(request(1), ranked([[0, 1, 2, 3]], [[1.0, 0.9, 0.8, 0.1]]), k=4)
    assert out.item_index[0].tolist() == expected


def test_padding_is_never_chosen() -> None:
    mmr = fit_on(THREE, relevance_weight=0.3)
    cands = ranked([[0, 1, -1, -1], [-1, -1, -1, -1]],
                   [[1.0, 0.5, -np.inf, -np.inf], [-np.inf] * 4])
    out = mmr.rerank(request(2), cands, k=3)
    assert out.item_index.tolist() == [[0, 1, -1], [-1, -1, -1]]
    assert np.isneginf(out.score[~out.valid]).all()
    assert np.isneginf(out.stage_scores["rerank"][~out.valid]).all()
    assert np.isnan(out.channel_scores["itemcf"][~out.valid]).all()


def test_without_features_the_order_is_kept() -> None:
    data = build_training_data(pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [0, 1]}))
    mmr = MMRReRanker(MMRConfig(relevance_weight=0.1)).fit(data)
    assert mmr.feature_columns_ == []
    out = mmr.rerank(request(1), ranked([[1, 0, 5]], [[3.0, 2.0, 1.0]]), k=3)  # 5: unknown item
    assert out.item_index.tolist() == [[1, 0, 5]]


def test_unusable_columns_are_skipped_and_content_is_used() -> None:
    n = 40
    items = pd.DataFrame({
        "title": [f"title {i}" for i in range(n)],  # unique: no similarity signal
        "category": [f"c{i % 4}" for i in range(n)],
        "price": np.arange(n, dtype=float),  # numeric but not content_*: unused
        "content_0": np.r_[np.ones(n // 2), -np.ones(n // 2)],
        "content_1": np.r_[np.ones(n // 2), -np.ones(n // 2)],
    }, index=pd.Index([f"{i:02d}" for i in range(n)], name="item_id"))
    interactions = pd.DataFrame({"user_id": ["u"], "item_id": ["00"], "timestamp": [0]})
    mmr = MMRReRanker().fit(build_training_data(interactions, items=items))
    assert mmr.feature_columns_ == ["category", "content_0,content_1"]
    sim = mmr.pairwise_similarity(np.array([[0, 4, 1, 20]]))[0]
    # same category and same content: 1; same content only: 0.5; opposite content: clipped to 0
    np.testing.assert_allclose(sim[0], [1.0, 1.0, 0.5, 0.0], atol=1e-6)


def test_save_load_roundtrip(tmp_path) -> None:
    mmr = fit_on(THREE, relevance_weight=0.5)
    with ArtifactWriter(tmp_path / "m", kind="mmr") as writer:
        mmr.save(writer, "rerank/")
    loaded = MMRReRanker.load(ArtifactReader(tmp_path / "m"), "rerank/", mmr.config)
    cands = ranked([[2, 1, 0]], [[1.0, 0.9, 0.8]])
    a, b = mmr.rerank(request(1), cands, k=3), loaded.rerank(request(1), cands, k=3)
    np.testing.assert_array_equal(a.item_index, b.item_index)
    np.testing.assert_array_equal(a.stage_scores["rerank"], b.stage_scores["rerank"])
    assert loaded.feature_columns_ == mmr.feature_columns_


def test_rejects_bad_config() -> None:
    with pytest.raises(ConfigError):
        fit_on(THREE, relevance_weight=1.5)
    with pytest.raises(ConfigError):
        fit_on(THREE, window=0)
