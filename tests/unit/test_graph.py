"""Behaviour sequences, the item graph and random walks (DeepWalk, node2vec)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

from recfunnel.data.graph import Sequences, item_graph, random_walks, user_sequences, walk_corpus
from recfunnel.data.interactions import Interactions

HOUR = 3_600


def _interactions(users, items, times) -> Interactions:
    users, items, times = (np.asarray(a, np.int64) for a in (users, items, times))
    return Interactions(users, items, times, np.ones(len(users), np.float32),
                        int(users.max()) + 1, int(items.max()) + 1)


def _as_lists(seqs: Sequences) -> list[list[int]]:
    return [seqs.items[a:b].tolist() for a, b in zip(seqs.indptr[:-1], seqs.indptr[1:], strict=True)]


def _grid(side: int) -> sp.csr_matrix:
    """Undirected side x side lattice, unit weights."""
    node = np.arange(side * side).reshape(side, side)
    src = np.r_[node[:, :-1].ravel(), node[:-1, :].ravel()]
    dst = np.r_[node[:, 1:].ravel(), node[1:, :].ravel()]
    g = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(side * side,) * 2)
    return (g + g.T).tocsr()


def test_user_sequences_order_ties_and_sessions() -> None:
    # user 0: items 3, 1 at the same time (row order wins), then 2 after a 30 h gap; user 1: 5, 4
    inter = _interactions([1, 0, 0, 0, 1], [4, 3, 1, 2, 5], [10, 0, 0, 30 * HOUR, 5])
    assert _as_lists(user_sequences(inter, session_gap_hours=24)) == [[3, 1], [2], [5, 4]]
    assert _as_lists(user_sequences(inter, session_gap_hours=None)) == [[3, 1, 2], [5, 4]]
    assert _as_lists(user_sequences(inter, session_gap_hours=40)) == [[3, 1, 2], [5, 4]]


def test_item_graph_counts_direction_and_self_loops() -> None:
    seqs = Sequences(np.array([0, 1, 0, 1, 1, 2]), np.array([0, 4, 6]))  # [0 1 0 1], [1 2]
    directed = item_graph(seqs, 4, directed=True).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 0], expected[1, 2] = 2, 1, 1
    np.testing.assert_array_equal(directed, expected)
    np.testing.assert_array_equal(item_graph(seqs, 4, directed=False).toarray(), expected + expected.T)
    repeated = item_graph(Sequences(np.array([3, 3, 3]), np.array([0, 3])), 4)
    assert repeated.nnz == 0  # consecutive repeats are not edges


def test_sequences_take_and_keep() -> None:
    seqs = Sequences(np.array([1, 2, 3, 4, 5]), np.array([0, 2, 2, 5]))
    assert _as_lists(seqs.take(np.array([2, 0]))) == [[3, 4, 5], [1, 2]]
    assert _as_lists(seqs.keep(np.array([True, False, True, True, False]))) == [[1], [], [3, 4]]
    with pytest.raises(ValueError):
        Sequences(np.array([1, 2]), np.array([0, 3]))


@pytest.mark.parametrize(("weighted", "p", "q"), [(True, 1.0, 1.0), (False, 1.0, 1.0), (True, 0.25, 4.0)])
def test_walks_only_follow_edges(weighted: bool, p: float, q: float) -> None:
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 30)) < 0.1) * rng.integers(1, 5, (30, 30))
    graph = sp.csr_matrix(dense.astype(float))
    walks = random_walks(graph, np.arange(30).repeat(5), 12, rng, weighted=weighted, p=p, q=q)
    a, b = walks[:, :-1], walks[:, 1:]
    step = b >= 0
    assert (dense[a[step], b[step]] > 0).all()
    # a walk stops only at a node without out-edges, and stays stopped
    stopped = (a >= 0) & (b < 0)
    assert (dense[a[stopped]].sum(axis=1) == 0).all()
    assert not ((a < 0) & (b >= 0)).any()


def test_weighted_walks_follow_weights() -> None:
    weights = np.array([1.0, 2.0, 7.0])
    graph = sp.csr_matrix((weights, ([0, 0, 0], [1, 2, 3])), shape=(4, 4))
    first = random_walks(graph, np.zeros(20_000, np.int64), 2, np.random.default_rng(1))[:, 1]
    np.testing.assert_allclose(np.bincount(first, minlength=4)[1:] / len(first), weights / weights.sum(), atol=0.015)
    uniform = random_walks(graph, np.zeros(20_000, np.int64), 2, np.random.default_rng(1), weighted=False)[:, 1]
    np.testing.assert_allclose(np.bincount(uniform, minlength=4)[1:] / len(uniform), 1 / 3, atol=0.015)


def test_node2vec_second_step_has_the_biased_distribution() -> None:
    # t = 0 -> v = 1; from v: back to 0 (w 1, alpha 1/p), 2 (w 2, a neighbour of t: alpha 1),
    # 3 (w 3, not a neighbour of t: alpha 1/q)  (Grover & Leskovec 2016, eq. 3)
    edges = {(0, 1): 1.0, (0, 2): 1.0, (1, 2): 2.0, (1, 3): 3.0}
    src, dst = np.array(list(edges)).T
    w = np.array(list(edges.values()))
    graph = sp.csr_matrix((np.r_[w, w], (np.r_[src, dst], np.r_[dst, src])), shape=(4, 4))
    p, q = 0.5, 2.0
    walks = random_walks(graph, np.zeros(40_000, np.int64), 3, np.random.default_rng(2), p=p, q=q)
    via_1 = walks[walks[:, 1] == 1, 2]
    expected = np.array([1 / p * 1.0, 0.0, 1.0 * 2.0, 1 / q * 3.0])
    np.testing.assert_allclose(np.bincount(via_1, minlength=4) / len(via_1), expected / expected.sum(), atol=0.015)


def _return_rate(walks: np.ndarray) -> float:
    back = walks[:, 2:] == walks[:, :-2]
    valid = walks[:, 2:] >= 0
    return float(back[valid].mean())


def test_low_p_returns_more_often() -> None:
    graph = _grid(8)
    starts = np.tile(np.arange(64), 30)
    rates = {p: _return_rate(random_walks(graph, starts, 10, np.random.default_rng(3), p=p, q=1.0))
             for p in (0.25, 1.0, 4.0)}
    assert rates[0.25] > rates[1.0] > rates[4.0]


def test_low_q_walks_further_than_high_q() -> None:
    graph = _grid(12)
    hops = shortest_path(graph, unweighted=True)
    starts = np.tile(np.arange(144), 20)
    stats = {}
    for q in (0.25, 4.0):
        walks = random_walks(graph, starts, 10, np.random.default_rng(4), p=1.0, q=q)
        distance = hops[walks[:, 0], walks[:, -1]].mean()
        distinct = np.mean([len(np.unique(w)) for w in walks[:500]])  # a small sample; test-only loop
        stats[q] = (distance, distinct)
    assert stats[0.25][0] > stats[4.0][0] + 0.5  # DFS-like walks end further from the start
    assert stats[0.25][1] > stats[4.0][1]  # and visit more distinct nodes


def test_walk_corpus_is_seeded_and_starts_everywhere() -> None:
    graph = _grid(4)
    a = walk_corpus(graph, 3, 5, np.random.default_rng(7), p=0.5, q=2.0)
    b = walk_corpus(graph, 3, 5, np.random.default_rng(7), p=0.5, q=2.0)
    np.testing.assert_array_equal(a.items, b.items)
    starts = a.items[a.indptr[:-1]]
    np.testing.assert_array_equal(np.bincount(starts, minlength=16), np.full(16, 3))
    assert (a.lengths == 5).all()


def test_walk_arguments_are_checked() -> None:
    graph = _grid(2)
    with pytest.raises(ValueError):
        random_walks(graph, np.array([0]), 0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        random_walks(graph, np.array([0]), 3, np.random.default_rng(0), p=0.0)
    empty = random_walks(sp.csr_matrix((3, 3)), np.array([0, 2]), 3, np.random.default_rng(0))
    assert empty.tolist() == [[0, -1, -1], [2, -1, -1]]
