"""The contract of every ANN index: one ``search(queries, k) -> (scores, ids)``.

An index maps external int64 ids (item indices, say) to float32 vectors and
answers maximum-inner-product queries. Every implementation returns the same
shapes: ``(Q, k)`` scores, best first, padded with ``-inf``, and ``(Q, k)`` ids
padded with ``-1``, so a caller never branches on the index type. Approximate
indexes are judged by :func:`recall_at_k` against exact search (faiss
``contrib/evaluation.py`` does the same), never on their own.

Input checks live here, at the edge, so every index rejects the same bad input
with the same :class:`ValueError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter

#: padding of :meth:`VectorIndex.search` where fewer than ``k`` items exist
MISSING_ID = -1
MISSING_SCORE = -np.inf


class VectorIndex(ABC):
    """Maximum-inner-product search over vectors keyed by external int64 ids.

    Attributes:
        kind: ``"flat"`` (exact), ``"ivf_flat"``, ``"ivf_pq"`` or ``"hnsw"``.
        dim: vector dimension ``d``.

    Ids are non-negative and unique within the index; ``-1`` is reserved for
    padding. Build one with :func:`recfunnel.index.build_index`, restore one
    with :func:`recfunnel.index.load_index`.
    """

    kind: ClassVar[str] = ""
    dim: int

    @abstractmethod
    def __len__(self) -> int:
        """Number of live (searchable) items."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items of largest inner product with each query.

        Args:
            queries: (Q, d) float vectors (converted to float32; must be finite).
            k: results per query, ``k >= 1``; may exceed ``len(self)``.

        Returns:
            ``scores`` (Q, k) float32, best first, ``-inf`` padding, and ``ids``
            (Q, k) int64 external ids, ``-1`` padding.
        """

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert new items.

        Args:
            ids: (n,) unique non-negative int64 ids not already in the index.
            vectors: (n, d) finite float vectors.

        Raises:
            ValueError: bad shapes, non-finite values, repeated or present ids
                (use :meth:`update` to replace a vector).
        """

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Delete items; ids not in the index are ignored.

        Args:
            ids: (n,) int64 ids.

        Returns:
            The number of items removed.
        """

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of ``ids`` (inserting ids not yet present): remove + add.

        Args:
            ids: (n,) unique non-negative int64 ids.
            vectors: (n, d) finite float vectors.
        """
        vectors = as_vectors(vectors, self.dim)
        ids = as_ids(ids, len(vectors))
        self.remove(ids)
        self.add(ids, vectors)

    def copy(self) -> VectorIndex:
        """An independent copy: adding to or removing from it leaves this index as it is."""
        raise NotImplementedError(f"{type(self).__name__} cannot be copied")

    @abstractmethod
    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        """Write the index as files named ``{prefix}...`` (no pickle)."""

    @classmethod
    @abstractmethod
    def load(cls, reader: ArtifactReader, prefix: str) -> VectorIndex:
        """Restore an index written by :meth:`save`, verifying it against its manifest."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, dim={self.dim}, n={len(self)})"


def as_vectors(vectors: np.ndarray, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """Validate and convert to a C-contiguous (n, d) float32 array.

    Raises:
        ValueError: not 2-D, wrong ``d``, or non-finite values (after the cast, so
            float64 values beyond float32 range are caught too).
    """
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} have dimension {arr.shape[1]}, the index has dimension {dim}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have dimension >= 1, got shape {arr.shape}")
    with np.errstate(over="ignore"):  # overflow to inf is reported just below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr).all(axis=1)).sum())
        raise ValueError(f"{name} contain NaN or infinite values (in {bad} rows, after casting to float32)")
    return arr


def as_ids(ids: np.ndarray, n: int) -> np.ndarray:
    """Validate and convert to a (n,) int64 array of unique non-negative ids.

    Raises:
        ValueError: wrong length, not integers, negative or repeated ids.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"ids must be a 1-D array of length {n} (one per vector), got shape {arr.shape}")
    if n == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"ids must be non-negative (-1 marks padding), got {int(arr.min())}")
    if len(np.unique(arr)) != n:
        raise ValueError("ids contain duplicates")
    return arr


def as_k(k: int) -> int:
    """Validate ``k`` (an int >= 1)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def padding(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) ``-inf`` scores and ``-1`` ids: the answer of an empty index."""
    return (np.full((n_queries, k), MISSING_SCORE, np.float32),
            np.full((n_queries, k), MISSING_ID, np.int64))


def recall_at_k(found_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate top-k found.

    Args:
        found_ids: (Q, k) ids from the index under test (``-1`` padding).
        exact_ids: (Q, k) ids from exact search (``-1`` padding is not counted).

    Returns:
        ``sum_q |found_q ∩ exact_q| / sum_q |exact_q|`` (1.0 when nothing is expected).

    >>> recall_at_k(np.array([[1, 2], [3, -1]]), np.array([[1, 5], [3, -1]]))
    0.6666666666666666
    """
    found_ids = np.asarray(found_ids)
    exact_ids = np.asarray(exact_ids)
    if found_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError(f"found_ids has {found_ids.shape[0]} rows, exact_ids {exact_ids.shape[0]}")
    valid = exact_ids >= 0
    expected = int(valid.sum())
    if expected == 0:
        return 1.0
    # (Q, k_exact, k_found) comparison: k is small, so this stays vectorised and cheap.
    hit = (exact_ids[:, :, None] == found_ids[:, None, :]).any(axis=2) & valid
    return float(hit.sum() / expected)
