"""Approximate nearest-neighbour indexes: one ``search(queries, k) -> (scores, ids)`` for all.

Maximum inner product over external int64 ids, ``-1`` / ``-inf`` padding, add,
update and remove without a rebuild (tombstones for HNSW), atomic save/load
through :mod:`recfunnel.storage.artifacts`. Approximate kinds are measured by
:func:`recall_at_k` against the exact ``flat`` index.

>>> import numpy as np
>>> from recfunnel.index import build_index
>>> index = build_index(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([10, 20]))
>>> index.update(np.array([10]), np.array([[0.0, 3.0]]))
>>> index.search(np.array([[0.0, 1.0]]), k=3)[1].tolist()
[[10, 20, -1]]
"""

from __future__ import annotations

from recfunnel.index.base import VectorIndex, recall_at_k
from recfunnel.index.faiss_index import (
    INDEX_KINDS,
    FaissIndex,
    FlatIndex,
    FlatParams,
    HNSWIndex,
    HNSWParams,
    IVFFlatIndex,
    IVFFlatParams,
    IVFPQIndex,
    IVFPQParams,
    build_index,
    load_index,
)

__all__ = [
    "INDEX_KINDS",
    "FaissIndex",
    "FlatIndex",
    "FlatParams",
    "HNSWIndex",
    "HNSWParams",
    "IVFFlatIndex",
    "IVFFlatParams",
    "IVFPQIndex",
    "IVFPQParams",
    "VectorIndex",
    "build_index",
    "load_index",
    "recall_at_k",
]
