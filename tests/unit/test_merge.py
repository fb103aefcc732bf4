"""merge_candidates: quotas, dedup, reciprocal-rank fusion, provenance, fallback."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.stages.recall.merge import (
    FALLBACK,
    RRF_K,
    channel_provenance,
    exclusion_mask,
    keep_top_k_per_row,
    merge_candidates,
    sparse_top_k,
)
from recfunnel.types import Candidates


def cands(items: list[list[int]], scores: list[list[float]] | None = None) -> Candidates:
    item_index = np.array(items, np.int64)
    if scores is None:  # descending scores, -inf at padding
        scores = np.where(item_index >= 0, 10.0 - np.arange(item_index.shape[1]), -np.inf)
    return Candidates(item_index, np.asarray(scores, np.float32))


def rrf(*ranks: int) -> float:
    return sum(1.0 / (RRF_K + r) for r in ranks)


def test_rrf_order_by_hand() -> None:
    a = cands([[1, 2, 3]], [[0.9, 0.8, 0.7]])
    b = cands([[3, 4, 1]], [[50.0, 40.0, 30.0]])
    merged = merge_candidates({"a": a, "b": b}, {"a": 3, "b": 3}, k=10)
    # 1: ranks a1 b3; 3: a3 b1 (same fused score, a found 1 first); 2: a2; 4: b2 (tie, a first)
    assert merged.item_index.tolist() == [[1, 3, 2, 4]]
    np.testing.assert_allclose(merged.score[0], [rrf(1, 3), rrf(3, 1), rrf(2), rrf(2)], rtol=1e-6)


def test_quotas_limit_each_channel() -> None:
    a = cands([[1, 2, 3, 4]])
    b = cands([[5, 6, 7, 8]])
    merged = merge_candidates({"a": a, "b": b}, {"a": 1, "b": 2}, k=10)
    assert sorted(merged.item_index[0].tolist()) == [1, 5, 6]
    # a channel without a quota contributes everything
    assert merge_candidates({"a": a}, {}, k=10).item_index.shape == (1, 4)


def test_dedup_and_provenance_nan_pattern() -> None:
    a = cands([[1, 2], [7, -1]], [[0.9, 0.5], [0.3, -np.inf]])
    b = cands([[2, 3], [-1, -1]], [[5.0, 4.0], [-np.inf, -np.inf]])
    merged = merge_candidates({"a": a, "b": b}, {"a": 2, "b": 2}, k=5)
    assert merged.item_index.tolist() == [[2, 1, 3], [7, -1, -1]]
    np.testing.assert_allclose(merged.channel_scores["a"], [[0.5, 0.9, np.nan], [0.3, np.nan, np.nan]], rtol=1e-6)
    np.testing.assert_array_equal(merged.channel_scores["b"], [[5.0, np.nan, 4.0], [np.nan] * 3])
    assert np.isneginf(merged.score[1, 1:]).all()
    assert channel_provenance(merged).tolist() == [[3, 1, 2], [1, 0, 0]]
    assert channel_provenance(merged, ["b", "a"]).tolist() == [[3, 2, 1], [2, 0, 0]]


def test_truncates_to_k() -> None:
    merged = merge_candidates({"a": cands([[1, 2, 3]]), "b": cands([[4, 5, 6]])}, {}, k=2)
    assert merged.item_index.tolist() == [[1, 4]]


def test_fallback_fills_short_rows_to_k() -> None:
    a = cands([[1, 2, -1], [4, 5, 6]])
    fallback = cands([[2, 9, 8, 7]])  # one row, broadcast to every user
    merged = merge_candidates({"a": a}, {"a": 3}, k=4, fallback=fallback)
    assert merged.item_index.tolist() == [[1, 2, 9, 8], [4, 5, 6, 2]]
    filled = ~np.isnan(merged.channel_scores[FALLBACK])
    assert filled.tolist() == [[False, False, True, True], [False, False, False, True]]
    np.testing.assert_array_equal(merged.channel_scores[FALLBACK][0, 2:], [9.0, 8.0])
    # fallback items score below every channel item, still in fallback order
    assert (np.diff(merged.score, axis=1) <= 0).all()
    assert (merged.score[filled] < 0).all() and (merged.score[~filled] > 0).all()
    assert channel_provenance(merged, ["a", FALLBACK]).tolist() == [[1, 1, 2, 2], [1, 1, 1, 2]]


def test_fallback_alone_and_per_user() -> None:
    empty = Candidates.empty(2)
    fallback = cands([[3, 3, 4], [5, -1, -1]])  # duplicates inside the fallback are skipped
    merged = merge_candidates({"a": empty}, {"a": 5}, k=3, fallback=fallback)
    assert merged.item_index.tolist() == [[3, 4], [5, -1]]


def test_reserved_name_and_batch_mismatch() -> None:
    with pytest.raises(ValueError):
        merge_candidates({FALLBACK: cands([[1]])}, {}, k=1)
    with pytest.raises(ValueError):
        merge_candidates({"a": cands([[1]]), "b": cands([[1], [2]])}, {}, k=1)


def test_vectorised_merge_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(0)
    b, n_items = 40, 30
    channels = {}
    for name, width in (("x", 8), ("y", 6), ("z", 5)):
        items = np.stack([rng.choice(n_items, width, replace=False) for _ in range(b)])
        items[rng.random((b, width)) < 0.2] = -1
        items = np.sort(np.where(items < 0, n_items + 1, items), axis=1)  # push padding to the end
        items[items > n_items] = -1
        channels[name] = cands(items.tolist())
    quotas = {"x": 5, "y": 6, "z": 3}
    merged = merge_candidates(channels, quotas, k=7)
    for row in range(b):
        fused: dict[int, float] = {}
        first: dict[int, int] = {}
        pos = 0
        for name, cand in channels.items():
            for rank, item in enumerate(cand.item_index[row, : quotas[name]].tolist(), start=1):
                if item >= 0:
                    fused[item] = fused.get(item, 0.0) + 1.0 / (RRF_K + rank)
                    first.setdefault(item, pos)
                pos += 1
        expected = sorted(fused, key=lambda i: (-round(fused[i], 9), first[i]))[:7]
        got = merged.item_index[row][merged.valid[row]].tolist()
        assert got == expected


def test_exclusion_mask_and_sparse_top_k() -> None:
    ex = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0]]))
    mask = exclusion_mask(ex, np.array([[0], [1]]), np.array([[0, 1, 2, 7, -1], [0, 1, 2, 7, -1]]))
    assert mask.tolist() == [[True, False, True, False, False], [False] * 5]
    m = sp.csr_matrix(np.array([[1.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    cols, vals = sparse_top_k(m, 2)
    assert cols.tolist() == [[1, 2], [-1, -1]]
    assert keep_top_k_per_row(m, 1).toarray().tolist() == [[0.0, 2.0, 0.0, 0.0], [0.0] * 4]
