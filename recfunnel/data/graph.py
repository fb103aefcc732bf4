"""Behaviour sequences, the item graph they induce, and random walks over it.

Graph-embedding retrieval (DeepWalk, Node2vec, EGES) learns item vectors from
walks on an item graph built from consecutive behaviour; Item2Vec learns them
from the behaviour sequences directly. This module holds the shared,
vectorised parts:

* :func:`user_sequences`: each user's positive items in time order (ties keep
  row order), cut into sessions where the gap between two events exceeds a
  threshold. Airbnb's listing embeddings (Grbovic & Cheng, KDD 2018, §3.1) cut
  click sessions at 30 minutes of inactivity; ratings and purchases are much
  sparser than clicks, so the default used by the channels is 24 hours.
* :func:`item_graph`: weighted CSR adjacency with an edge ``i -> j`` for every
  consecutive pair ``(i, j)`` within a session, weight = how often it occurs
  (Wang et al., *Billion-scale Commodity Embedding*, KDD 2018, §2.1, Fig. 2);
  optionally symmetrised.
* :func:`random_walks`: all walkers advance one step at a time, vectorised over
  walkers. First-order walks pick a neighbour uniformly or by edge weight
  (DeepWalk, Perozzi et al. KDD 2014); second-order walks use node2vec's
  return parameter ``p`` and in-out parameter ``q`` (Grover & Leskovec, KDD
  2016, §3.2.2) by rejection sampling (below).

Ragged collections of sequences are :class:`Sequences`: one flat ``items``
array and CSR-style ``indptr`` offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recfunnel.data.interactions import Interactions

_SECONDS_PER_HOUR = 3_600.0

#: rejection rounds after which the still-pending node2vec walkers take their last proposal
#: (a guard against pathological p, q; with the defaults a round accepts >= 1 / max(1/p, 1, 1/q))
_MAX_REJECTION_ROUNDS = 10_000


@dataclass(frozen=True)
class Sequences:
    """A ragged batch of item sequences.

    Attributes:
        items: (N,) int64 item indices of all sequences, concatenated.
        indptr: (S + 1,) int64; sequence s is ``items[indptr[s]:indptr[s + 1]]``.

    >>> seqs = Sequences.from_padded(np.array([[3, 4, -1], [5, -1, -1]]))
    >>> seqs.items.tolist(), seqs.indptr.tolist(), len(seqs)
    ([3, 4, 5], [0, 2, 3], 2)
    """

    items: np.ndarray
    indptr: np.ndarray

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or len(self.indptr) == 0 or self.indptr[0] != 0 \
                or self.indptr[-1] != len(self.items) or (np.diff(self.indptr) < 0).any():
            raise ValueError(f"Sequences.indptr is not a valid offset array for {len(self.items)} items")

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(S,) int64 length of each sequence."""
        return np.diff(self.indptr)

    @property
    def sequence_index(self) -> np.ndarray:
        """(N,) int64 the sequence each item belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    @classmethod
    def from_padded(cls, padded: np.ndarray) -> Sequences:
        """Sequences from a (S, L) array right-padded with -1 (as :func:`random_walks` returns)."""
        padded = np.asarray(padded, np.int64)
        valid = padded >= 0
        lengths = valid.sum(axis=1)
        return cls(padded[valid], np.r_[0, np.cumsum(lengths)].astype(np.int64))

    def take(self, which: np.ndarray) -> Sequences:
        """The sequences ``which`` (int indices), in that order.

        >>> Sequences(np.array([1, 2, 3]), np.array([0, 2, 3])).take(np.array([1, 0])).items.tolist()
        [3, 1, 2]
        """
        which = np.asarray(which, np.int64)
        lengths = self.lengths[which]
        indptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        # position k of the output reads items[start of its sequence + offset within it]
        offset = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], lengths)
        return Sequences(self.items[np.repeat(self.indptr[which], lengths) + offset], indptr)

    def keep(self, mask: np.ndarray) -> Sequences:
        """The same sequences with only the items where ``mask`` (N,) is true."""
        lengths = np.bincount(self.sequence_index[mask], minlength=len(self))
        return Sequences(self.items[mask], np.r_[0, np.cumsum(lengths)].astype(np.int64))


def user_sequences(interactions: Interactions, session_gap_hours: float | None = 24.0) -> Sequences:
    """Each user's items in time order, cut into sessions.

    Args:
        interactions: positive events; events of a user are ordered by timestamp,
            ties by their row order.
        session_gap_hours: a new session starts when the gap to the user's previous
            event is larger than this; None keeps one sequence per user.

    Returns:
        Sequences, one per (user, session), ordered by user then time.

    >>> inter = Interactions(np.array([0, 0, 0, 1]), np.array([5, 6, 7, 8]),
    ...                      np.array([0, 3600, 200_000, 10]), np.ones(4, np.float32), 2, 9)
    >>> seqs = user_sequences(inter, session_gap_hours=24)
    >>> [seqs.items[a:b].tolist() for a, b in zip(seqs.indptr[:-1], seqs.indptr[1:])]
    [[5, 6], [7], [8]]
    """
    n = len(interactions)
    order = np.lexsort((np.arange(n), interactions.timestamp, interactions.user_index))
    users = interactions.user_index[order]
    times = interactions.timestamp[order]
    starts = np.ones(n, bool)
    if n > 1:
        new_session = users[1:] != users[:-1]
        if session_gap_hours is not None:
            new_session |= (times[1:] - times[:-1]) > session_gap_hours * _SECONDS_PER_HOUR
        starts[1:] = new_session
    indptr = np.r_[np.flatnonzero(starts), n].astype(np.int64) if n else np.zeros(1, np.int64)
    return Sequences(interactions.item_index[order].astype(np.int64), indptr)


def item_graph(sequences: Sequences, n_items: int, *, directed: bool = True) -> sp.csr_matrix:
    """Weighted item graph from consecutive items of the sequences.

    Args:
        sequences: behaviour sequences (sessions).
        n_items: number of nodes.
        directed: keep ``i -> j`` only; otherwise ``W + W^T`` (an undirected graph, as
            DeepWalk and node2vec assume).

    Returns:
        (n_items, n_items) CSR float64 with sorted indices; ``W[i, j]`` counts how often
        ``j`` directly followed ``i`` in a session. Self-loops (an item repeated) are dropped.

    >>> g = item_graph(Sequences(np.array([0, 1, 2, 0, 1]), np.array([0, 3, 5])), 3)
    >>> g.toarray().tolist()
    [[0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    items = sequences.items
    seq = sequences.sequence_index
    same = seq[1:] == seq[:-1] if len(items) > 1 else np.zeros(0, bool)
    src, dst = items[:-1][same], items[1:][same]
    keep = src != dst
    graph = sp.csr_matrix((np.ones(int(keep.sum())), (src[keep], dst[keep])), shape=(n_items, n_items))
    if not directed:
        graph = (graph + graph.T).tocsr()
    graph.sum_duplicates()
    graph.sort_indices()
    return graph


class _NeighbourSampler:
    """Vectorised neighbour sampling and edge lookup on a CSR graph."""

    def __init__(self, graph: sp.csr_matrix, weighted: bool):
        graph = sp.csr_matrix(graph, dtype=np.float64)
        graph.sum_duplicates()
        graph.sort_indices()
        self.n = graph.shape[0]
        self.indptr = graph.indptr.astype(np.int64)
        self.indices = graph.indices.astype(np.int64)
        self.degree = np.diff(self.indptr)
        self.weighted = weighted
        # a global running sum of edge weights: a row's edges occupy one interval of it, so a
        # weighted pick is one uniform draw in that interval and one binary search (O(log E))
        self.cumulative = np.cumsum(graph.data)
        self.row_start = np.r_[0.0, self.cumulative][self.indptr[:-1]]
        self.row_total = np.r_[0.0, self.cumulative][self.indptr[1:]] - self.row_start
        # (row, column) packed into one sorted int64 key per edge for membership tests
        rows = np.repeat(np.arange(self.n, dtype=np.int64), self.degree)
        self.edge_keys = rows * self.n + self.indices

    def sample(self, nodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One neighbour of each node (every node must have out-degree > 0)."""
        u = rng.random(len(nodes))
        if self.weighted:
            target = self.row_start[nodes] + u * self.row_total[nodes]
            edge = np.searchsorted(self.cumulative, target, side="right")
            # float round-off may land one slot outside the row's interval
            edge = np.clip(edge, self.indptr[nodes], self.indptr[nodes + 1] - 1)
        else:
            edge = self.indptr[nodes] + np.minimum((u * self.degree[nodes]).astype(np.int64),
                                                   self.degree[nodes] - 1)
        return self.indices[edge]

    def has_edge(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """True where the edge ``src -> dst`` exists."""
        if len(self.edge_keys) == 0:
            return np.zeros(len(src), bool)
        keys = src * self.n + dst
        pos = np.minimum(np.searchsorted(self.edge_keys, keys), len(self.edge_keys) - 1)
        return self.edge_keys[pos] == keys


def random_walks(
    graph: sp.csr_matrix,
    starts: np.ndarray,
    length: int,
    rng: np.random.Generator,
    *,
    weighted: bool = True,
    p: float = 1.0,
    q: float = 1.0,
) -> np.ndarray:
    """Random walks from ``starts``, all walkers advancing together.

    First-order walks (``p == q == 1``) move from ``v`` to a neighbour ``x`` with
    probability proportional to ``w_vx`` (or uniformly when ``weighted`` is false).
    Second-order walks follow node2vec (Grover & Leskovec 2016, eq. 2-3): having
    come from ``t`` to ``v``, the next node ``x`` has unnormalised probability
    ``alpha(t, x) * w_vx`` with ``alpha = 1/p`` if ``x == t`` (return), ``1`` if
    ``t -> x`` is an edge (stay near ``t``, BFS-like) and ``1/q`` otherwise (move
    outward, DFS-like when ``q < 1``). Rather than precomputing an alias table per
    edge (memory O(sum of squared degrees)) each walker proposes ``x`` from the
    first-order distribution and accepts it with probability
    ``alpha(t, x) / max(1/p, 1, 1/q)``, retrying the rejected walkers (rejection
    sampling as in KnightKing, Yang et al. SOSP 2019, and the ``use_rejection_sampling``
    walker of shenweichen/GraphEmbedding); the accepted ``x`` then has exactly the
    node2vec distribution, and a round accepts at least ``min(alpha) / max(alpha)`` of
    the walkers, so extreme p or q cost more rounds. The first step has no ``t`` and
    is first-order.

    Args:
        graph: (n, n) CSR adjacency, non-negative weights; rows are out-edges.
        starts: (W,) int64 start nodes.
        length: nodes per walk, the start included (>= 1).
        rng: numpy random generator (the only source of randomness).
        weighted: pick neighbours by edge weight (otherwise uniformly).
        p: node2vec return parameter (> 0); low p returns to the previous node more often.
        q: node2vec in-out parameter (> 0); low q moves away from the previous node.

    Returns:
        (W, length) int64 walks; a walk that reaches a node without out-edges stops
        there and is padded with -1.

    >>> g = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]]))
    >>> random_walks(g, np.array([0, 2]), 4, np.random.default_rng(0)).tolist()
    [[0, 1, 2, -1], [2, -1, -1, -1]]
    """
    if length < 1:
        raise ValueError(f"walk length must be >= 1, got {length}")
    if not (p > 0 and q > 0):
        raise ValueError(f"node2vec p and q must be > 0, got p={p}, q={q}")
    sampler = _NeighbourSampler(graph, weighted)
    starts = np.asarray(starts, np.int64)
    walks = np.full((len(starts), length), -1, np.int64)
    walks[:, 0] = starts
    second_order = not (p == 1.0 and q == 1.0)
    alpha_max = max(1.0 / p, 1.0, 1.0 / q)
    for step in range(1, length):  # a loop over walk steps; every step is vectorised over walkers
        current = walks[:, step - 1]
        alive = np.flatnonzero(current >= 0)
        alive = alive[sampler.degree[current[alive]] > 0]
        if len(alive) == 0:
            break
        nodes = current[alive]
        if not second_order or step == 1:
            walks[alive, step] = sampler.sample(nodes, rng)
            continue
        previous = walks[alive, step - 2]
        chosen = np.empty(len(alive), np.int64)
        pending = np.arange(len(alive))
        for _ in range(_MAX_REJECTION_ROUNDS):
            proposal = sampler.sample(nodes[pending], rng)
            prev = previous[pending]
            alpha = np.where(proposal == prev, 1.0 / p,
                             np.where(sampler.has_edge(prev, proposal), 1.0, 1.0 / q))
            accept = rng.random(len(pending)) * alpha_max < alpha
            chosen[pending[accept]] = proposal[accept]
            pending = pending[~accept]
            if len(pending) == 0:
                break
        else:
            chosen[pending] = sampler.sample(nodes[pending], rng)
        walks[alive, step] = chosen
    return walks


def walk_corpus(
    graph: sp.csr_matrix,
    walks_per_node: int,
    walk_length: int,
    rng: np.random.Generator,
    *,
    weighted: bool = True,
    p: float = 1.0,
    q: float = 1.0,
) -> Sequences:
    """``walks_per_node`` walks from every node with out-edges, in random order.

    Args:
        graph: (n, n) CSR adjacency.
        walks_per_node: walks started at each node (DeepWalk's gamma).
        walk_length: nodes per walk (DeepWalk's t).
        rng: numpy random generator.
        weighted, p, q: see :func:`random_walks`.

    Returns:
        Sequences of the walks (shorter where a walk hit a dead end).
    """
    nodes = np.flatnonzero(np.diff(sp.csr_matrix(graph).indptr) > 0).astype(np.int64)
    starts = rng.permutation(np.tile(nodes, walks_per_node))
    walks = random_walks(graph, starts, walk_length, rng, weighted=weighted, p=p, q=q)
    return Sequences.from_padded(walks)


__all__ = ["Sequences", "item_graph", "random_walks", "user_sequences", "walk_corpus"]
