"""Item-to-item retrieval: a user's recent items vote for their neighbours.

Every channel that learns item-item similarity (ItemCF and Swing from
co-occurrence, Item2Vec / DeepWalk / Node2vec / EGES from embeddings, content
clusters) stores it as one sparse matrix ``similarity_`` (n_items x n_items,
top-k neighbours per row) and shares this retrieval: ``scores = H @ S`` where
``H`` holds the recency weights of each user's point-in-time history, then the
request's exclusions and a per-row top-k, all on sparse matrices.

Subclasses implement ``fit`` (setting ``similarity_``); their config must have
``recency`` ("position" | "time" | "none"), ``recency_decay`` and ``half_life_days``.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from recfunnel.stages.base import Retriever
from recfunnel.stages.recall.sparse import exclusion_mask, keep_top_k_per_row, sparse_top_k
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import Candidates, RequestBatch

_SECONDS_PER_DAY = 86_400.0


class ItemToItemRetriever(Retriever):
    """Base of the channels that retrieve through a sparse item-item similarity."""

    similarity_: sp.csr_matrix

    def history_weights(self, request: RequestBatch) -> sp.csr_matrix:
        """(B, n_items) CSR recency weights of each user's history (repeats add up)."""
        cfg = self.config
        n_items = self.similarity_.shape[0]
        history = request.history
        valid = (history >= 0) & (history < n_items)
        if cfg.recency == "position":
            weight = 1.0 / (1.0 + cfg.recency_decay * np.arange(history.shape[1]))
            weight = np.broadcast_to(weight, history.shape)
        elif cfg.recency == "time":
            age_days = np.maximum(request.time[:, None] - request.history_time, 0) / _SECONDS_PER_DAY
            weight = np.exp2(-age_days / cfg.half_life_days)
        else:
            weight = np.ones(history.shape)
        rows = np.broadcast_to(np.arange(len(request))[:, None], history.shape)
        h = sp.csr_matrix((weight[valid], (rows[valid], history[valid])), shape=(len(request), n_items))
        h.sum_duplicates()
        return h

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Items most similar to each user's recent history, minus ``request.exclude``.

        Args:
            request: B users; ``history``, ``history_time``, ``time`` and ``exclude`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by ``sum_h w_h S[h, i]``; users without history
            (or whose history has no neighbours) get padding.
        """
        scores = (self.history_weights(request) @ self.similarity_).tocsr()
        scores.sum_duplicates()
        rows = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
        scores.data[exclusion_mask(request.exclude, rows, scores.indices)] = 0.0
        scores.eliminate_zeros()
        items, score = sparse_top_k(scores, k)
        return Candidates(items, score, {self.name: score})

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        s = self.similarity_
        writer.write_arrays(f"{prefix}similarity.npz", {
            "data": s.data, "indices": s.indices, "indptr": s.indptr, "shape": np.array(s.shape, np.int64),
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any,
             name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}similarity.npz")
        stage = cls(config, name)
        stage.similarity_ = sp.csr_matrix(
            (arrays["data"].astype(np.float32), arrays["indices"], arrays["indptr"]),
            shape=tuple(int(v) for v in arrays["shape"]),
        )
        return stage


def neighbours_from_vectors(vectors: np.ndarray, k: int, *, min_score: float = 0.0,
                            batch_size: int = 4096) -> sp.csr_matrix:
    """(n, n) CSR of each row's ``k`` most similar rows by inner product (self excluded).

    Exact search with faiss (``IndexFlatIP``) in batches; L2-normalise ``vectors``
    first for cosine similarity. Scores at or below ``min_score`` are dropped.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    kk = min(k + 1, n)
    rows, cols, vals = [], [], []
    for start in range(0, n, batch_size):
        scores, ids = index.search(vectors[start:start + batch_size], kk)
        r = np.repeat(np.arange(start, start + len(ids)), kk)
        c = ids.ravel()
        v = scores.ravel()
        keep = (c >= 0) & (c != r) & (v > min_score)
        rows.append(r[keep])
        cols.append(c[keep])
        vals.append(v[keep])
    m = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n))
    return keep_top_k_per_row(m, k)
