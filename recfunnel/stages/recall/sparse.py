"""Sparse candidate plumbing every retrieval channel shares.

* :func:`exclusion_mask`: which (row, item) pairs a request excludes.
* :func:`sparse_top_k` / :func:`keep_top_k_per_row`: per-row top-k of a sparse
  matrix, as padded dense blocks (how sparse channels such as ItemCF turn scores
  into candidates) or as a pruned sparse matrix (neighbour lists).

Everything is vectorised over rows; no Python loop runs per user or per item.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recfunnel.types import PAD


def exclusion_mask(exclude: sp.spmatrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """True where ``items[...]`` is excluded for the request row ``rows[...]``.

    Args:
        exclude: (B, n) sparse; a stored non-zero at (b, i) excludes item i for row b.
            Items at or beyond ``n`` are never excluded.
        rows: int array of request rows, broadcastable with ``items``.
        items: int array of item indices (any shape); -1 padding is never excluded.

    Returns:
        bool array of the broadcast shape of ``rows`` and ``items``.

    >>> ex = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0]]))
    >>> exclusion_mask(ex, np.arange(2)[:, None], np.array([[0, 1], [0, 1]])).tolist()
    [[False, True], [True, False]]
    """
    rows, items = np.broadcast_arrays(np.asarray(rows, np.int64), np.asarray(items, np.int64))
    ex = sp.csr_matrix(exclude)
    if ex.nnz == 0 or items.size == 0:
        return np.zeros(items.shape, bool)
    ex_rows = np.repeat(np.arange(ex.shape[0], dtype=np.int64), np.diff(ex.indptr))
    stored = ex.data != 0
    # pack (row, item) into one int64 key so membership is a single sorted lookup
    span = np.int64(max(ex.shape[1], int(items.max()) + 1, 1))
    ex_keys = np.sort(ex_rows[stored] * span + ex.indices[stored])  # duplicates are harmless
    keys = rows * span + items
    pos = np.minimum(np.searchsorted(ex_keys, keys), len(ex_keys) - 1)
    return (ex_keys[pos] == keys) & (items >= 0)


#: entries of the dense block one top-k pass works on (bounds memory to ~100 MB)
_BLOCK_ENTRIES = 1 << 22


def _row_top_k(m: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row, rank, column, value) of the k best stored entries of each row, by row then rank.

    Rows are visited in order of length and cut into blocks padded to the block's
    longest row, so a few long rows among many short ones (a similarity matrix of a
    power-law catalogue) never pad the short ones. A block's top-k is exact with the
    lower column first among ties, because CSR rows hold their columns in ascending
    order (``m`` must have sorted indices).
    """
    counts = np.diff(m.indptr)
    n_rows = m.shape[0]
    if k <= 0 or m.nnz == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, np.zeros(0, m.dtype)
    by_length = np.argsort(counts, kind="stable")
    sorted_counts = counts[by_length]
    parts: list[tuple[np.ndarray, ...]] = []
    start = int(np.searchsorted(sorted_counts, 1))  # empty rows have nothing to keep
    while start < n_rows:
        # rows are sorted by length, so a block's padded area (rows x its last row's
        # length) grows with its end: take the longest block within the budget
        ends = np.arange(start + 1, min(n_rows, start + _BLOCK_ENTRIES) + 1)
        area = (ends - start) * sorted_counts[ends - 1]
        end = start + max(1, int(np.searchsorted(area, _BLOCK_ENTRIES, side="right")))
        rows = by_length[start:end]
        width = int(sorted_counts[end - 1])
        offsets = np.arange(width)
        c = counts[rows]
        valid = offsets[None, :] < c[:, None]
        pos = np.minimum(m.indptr[rows][:, None] + offsets[None, :], m.nnz - 1)
        vals = np.where(valid, m.data[pos], -np.inf)
        r, rank, cols, values = _block_top_k(vals, valid, pos, k, 0, m)
        parts.append((rows[r], rank, cols, values))
        start = end
    row, rank, cols, values = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.lexsort((rank, row))
    return row[order], rank[order], cols[order], values[order]


def _block_top_k(vals: np.ndarray, valid: np.ndarray, pos: np.ndarray, k: int, row_offset: int,
                 m: sp.csr_matrix) -> tuple[np.ndarray, ...]:
    """Top-k of each row of a padded dense block (columns ascending along axis 1).

    argpartition finds each row's k-th value t in linear time; entries above t are
    kept, and among entries equal to t the leftmost (lowest columns) fill the
    remaining places, which is exactly what a full stable sort would keep. Only
    the kept (rows x k) entries are then sorted.
    """
    width = vals.shape[1]
    kk = min(k, width)
    if kk < width:
        kth = -np.partition(-vals, kk - 1, axis=1)[:, kk - 1:kk]
        above = vals > kth
        need = kk - above.sum(axis=1, keepdims=True)
        tie = (vals == kth) & valid
        keep = above | (tie & (np.cumsum(tie, axis=1) <= need))
        keep &= valid
    else:
        keep = valid
    slot = np.cumsum(keep, axis=1) - 1
    r, c = np.nonzero(keep)
    kept_vals = np.full((vals.shape[0], kk), -np.inf)
    kept_pos = np.zeros((vals.shape[0], kk), np.int64)
    kept_valid = np.zeros((vals.shape[0], kk), bool)
    kept_vals[r, slot[r, c]] = vals[r, c]
    kept_pos[r, slot[r, c]] = pos[r, c]
    kept_valid[r, slot[r, c]] = True
    order = np.argsort(-kept_vals, axis=1, kind="stable")  # kept slots are in column order: ties stay put
    take_valid = np.take_along_axis(kept_valid, order, axis=1)
    rr, rank = np.nonzero(take_valid)
    src = kept_pos[rr, order[rr, rank]]
    return rr + row_offset, rank, m.indices[src].astype(np.int64), m.data[src]


def sparse_top_k(scores: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest stored entries of every row of a sparse matrix, as dense blocks.

    Only stored entries count (an implicit zero is "not found", not a score of 0).
    Ties keep the lower column first, so results are deterministic.

    Args:
        scores: (R, n) sparse scores.
        k: entries to keep per row.

    Returns:
        (columns, values): (R, W) int64 column indices, -1 padded, and (R, W) float32
        values, -inf padded, best first, with ``W = min(k, max stored entries per row)``.

    >>> m = sp.csr_matrix(np.array([[0.0, 3.0, 1.0, 2.0], [0.0, 0.0, 0.0, 5.0]]))
    >>> cols, vals = sparse_top_k(m, 2)
    >>> cols.tolist(), vals.tolist()
    ([[1, 3], [3, -1]], [[3.0, 2.0], [5.0, -inf]])
    """
    m = sp.csr_matrix(scores)
    m.sum_duplicates()
    width = int(min(k, np.diff(m.indptr).max(initial=0)))
    columns = np.full((m.shape[0], width), PAD, np.int64)
    values = np.full((m.shape[0], width), -np.inf, np.float32)
    if width > 0:
        rows, rank, cols, vals = _row_top_k(m, width)
        columns[rows, rank] = cols
        values[rows, rank] = vals
    return columns, values


def keep_top_k_per_row(matrix: sp.spmatrix, k: int) -> sp.csr_matrix:
    """A CSR copy of ``matrix`` keeping only the ``k`` largest stored entries of each row.

    Same tie rule as :func:`sparse_top_k`; the result has sorted indices.

    >>> m = sp.csr_matrix(np.array([[0.0, 3.0, 1.0, 2.0]]))
    >>> keep_top_k_per_row(m, 2).toarray().tolist()
    [[0.0, 3.0, 0.0, 2.0]]
    """
    m = sp.csr_matrix(matrix)
    m.sum_duplicates()
    rows, _, cols, vals = _row_top_k(m, max(k, 0))
    out = sp.csr_matrix((vals, cols, np.r_[0, np.cumsum(np.bincount(rows, minlength=m.shape[0]))]),
                        shape=m.shape)
    out.sort_indices()
    return out
