"""Swing: item-item similarity from user pairs that "swing" between two items.

Yang et al., "Large Scale Product Graph Construction for Recommendation in
E-commerce" (Alibaba, 2020), eq. (1) with the user weights of §3.1; seed 004's
"Swing 模型" calls it ItemCF with a different similarity. Two users who both took
items i and j vote for (i, j), and the vote is worth less the more the two users
already have in common (a clique of near-identical users, or one community, is
one piece of evidence, not many):

    sim(i, j) = sum_{u in U_i ∩ U_j} sum_{v in U_i ∩ U_j, v != u} w_u * w_v / (alpha + |I_u ∩ I_v|)
    w_u = 1 / (|I_u| + user_alpha) ** user_beta

Defaults: ``alpha = 1``, ``user_alpha = 5``, ``user_beta = 0.3`` (the paper's
smoothing; a user with many items is a weaker witness, as with ItemCF's IUF).

Vectorised fit (no loop over pairs): every user pair (u, v) with overlap
``c_uv = |I_u ∩ I_v|`` adds ``coef_uv = 2 w_u w_v / (alpha + c_uv)`` (2: the sum runs
over ordered pairs) to every pair of their common items, so with ``Z`` the
(pairs x items) indicator of common items, ``S = Z^T diag(coef) Z``. The triples
(u, v, item) that make up ``Z`` are enumerated item by item (each item's users,
sorted, paired with the users after them), in blocks of users sized to a fixed
number of triples; a pair's overlap is the number of its triples. Pairs sharing a
single item only feed the diagonal and are dropped at once. ``S`` is then built in
blocks of item rows, each pruned to its ``neighbours`` best entries (as ItemCF).

Cost and memory are bounded by two caps, as production Swing does: each user keeps
their ``max_user_items`` most recent items and each item its ``max_item_users`` most
recent users. Triples are at most ``sum_i C(min(|U_i|, max_item_users), 2)``; the
similarity is exact for the capped graph (``|I_u|`` in ``w_u`` is the user's full,
uncapped activity). Peak memory is one block of triples (about 2**21, some 120 MB)
plus ``Z`` for the pairs that share at least two items (about 24 bytes per entry,
twice: by pair and by item), plus one block of similarity rows and the pruned ``S``.
The graph is binary (event weights are not used). Measured on 2 shared cores: 20k users
x 10k items x 500k power-law events fit in about 5 s (22M triples before the
``c_uv >= 2`` filter, 7.5M after, peak RSS 0.55 GB); 150k users x 1M items x 500k events
also about 5 s (peak RSS 0.67 GB, most of it the data itself).

Retrieval, save and load are :class:`ItemToItemRetriever`'s: ``scores = H @ S`` from
the request's recency-weighted point-in-time history.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> swing = SwingRetriever(SwingConfig(neighbours=20)).fit(data)
>>> swing.similarity_.shape
(30, 30)
>>> out = swing.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
>>> bool((out.item_index[0] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError
from recfunnel.stages.recall.item2item import ItemToItemRetriever
from recfunnel.stages.recall.usercf import latest_unique_events, rank_within, top_k_rows

#: (u, v, item) triples enumerated per block of users; ~60 bytes each at the peak
_BLOCK_TRIPLES = 1 << 21
#: multiply-adds per block of similarity rows (as ItemCF)
_BLOCK_PRODUCTS = 1 << 24


@dataclass(frozen=True)
class SwingConfig:
    """Options of :class:`SwingRetriever`.

    Attributes:
        alpha: smoothing of the pair weight ``1 / (alpha + |I_u ∩ I_v|)``; > 0.
        user_alpha: smoothing of the user weight ``1 / (|I_u| + user_alpha) ** user_beta``.
        user_beta: exponent of the user weight (0: every user counts the same).
        neighbours: similar items kept per item (top-k pruning of each row of S).
        max_user_items: each user's most recent distinct items used (None: all).
        max_item_users: each item's most recent users used (None: all).
        recency: weight of a history item at retrieval: "position" 1 / (1 + recency_decay * pos)
            (pos 0 = newest), "time" 2 ** (-age_days / half_life_days), "none" 1.
        recency_decay: slope of the "position" weights.
        half_life_days: half-life of the "time" weights.
        normalize: divide each row of S by its maximum (every history item votes on one scale).
    """

    alpha: float = 1.0
    user_alpha: float = 5.0
    user_beta: float = 0.3
    neighbours: int = 200
    max_user_items: int | None = 200
    max_item_users: int | None = 500
    recency: Literal["position", "time", "none"] = "position"
    recency_decay: float = 0.1
    half_life_days: float = 7.0
    normalize: bool = True


class SwingRetriever(ItemToItemRetriever):
    """Items similar, by Swing, to the user's recent history.

    Learned attributes:
        similarity_: (n_items, n_items) CSR float32, sorted indices; row i holds item i's
            neighbours (at most ``neighbours``, no diagonal).
    """

    kind = "swing"

    def __init__(self, config: SwingConfig | None = None, name: str | None = None):
        super().__init__(config or SwingConfig(), name)

    def _validate(self) -> None:
        cfg = self.config
        if cfg.recency not in ("position", "time", "none"):
            raise ConfigError(f"swing: recency must be 'position', 'time' or 'none', got '{cfg.recency}'")
        if cfg.neighbours < 1:
            raise ConfigError(f"swing: neighbours must be >= 1, got {cfg.neighbours}")
        if not cfg.alpha > 0 or cfg.user_alpha < 0 or cfg.user_beta < 0:
            raise ConfigError("swing: alpha must be > 0, user_alpha and user_beta >= 0")
        for field in ("max_user_items", "max_item_users"):
            value = getattr(cfg, field)
            if value is not None and value < 2:
                raise ConfigError(f"swing: {field} must be >= 2 or None, got {value}")
        if cfg.recency_decay < 0 or not cfg.half_life_days > 0:
            raise ConfigError("swing: recency_decay must be >= 0 and half_life_days > 0")

    def fit(self, data: TrainingData) -> Self:
        """Build the pruned Swing similarity from the training positives."""
        self._validate()
        cfg = self.config
        n_users, n_items = data.n_users, data.n_items
        user, item, time = latest_unique_events(data.interactions)  # newest first per user
        activity = np.bincount(user, minlength=n_users).astype(np.float64)
        user_weight = (activity + cfg.user_alpha) ** -cfg.user_beta
        if cfg.max_user_items is not None:
            keep = rank_within(user) < cfg.max_user_items
            user, item, time = user[keep], item[keep], time[keep]
        if cfg.max_item_users is not None:
            order = np.lexsort((user, -time, item))
            keep = order[rank_within(item[order]) < cfg.max_item_users]
            user, item = user[keep], item[keep]
        z_weighted, overlap = self._common_items(user, item, user_weight, n_users, n_items)
        sim = self._similarity(z_weighted, overlap)
        if cfg.normalize and sim.nnz:
            lengths = np.diff(sim.indptr)
            row_max = np.maximum.reduceat(sim.data, sim.indptr[:-1][lengths > 0])
            sim.data /= np.repeat(row_max, lengths[lengths > 0])
        sim = sp.csr_matrix(sim, dtype=np.float32)
        sim.sort_indices()
        self.similarity_ = sim
        return self

    def _common_items(self, user: np.ndarray, item: np.ndarray, user_weight: np.ndarray,
                      n_users: int, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
        """``diag(coef) Z`` for the user pairs that share at least two items.

        Args:
            user, item: (E,) distinct (user, item) edges of the capped graph.
            user_weight: (n_users,) ``w_u``.
            n_users, n_items: sizes of the index spaces.

        Returns:
            (z_weighted, overlap): z_weighted (P, n_items) CSR whose row p holds
            ``coef_p = 2 w_u w_v / (alpha + c_uv)`` at each common item of the pair
            p = (u, v), u < v; overlap (P,) float64 ``c_uv`` (the stored entries per row).
        """
        order = np.lexsort((user, item))  # each item's users, ascending
        user_sorted = user[order].astype(np.int32)
        item_sorted = item[order].astype(np.int32)
        users_of_item = np.bincount(item_sorted, minlength=n_items)
        # the edge at rank r of an item with n users opens the pairs with its n - 1 - r later users
        later = (users_of_item[item_sorted] - 1 - rank_within(item_sorted)).astype(np.int64)
        cost = np.bincount(user_sorted, weights=later, minlength=n_users)
        block_id = ((np.cumsum(cost) - cost) // _BLOCK_TRIPLES).astype(np.int64)
        bounds = np.r_[0, np.flatnonzero(np.diff(block_id)) + 1, n_users]
        by_user = np.argsort(user_sorted, kind="stable").astype(np.int32)
        first_of_user = np.searchsorted(user_sorted[by_user], bounds)
        items, coefs, overlaps = [], [], []
        for b, lo in enumerate(bounds[:-1]):  # blocks of users
            edges = by_user[first_of_user[b]:first_of_user[b + 1]]
            edges = edges[later[edges] > 0]
            count = later[edges]
            first = np.repeat(edges, count)
            second = first + 1 + rank_within(np.repeat(np.arange(len(edges), dtype=np.int32), count))
            # (u - lo, v) as one sortable key; u < v because users ascend within an item
            key = (user_sorted[first] - np.int64(lo)) * n_users + user_sorted[second]
            by_pair = np.argsort(key)
            key, first = key[by_pair], first[by_pair]
            starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
            overlap = np.diff(np.r_[starts, len(key)])
            # a pair sharing one item only ever adds to the diagonal, which is dropped
            shared = overlap >= 2
            items.append(item_sorted[first[np.repeat(shared, overlap)]])
            pair_key = key[starts[shared]]
            pu, pv = pair_key // n_users + lo, pair_key % n_users
            c = overlap[shared].astype(np.float64)
            coefs.append(2.0 * user_weight[pu] * user_weight[pv] / (self.config.alpha + c))
            overlaps.append(c)
        overlap = np.concatenate(overlaps) if overlaps else np.zeros(0)
        coef = np.concatenate(coefs) if coefs else np.zeros(0)
        # the triples are grouped by pair, pairs in block order: CSR rows directly, no COO sort
        indptr = np.r_[0, np.cumsum(overlap.astype(np.int64))]
        indices = np.concatenate(items) if items else np.zeros(0, np.int32)
        return sp.csr_matrix((np.repeat(coef, overlap.astype(np.int64)), indices, indptr),
                             shape=(len(overlap), n_items)), overlap

    def _similarity(self, z_weighted: sp.csr_matrix, overlap: np.ndarray) -> sp.csr_matrix:
        """``S = Z^T diag(coef) Z`` in blocks of item rows, diagonal dropped, rows pruned."""
        n_items = z_weighted.shape[1]
        z_by_item = sp.csr_matrix((np.ones(z_weighted.nnz, np.float32), z_weighted.indices, z_weighted.indptr),
                                  shape=z_weighted.shape).T.tocsr()  # (n_items, P) binary
        # a row's multiply-adds: the overlaps of the pairs that hold the item
        cost = z_by_item @ overlap
        block_id = ((np.cumsum(cost) - cost) // _BLOCK_PRODUCTS).astype(np.int64)
        bounds = np.r_[0, np.flatnonzero(np.diff(block_id)) + 1, n_items]
        blocks = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):  # blocks of item rows
            co = (z_by_item[lo:hi] @ z_weighted).tocsr()  # a product has no duplicates
            rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
            co.data[co.indices == rows + lo] = 0.0
            co.eliminate_zeros()
            blocks.append(top_k_rows(co, self.config.neighbours))
        if not blocks:
            return sp.csr_matrix((n_items, n_items))
        return sp.vstack(blocks, format="csr")
