"""Metric functions on hand-computed cases, edge cases and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.evaluation import metrics as M

LOG2_3 = math.log2(3)
LOG2_4 = 2.0


def csr(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float64))


# 3 users, 6 items.
#   user 0: relevant {1, 4};        list [1, 2, 4, -1]  -> hits at ranks 1 and 3
#   user 1: relevant {0, 2, 3, 5};  list [5, 0, 0, 1]   -> hits at ranks 1, 2 (rank 3 repeats item 0)
#   user 2: no relevant item        -> NaN everywhere
REC = np.array([[1, 2, 4, -1], [5, 0, 0, 1], [0, 1, 2, 3]], dtype=np.int64)
REL = csr([[0, 1, 0, 0, 1, 0], [1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]])


def assert_close(actual: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(actual, np.array(expected, dtype=np.float64), rtol=1e-12, equal_nan=True)


class TestTopK:
    def test_recall(self):
        # user 0: 2 hits / 2 relevant; user 1: 2 hits / 4 relevant (duplicate item 0 counts once)
        assert_close(M.recall_at_k(REC, REL), [1.0, 0.5, math.nan])
        # @2: user 0 hits {1} -> 1/2; user 1 hits {5, 0} -> 2/4
        assert_close(M.recall_at_k(REC, REL, k=2), [0.5, 0.5, math.nan])

    def test_recall_uses_full_relevant_count(self):
        # 4 relevant, K = 1, one hit -> 1/4 (not 1/min(4, 1))
        assert_close(M.recall_at_k(np.array([[0]]), csr([[1, 1, 1, 1]])), [0.25])

    def test_precision(self):
        # hits / K with K = 4 (padding counts as a miss)
        assert_close(M.precision_at_k(REC, REL), [0.5, 0.5, math.nan])
        assert_close(M.precision_at_k(REC, REL, k=1), [1.0, 1.0, math.nan])
        # k wider than the list: denominator is still k -> 2 / 10
        assert_close(M.precision_at_k(REC, REL, k=10), [0.2, 0.2, math.nan])

    def test_hit_rate(self):
        assert_close(M.hit_rate_at_k(REC, REL), [1.0, 1.0, math.nan])
        # shifted lists, first slot only: user 0 -> item 2 (miss), user 1 -> item 0 (hit)
        assert_close(M.hit_rate_at_k(REC[:, 1:], REL, k=1), [0.0, 1.0, math.nan])

    def test_ndcg_binary(self):
        # user 0: DCG = 1 + 1/log2(4); IDCG (2 relevant) = 1 + 1/log2(3)
        u0 = (1 + 1 / LOG2_4) / (1 + 1 / LOG2_3)
        # user 1: DCG = 1 + 1/log2(3); IDCG (min(4, 4) = 4) = 1 + 1/log2 3 + 1/2 + 1/log2 5
        u1 = (1 + 1 / LOG2_3) / (1 + 1 / LOG2_3 + 0.5 + 1 / math.log2(5))
        assert_close(M.ndcg_at_k(REC, REL), [u0, u1, math.nan])

    def test_ndcg_ideal_uses_min_rel_k(self):
        # 3 relevant, k = 1, hit at rank 1 -> DCG = IDCG = 1
        assert_close(M.ndcg_at_k(np.array([[0, 5]]), csr([[1, 1, 1, 0, 0, 0]]), k=1), [1.0])

    def test_ndcg_graded(self):
        # relevance: item 0 -> 1, item 1 -> 3. List [0, 1] (worse item first).
        rel = csr([[1, 3, 0]])
        rec = np.array([[0, 1]])
        # linear: DCG = 1 + 3/log2 3, IDCG = 3 + 1/log2 3
        assert_close(M.ndcg_at_k(rec, rel, gain="linear"), [(1 + 3 / LOG2_3) / (3 + 1 / LOG2_3)])
        # exponential: gains 1 and 7
        assert_close(M.ndcg_at_k(rec, rel, gain="exponential"), [(1 + 7 / LOG2_3) / (7 + 1 / LOG2_3)])
        # binary ignores the values: both relevant, both found -> 1
        assert_close(M.ndcg_at_k(rec, rel), [1.0])
        with pytest.raises(ValueError, match="gain"):
            M.ndcg_at_k(rec, rel, gain="cubic")  # type: ignore[arg-type]

    def test_map(self):
        # user 0: hits at ranks 1, 3 -> (1/1 + 2/3) / min(2, 4)
        # user 1: hits at ranks 1, 2 -> (1/1 + 2/2) / min(4, 4)
        assert_close(M.map_at_k(REC, REL), [(1 + 2 / 3) / 2, 2 / 4, math.nan])
        # @2: user 0 -> (1/1) / min(2, 2); user 1 -> (1 + 1) / min(4, 2)
        assert_close(M.map_at_k(REC, REL, k=2), [0.5, 1.0, math.nan])

    def test_mrr(self):
        # first hit: user 0 rank 1, user 1 rank 1; shifted lists: user 0 -> item 4 at rank 2
        assert_close(M.mrr(REC, REL), [1.0, 1.0, math.nan])
        assert_close(M.mrr(REC[:, 1:], REL), [0.5, 1.0, math.nan])
        # no hit within the list -> 0
        assert_close(M.mrr(np.array([[3, -1]]), csr([[1, 0, 0, 0]])), [0.0])

    def test_padding_and_empty_lists(self):
        rel = csr([[1, 0, 0], [0, 1, 0]])
        all_padding = np.full((2, 3), -1, np.int64)
        empty = np.zeros((2, 0), np.int64)
        for rec in (all_padding, empty):
            for fn in (M.recall_at_k, M.precision_at_k, M.hit_rate_at_k, M.ndcg_at_k, M.map_at_k, M.mrr):
                assert_close(fn(rec, rel), [0.0, 0.0])

    def test_no_relevant_anywhere(self):
        rel = sp.csr_matrix((2, 4))
        for fn in (M.recall_at_k, M.ndcg_at_k, M.map_at_k, M.mrr):
            assert np.isnan(fn(np.array([[0, 1], [2, 3]]), rel)).all()

    def test_explicit_zeros_are_not_relevant(self):
        rel = sp.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 0]), np.array([0, 2]))), shape=(1, 3))
        # item 0 stored with value 0: |rel| = 1, the hit is item 2 at rank 2
        assert_close(M.recall_at_k(np.array([[0, 2]]), rel), [1.0])
        assert_close(M.mrr(np.array([[0, 2]]), rel), [0.5])

    def test_sparse_array_input(self):
        assert_close(M.recall_at_k(REC, sp.csr_array(REL)), [1.0, 0.5, math.nan])

    def test_validation(self):
        with pytest.raises(ValueError, match="rows"):
            M.recall_at_k(REC, REL[:2])
        with pytest.raises(ValueError, match="n_items"):
            M.recall_at_k(np.array([[9]]), csr([[1, 0]]))
        with pytest.raises(ValueError, match="U, K"):
            M.recall_at_k(np.array([1, 2]), csr([[1, 0]]))

    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def test_matches_loop_reference(self, data):
        n_items = data.draw(st.integers(1, 8))
        n_users = data.draw(st.integers(1, 5))
        width = data.draw(st.integers(0, 6))
        rec = np.array(
            data.draw(st.lists(st.lists(st.integers(-1, n_items - 1), min_size=width, max_size=width),
                               min_size=n_users, max_size=n_users)),
            dtype=np.int64,
        ).reshape(n_users, width)
        dense = np.array(data.draw(st.lists(st.lists(st.integers(0, 3), min_size=n_items, max_size=n_items),
                                            min_size=n_users, max_size=n_users)), dtype=np.float64)
        k = data.draw(st.integers(1, 7))
        rel = sp.csr_matrix(dense)
        got = {
            "recall": M.recall_at_k(rec, rel, k), "precision": M.precision_at_k(rec, rel, k),
            "ndcg": M.ndcg_at_k(rec, rel, k, gain="linear"), "map": M.map_at_k(rec, rel, k),
            "mrr": M.mrr(rec, rel, k),
        }
        for u in range(n_users):
            relevant = {i: dense[u, i] for i in range(n_items) if dense[u, i] > 0}
            if not relevant:
                assert all(np.isnan(v[u]) for v in got.values())
                continue
            seen, gains = set(), []
            for item in rec[u, :k].tolist():
                gains.append(relevant.get(item, 0.0) if item >= 0 and item not in seen else 0.0)
                seen.add(item)
            hits = [g > 0 for g in gains]
            ideal = sorted(relevant.values(), reverse=True)[:k]
            dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
            idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
            ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h)
            first = next((r for r, h in enumerate(hits) if h), None)
            assert got["recall"][u] == pytest.approx(sum(hits) / len(relevant))
            assert got["precision"][u] == pytest.approx(sum(hits) / k)
            assert got["ndcg"][u] == pytest.approx(dcg / idcg)
            assert got["map"][u] == pytest.approx(ap / min(len(relevant), k))
            assert got["mrr"][u] == pytest.approx(0.0 if first is None else 1 / (first + 1))


class TestListMetrics:
    def test_coverage(self):
        # items {0, 1, 3} of 5 appear
        assert M.catalogue_coverage(np.array([[0, 1], [3, -1], [1, 0]]), 5) == pytest.approx(0.6)
        assert M.catalogue_coverage(np.zeros((0, 3), np.int64), 5) == 0.0
        with pytest.raises(ValueError):
            M.catalogue_coverage(np.array([[5]]), 5)

    def test_exposure_counts(self):
        assert M.exposure_counts(np.array([[0, 1], [1, -1]]), 3).tolist() == [1, 2, 0]

    def test_item_popularity(self):
        # 4 users; item 0 seen by 2 users (one of them twice), item 1 by 1, item 2 by none
        train = sp.csr_matrix((np.ones(4), (np.array([0, 0, 1, 3]), np.array([0, 0, 0, 1]))), shape=(4, 3))
        assert M.item_popularity(train).tolist() == [0.5, 0.25, 0.0]

    def test_novelty(self):
        p = np.array([0.5, 0.25, 0.125, 0.0])
        # list [0, 1, 2] -> (1 + 2 + 3) / 3; list [3] -> p = 0 floored at min positive 0.125 -> 3 bits
        got = M.novelty(np.array([[0, 1, 2], [3, -1, -1], [-1, -1, -1]]), p)
        assert_close(got, [2.0, 3.0, math.nan])
        with pytest.raises(ValueError):
            M.novelty(np.array([[0]]), np.zeros(2))

    def test_diversity_category(self):
        cats = np.array([0, 0, 1, 2])
        rec = np.array([[0, 1, 2, 3], [0, 1, -1, -1], [2, -1, -1, -1]])
        # list 0: 6 pairs, only (0, 1) share a category -> 5/6; list 1: 1 pair, same -> 0; list 2: <2 items
        assert_close(M.intra_list_diversity(rec, item_category=cats), [5 / 6, 0.0, math.nan])

    def test_diversity_vector(self):
        vecs = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]])
        # list [0, 1, 2]: 1 - cos = 1 (0,1), 2 (0,2), 1 (1,2) -> 4/3
        # list [0, 3]: zero vector -> cosine 0 -> 1;  list [0, 0]: the same item twice -> 0
        rec = np.array([[0, 1, 2], [0, 3, -1], [0, 0, -1]])
        assert_close(M.intra_list_diversity(rec, item_vectors=vecs), [4 / 3, 1.0, 0.0])

    def test_diversity_needs_exactly_one_input(self):
        with pytest.raises(ValueError, match="exactly one"):
            M.intra_list_diversity(np.array([[0, 1]]))
        with pytest.raises(ValueError, match="exactly one"):
            M.intra_list_diversity(np.array([[0, 1]]), np.array([0, 1]), np.eye(2))

    def test_diversity_chunks_agree(self):
        rng = np.random.default_rng(0)
        rec = rng.integers(-1, 50, size=(3000, 30))
        vecs = rng.normal(size=(50, 200))  # forces several chunks
        got = M.intra_list_diversity(rec, item_vectors=vecs)
        u = 2999
        items = rec[u][rec[u] >= 0]
        n = vecs[items] / np.linalg.norm(vecs[items], axis=1, keepdims=True)
        iu = np.triu_indices(len(items), 1)
        assert got[u] == pytest.approx(np.mean(1 - (n @ n.T)[iu]))

    def test_gini(self):
        # sorted [0, 0, 0, 4]: (3·4) / (4·4) = 0.75 = (n - 1)/n
        assert M.gini_coefficient(np.array([4, 0, 0, 0])) == pytest.approx(0.75)
        assert M.gini_coefficient(np.array([2, 2, 2])) == pytest.approx(0.0)
        # sorted [1, 3]: (-1·1 + 1·3) / (2·4) = 0.25
        assert M.gini_coefficient(np.array([3, 1])) == pytest.approx(0.25)
        assert math.isnan(M.gini_coefficient(np.zeros(3)))

    def test_exposure_gini(self):
        # counts over 4 items: [2, 1, 1, 0] -> sorted [0, 1, 1, 2]: (-3·0 - 1·1 + 1·1 + 3·2) / (4·4)
        assert M.exposure_gini(np.array([[0, 1], [0, 2]]), 4) == pytest.approx(6 / 16)
        assert math.isnan(M.exposure_gini(np.full((2, 2), -1), 4))


def brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


class TestClassification:
    def test_auc_hand(self):
        # positives 0.8, 0.9 vs negatives 0.1, 0.8: pairs 1, 0.5, 1, 1 -> 3.5/4
        assert M.auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.8, 0.9])) == pytest.approx(0.875)
        assert M.auc(np.array([1, 0]), np.array([0.9, 0.1])) == 1.0
        assert M.auc(np.array([1, 0]), np.array([0.1, 0.9])) == 0.0
        assert M.auc(np.array([True, False, True]), np.array([3, 3, 3])) == 0.5  # all tied

    def test_auc_one_class_or_empty(self):
        assert M.auc(np.array([1, 1]), np.array([0.2, 0.3])) == 0.5
        assert M.auc(np.array([0]), np.array([0.2])) == 0.5
        assert M.auc(np.array([]), np.array([])) == 0.5

    def test_auc_validation(self):
        with pytest.raises(ValueError, match="binary"):
            M.auc(np.array([0, 2]), np.array([0.1, 0.2]))
        with pytest.raises(ValueError, match="NaN"):
            M.auc(np.array([0, 1]), np.array([0.1, np.nan]))
        with pytest.raises(ValueError, match="entries"):
            M.auc(np.array([0, 1, 1]), np.array([0.1, 0.2]))

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 4)), min_size=1, max_size=30))
    def test_auc_matches_pairwise(self, pairs):
        y = np.array([p[0] for p in pairs])
        s = np.array([p[1] for p in pairs], dtype=np.float64)  # few values -> many ties
        assert M.auc(y, s) == pytest.approx(brute_auc(y, s))

    def test_gauc_hand(self):
        # user 7: AUC 1 (2 samples); user 3: positive 0.5 vs negatives 0.5 (tie), 0.9 -> 0.25 (3 samples)
        # user 5: one class -> skipped
        user = np.array([7, 3, 7, 3, 3, 5])
        y = np.array([1, 1, 0, 0, 0, 1])
        s = np.array([0.9, 0.5, 0.2, 0.5, 0.9, 0.1])
        assert M.gauc(user, y, s) == pytest.approx((2 * 1.0 + 3 * 0.25) / 5)
        assert M.gauc(user, y, s, weight="uniform") == pytest.approx((1.0 + 0.25) / 2)

    def test_gauc_no_valid_user(self):
        assert math.isnan(M.gauc(np.array([1, 2]), np.array([1, 0]), np.array([0.3, 0.4])))
        assert math.isnan(M.gauc(np.array([]), np.array([]), np.array([])))
        with pytest.raises(ValueError, match="weight"):
            M.gauc(np.array([1]), np.array([1]), np.array([0.1]), weight="clicks")  # type: ignore[arg-type]

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 3)), min_size=1, max_size=40))
    def test_gauc_matches_per_user_auc(self, rows):
        user = np.array([r[0] for r in rows])
        y = np.array([r[1] for r in rows])
        s = np.array([r[2] for r in rows], dtype=np.float64)
        num = den = 0.0
        for u in np.unique(user):
            m = user == u
            if 0 < y[m].sum() < m.sum():
                num += m.sum() * brute_auc(y[m], s[m])
                den += m.sum()
        got = M.gauc(user, y, s)
        if den == 0:
            assert math.isnan(got)
        else:
            assert got == pytest.approx(num / den)

    def test_logloss(self):
        # -(ln 0.8 + ln(1 - 0.4)) / 2
        assert M.logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
        # clipped: a certain mistake costs -ln(eps)
        assert M.logloss(np.array([1]), np.array([0.0]), eps=1e-7) == pytest.approx(-math.log(1e-7))
        assert M.logloss(np.array([0]), np.array([1.0]), eps=1e-7) == pytest.approx(-math.log(1e-7), rel=1e-6)
        # soft label 0.5 with p = 0.5 -> ln 2
        assert M.logloss(np.array([0.5]), np.array([0.5])) == pytest.approx(math.log(2))
        assert math.isnan(M.logloss(np.array([]), np.array([])))
        with pytest.raises(ValueError):
            M.logloss(np.array([2]), np.array([0.5]))
