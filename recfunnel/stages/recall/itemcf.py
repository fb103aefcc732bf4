"""Item-based collaborative filtering (ItemCF): items liked by the same users are similar.

Fit builds a sparse item-item similarity ``S`` from co-occurrence (Sarwar et al.,
WWW 2001; the IUF user-activity penalty and max-normalisation follow Xiang Liang,
*Recommender System Practice*, ch. 2.4):

* ``c_ij = sum_u x_ui x_uj / log(1 + |I_u|)``: a user with many items says little
  about any pair of them (set ``user_activity_penalty=False`` for plain counts);
* cosine ``c_ij / sqrt(n_i n_j)`` or Jaccard ``c_ij / (n_i + n_j - n'_ij)``, with
  ``n_i`` the users of item i and ``n'_ij`` the unweighted co-occurrence count;
* the diagonal is dropped, each row keeps its ``neighbours`` best entries and is
  optionally divided by its maximum (so every history item votes on the same scale).

Retrieval reads the user's point-in-time history from the request (online events
count at once): ``scores = H @ S`` with ``H`` the recency weights of the history,
then exclusions and a per-row top-k, all on sparse matrices.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> itemcf = ItemCFRetriever(ItemCFConfig(neighbours=20)).fit(data)
>>> itemcf.similarity_.shape
(30, 30)
>>> out = itemcf.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
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
from recfunnel.stages.recall.sparse import keep_top_k_per_row

_SECONDS_PER_DAY = 86_400.0

#: multiply-adds per block of the co-occurrence product; bounds fit memory to about 1 GB
_BLOCK_PRODUCTS = 1 << 24


@dataclass(frozen=True)
class ItemCFConfig:
    """Options of :class:`ItemCFRetriever`.

    Attributes:
        similarity: "cosine" or "jaccard".
        neighbours: similar items kept per item (top-k pruning of each row of S).
        user_activity_penalty: weight each user's co-occurrences by 1 / log(1 + |I_u|) (IUF).
        recency: weight of a history item: "position" 1 / (1 + recency_decay * pos)
            (pos 0 = newest), "time" 2 ** (-age_days / half_life_days), "none" 1.
        recency_decay: slope of the "position" weights.
        half_life_days: half-life of the "time" weights.
        normalize: divide each row of S by its maximum.
        min_cooccurrence: drop pairs seen together by fewer users than this.
    """

    similarity: Literal["cosine", "jaccard"] = "cosine"
    neighbours: int = 200
    user_activity_penalty: bool = True
    recency: Literal["position", "time", "none"] = "position"
    recency_decay: float = 0.1
    half_life_days: float = 7.0
    normalize: bool = True
    min_cooccurrence: int = 1


class ItemCFRetriever(ItemToItemRetriever):
    """Items similar to the user's recent history.

    Learned attributes:
        similarity_: (n_items, n_items) CSR float32, sorted indices; row i holds
            item i's neighbours (at most ``neighbours``, no diagonal).
    """

    kind = "itemcf"

    def __init__(self, config: ItemCFConfig | None = None, name: str | None = None):
        super().__init__(config or ItemCFConfig(), name)

    def _validate(self) -> None:
        cfg = self.config
        if cfg.similarity not in ("cosine", "jaccard"):
            raise ConfigError(f"itemcf: similarity must be 'cosine' or 'jaccard', got '{cfg.similarity}'")
        if cfg.recency not in ("position", "time", "none"):
            raise ConfigError(f"itemcf: recency must be 'position', 'time' or 'none', got '{cfg.recency}'")
        if cfg.neighbours < 1 or cfg.min_cooccurrence < 1:
            raise ConfigError("itemcf: neighbours and min_cooccurrence must be >= 1")
        if cfg.recency_decay < 0 or not cfg.half_life_days > 0:
            raise ConfigError("itemcf: recency_decay must be >= 0 and half_life_days > 0")

    def fit(self, data: TrainingData) -> Self:
        """Build the pruned item-item similarity from the training positives."""
        self._validate()
        cfg = self.config
        x = data.interactions.to_csr(binary=True)  # (n_users, n_items)
        n_items = x.shape[1]
        items_per_user = np.diff(x.indptr).astype(np.float64)
        users_per_item = np.bincount(x.indices, minlength=n_items).astype(np.float64)
        if cfg.user_activity_penalty:
            user_weight = 1.0 / np.log1p(np.maximum(items_per_user, 1.0))
        else:
            user_weight = np.ones_like(items_per_user)
        x_weighted = sp.diags(user_weight) @ x
        x_by_item = x.T.tocsr()  # (n_items, n_users)
        # an unweighted count is needed for Jaccard's union and the co-occurrence threshold
        need_count = cfg.user_activity_penalty and (cfg.similarity == "jaccard" or cfg.min_cooccurrence > 1)

        # row blocks of C = X^T D X sized by their multiply-adds (sum over the item's users of |I_u|)
        cost = x_by_item @ items_per_user
        block_id = ((np.cumsum(cost) - cost) // _BLOCK_PRODUCTS).astype(np.int64)
        bounds = np.r_[0, np.flatnonzero(np.diff(block_id)) + 1, n_items]
        blocks = [  # a handful of blocks, not a loop over items
            self._similarity_rows(x_by_item[lo:hi], x, x_weighted, lo, users_per_item, need_count)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        sim = sp.vstack(blocks, format="csr")
        if cfg.normalize and sim.nnz:
            lengths = np.diff(sim.indptr)
            row_max = np.maximum.reduceat(sim.data, sim.indptr[:-1][lengths > 0])
            sim.data /= np.repeat(row_max, lengths[lengths > 0])
        sim = sp.csr_matrix(sim, dtype=np.float32)
        sim.sort_indices()
        self.similarity_ = sim
        return self

    def _similarity_rows(self, x_rows: sp.csr_matrix, x: sp.csr_matrix, x_weighted: sp.csr_matrix,
                         offset: int, users_per_item: np.ndarray, need_count: bool) -> sp.csr_matrix:
        """Pruned similarity rows ``offset .. offset + len(x_rows)`` of S."""
        cfg = self.config
        co = (x_rows @ x_weighted).tocsr()  # (block, n_items) weighted co-occurrence
        co.sum_duplicates()
        co.sort_indices()
        count = co
        if need_count:
            count = (x_rows @ x).tocsr()
            count.sum_duplicates()
            count.sort_indices()  # same sparsity as `co`: all products are positive
        rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr)) + offset
        cols = co.indices
        value = co.data.astype(np.float64)
        n_i, n_j = users_per_item[rows], users_per_item[cols]
        if cfg.similarity == "cosine":
            value = value / np.sqrt(n_i * n_j)
        else:
            value = value / (n_i + n_j - count.data)
        keep = (rows != cols) & (value > 0)
        if cfg.min_cooccurrence > 1:  # `count` is the unweighted count whenever this matters
            keep &= count.data >= cfg.min_cooccurrence
        pruned = sp.csr_matrix((value[keep], (rows[keep] - offset, cols[keep])), shape=co.shape)
        return keep_top_k_per_row(pruned, cfg.neighbours)
