"""Full-ranking evaluation: lists from scores, metric aggregation, the results table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.evaluation import metrics as M
from recfunnel.evaluation.topk import (
    evaluate_topk,
    format_table,
    full_ranking_evaluate,
    full_ranking_topk,
)


def csr(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float64))


class TestEvaluateTopK:
    # 3 users, 5 items; user 2 has no held-out item and must not count
    REC = np.array([[0, 1, 2], [3, 0, -1], [4, 4, 4]])
    REL = csr([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])

    def test_hand_values(self):
        r = evaluate_topk(self.REC, self.REL, ks=(1, 3), n_items=5)
        assert r["n_users"] == 2
        # @1: user 0 item 0 miss, user 1 item 3 miss
        assert r["recall@1"] == 0.0 and r["hit_rate@1"] == 0.0 and r["mrr"] == pytest.approx((1 / 2 + 1 / 2) / 2)
        # @3: user 0 hits {1} of {1, 4} -> 1/2; user 1 hits {0} of {0} -> 1
        assert r["recall@3"] == pytest.approx(0.75)
        assert r["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
        assert r["hit_rate@3"] == 1.0
        # AP: user 0 (1/2) / 2, user 1 (1/2) / 1
        assert r["map@3"] == pytest.approx((0.25 + 0.5) / 2)
        # NDCG: user 0 (1/log2 3) / (1 + 1/log2 3); user 1 (1/log2 3) / 1
        u0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
        assert r["ndcg@3"] == pytest.approx((u0 + 1 / math.log2(3)) / 2)
        # list metrics over the two evaluated users only (user 2's item 4 is not counted)
        assert r["coverage@1"] == pytest.approx(2 / 5)  # items {0, 3}
        assert r["coverage@3"] == pytest.approx(4 / 5)  # items {0, 1, 2, 3}
        # exposure @3 over 5 items: [2, 1, 1, 1, 0] -> sorted [0,1,1,1,2]: (-4·0 - 2 + 0 + 2 + 8) / (5·5)
        assert r["gini@3"] == pytest.approx(8 / 25)

    def test_key_order_and_optional_list_metrics(self):
        r = evaluate_topk(self.REC, self.REL, ks=(3, 1), n_items=5)
        assert list(r) == [
            "recall@1", "precision@1", "hit_rate@1", "ndcg@1", "map@1",
            "recall@3", "precision@3", "hit_rate@3", "ndcg@3", "map@3",
            "mrr", "coverage@1", "gini@1", "coverage@3", "gini@3", "n_users",
        ]
        full = evaluate_topk(
            self.REC, self.REL, ks=(3,), n_items=5,
            item_popularity=np.array([0.5, 0.25, 0.25, 0.125, 0.5]),
            item_category=np.array([0, 0, 1, 1, 2]),
            item_vectors=np.eye(5),
        )
        # novelty: user 0 (1 + 2 + 2)/3, user 1 (3 + 1)/2
        assert full["novelty@3"] == pytest.approx((5 / 3 + 2) / 2)
        # categories: user 0 [0, 0, 1] -> 2/3, user 1 [1, 0] -> 1
        assert full["diversity_category@3"] == pytest.approx((2 / 3 + 1) / 2)
        assert full["diversity_vector@3"] == pytest.approx(1.0)  # orthogonal items

    def test_equals_mean_of_per_user_metrics(self):
        rng = np.random.default_rng(1)
        rec = rng.integers(-1, 30, size=(40, 10))
        rel = sp.random(40, 30, density=0.1, format="csr", random_state=2)
        r = evaluate_topk(rec, rel, ks=(5, 10), n_items=30)
        assert r["n_users"] == int((np.diff(rel.indptr) > 0).sum())
        assert r["ndcg@5"] == pytest.approx(np.nanmean(M.ndcg_at_k(rec, rel, 5)))
        assert r["recall@10"] == pytest.approx(np.nanmean(M.recall_at_k(rec, rel, 10)))

    def test_no_evaluable_user(self):
        r = evaluate_topk(np.array([[0, 1]]), sp.csr_matrix((1, 3)), ks=(2,), n_items=3)
        assert r["n_users"] == 0
        assert all(math.isnan(v) for key, v in r.items() if key != "n_users")

    def test_validation(self):
        with pytest.raises(ValueError, match="largest k"):
            evaluate_topk(self.REC, self.REL, ks=(10,), n_items=5)
        with pytest.raises(ValueError, match="positive"):
            evaluate_topk(self.REC, self.REL, ks=(0,), n_items=5)
        with pytest.raises(ValueError, match="columns"):
            evaluate_topk(self.REC, self.REL, ks=(1,), n_items=6)


class TestFullRankingTopK:
    def test_excludes_and_ranks(self):
        scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
        exclude = csr([[0, 1, 0, 0], [0, 0, 0, 0]])
        assert full_ranking_topk(scores, exclude, 2).tolist() == [[3, 2], [0, 1]]
        assert full_ranking_topk(scores, None, 2).tolist() == [[1, 3], [0, 1]]

    def test_ties_prefer_lower_index_even_at_the_cut(self):
        scores = np.array([[1.0, 2.0, 1.0, 1.0, 1.0, 2.0], [0.0] * 6])
        # row 0: the two 2.0s, then the lowest-indexed 1.0s; row 1: all tied
        assert full_ranking_topk(scores, None, 4).tolist() == [[1, 5, 0, 2], [0, 1, 2, 3]]
        big = np.zeros((3, 1000))
        big[:, 500:] = 1.0
        assert full_ranking_topk(big, None, 3).tolist() == [[500, 501, 502]] * 3

    def test_padding_nan_inf_and_no_mutation(self):
        scores = np.array([[0.3, np.nan, -np.inf, 0.1]], dtype=np.float32)
        before = scores.copy()
        exclude = csr([[0, 0, 0, 1]])
        # only item 0 is eligible; the list is -1 padded to k even beyond n_items
        assert full_ranking_topk(scores, exclude, 6).tolist() == [[0, -1, -1, -1, -1, -1]]
        np.testing.assert_array_equal(scores, before)

    def test_explicit_zero_in_exclude_is_not_excluded(self):
        exclude = sp.csr_matrix((np.array([0.0]), (np.array([0]), np.array([0]))), shape=(1, 2))
        assert full_ranking_topk(np.array([[1.0, 0.5]]), exclude, 1).tolist() == [[0]]

    def test_integer_scores_and_validation(self):
        assert full_ranking_topk(np.array([[1, 3, 2]]), None, 2).tolist() == [[1, 2]]
        with pytest.raises(ValueError, match="shape"):
            full_ranking_topk(np.zeros((2, 3)), csr([[1, 0]]), 1)
        with pytest.raises(ValueError, match="k"):
            full_ranking_topk(np.zeros((2, 3)), None, 0)


class TestFullRankingEvaluate:
    def setup_method(self):
        rng = np.random.default_rng(3)
        self.n_users, self.n_items = 50, 40
        self.train = sp.random(self.n_users, self.n_items, density=0.15, format="csr", random_state=4)
        test = sp.random(self.n_users, self.n_items, density=0.05, format="csr", random_state=5)
        self.test = sp.csr_matrix(test - test.multiply(self.train > 0))  # held-out items are unseen
        self.test.eliminate_zeros()
        self.user_scores = rng.normal(size=(self.n_users, self.n_items))

    def score_fn(self, users: np.ndarray) -> np.ndarray:
        return self.user_scores[users]

    def test_matches_evaluate_topk_and_batching(self):
        users = np.arange(self.n_users)
        expected = evaluate_topk(
            full_ranking_topk(self.user_scores, self.train, 10), self.test, (5, 10), n_items=self.n_items,
            item_category=np.arange(self.n_items) % 3,
        )
        for batch_size in (1, 7, 1024):
            got = full_ranking_evaluate(
                self.score_fn, users, self.train, self.test, (5, 10), batch_size=batch_size,
                item_category=np.arange(self.n_items) % 3,
            )
            assert got.keys() == expected.keys()
            for key in expected:
                assert got[key] == pytest.approx(expected[key]), key

    def test_skips_users_without_test_items(self):
        seen = []

        def score_fn(users: np.ndarray) -> np.ndarray:
            seen.extend(users.tolist())
            return self.user_scores[users]

        r = full_ranking_evaluate(score_fn, np.arange(self.n_users), self.train, self.test, (5,))
        with_test = np.flatnonzero(np.diff(self.test.indptr) > 0)
        assert sorted(seen) == with_test.tolist()
        assert r["n_users"] == len(with_test)

    def test_training_items_never_recommended(self):
        # scorer that loves training items: they are excluded, so a perfect test scorer wins
        scores = self.train.toarray() * 10 + self.test.toarray()
        r = full_ranking_evaluate(lambda u: scores[u], np.arange(self.n_users), self.train, self.test, (10,))
        assert r["hit_rate@10"] == 1.0

    def test_bad_score_shape(self):
        with pytest.raises(ValueError, match="score_fn returned shape"):
            full_ranking_evaluate(lambda u: np.zeros((len(u), 3)), np.arange(5), self.train, self.test, (5,))


def test_format_table():
    results = {
        "itempop": {"recall@10": 0.12345, "ndcg@10": 0.1, "n_users": 1200},
        "als": {"recall@10": 0.3, "ndcg@10": float("nan")},
    }
    assert format_table(results, ["recall@10", "ndcg@10", "n_users"]) == (
        "| model   | recall@10 | ndcg@10 | n_users |\n"
        "|:--------|----------:|--------:|--------:|\n"
        "| itempop |    0.1235 |  0.1000 |    1200 |\n"
        "| als     |    0.3000 |     nan |       - |"
    )
