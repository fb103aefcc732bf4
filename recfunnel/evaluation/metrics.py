"""Pure, vectorised recommendation metrics (STYLE principle 6).

Every function takes arrays and returns arrays or floats; none keeps state,
and none loops over users in Python.

Conventions (shapes: ``U`` users, ``K`` list slots):

* ``recommended`` is a (U, K) int64 array of item indices, best first, ``-1``
  padded. A repeated item counts only at its first slot (later copies are
  misses), so no metric can exceed its maximum because of duplicates.
* ``relevant`` is a (U, n_items) ``scipy.sparse`` CSR matrix of held-out items,
  rows aligned with ``recommended``. An item is relevant where its stored value
  is > 0; the value is its graded relevance (only :func:`ndcg_at_k` uses it).
* ``k`` (optional) scores only the first ``k`` slots; ``None`` means all ``K``.
  A list narrower than ``k`` is treated as padded with misses.
* Per-user top-K metrics return (U,) float64 and NaN for users with no relevant
  item; an evaluator excludes those users (``np.nanmean``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

__all__ = [
    "recall_at_k",
    "precision_at_k",
    "hit_rate_at_k",
    "ndcg_at_k",
    "map_at_k",
    "mrr",
    "exposure_counts",
    "catalogue_coverage",
    "item_popularity",
    "novelty",
    "intra_list_diversity",
    "gini_coefficient",
    "exposure_gini",
    "auc",
    "gauc",
    "logloss",
]


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _as_recommended(recommended: np.ndarray) -> np.ndarray:
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be a (U, K) array, got shape {rec.shape}")
    if rec.size and not np.issubdtype(rec.dtype, np.integer):
        raise ValueError(f"recommended must hold integer item indices, got dtype {rec.dtype}")
    return rec.astype(np.int64, copy=False)


def _as_relevance(relevant: sp.spmatrix | sp.sparray, n_users: int) -> sp.csr_matrix:
    """Canonical CSR copy (sorted, no duplicates) keeping only values > 0."""
    rel = sp.csr_matrix(relevant, dtype=np.float64, copy=True)
    if rel.shape[0] != n_users:
        raise ValueError(f"relevant has {rel.shape[0]} rows, recommended has {n_users}")
    rel.sum_duplicates()
    rel.data[rel.data < 0] = 0.0
    rel.eliminate_zeros()
    return rel


def _resolve_k(k: int | None, width: int) -> int:
    if k is None:
        return width
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return int(k)


def _repeats(rec: np.ndarray) -> np.ndarray:
    """(U, K) bool, true at slots whose item already appeared earlier in the row."""
    order = np.argsort(rec, axis=1, kind="stable")
    srt = np.take_along_axis(rec, order, axis=1)
    dup_sorted = np.zeros(rec.shape, dtype=bool)
    dup_sorted[:, 1:] = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    dup = np.zeros(rec.shape, dtype=bool)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def _slot_relevance(
    recommended: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int | None
) -> tuple[np.ndarray, np.ndarray, int, sp.csr_matrix]:
    """Relevance of every slot of the first ``k`` columns and each user's |rel|.

    Returns:
        gains: (U, min(k, K)) float64 relevance value of each slot, 0 for misses,
            padding and repeated items.
        n_relevant: (U,) int64 number of relevant items per user.
        k: the resolved cut-off.
        rel: the canonical relevance matrix (values > 0 only).
    """
    rec = _as_recommended(recommended)
    n_users, width = rec.shape
    rel = _as_relevance(relevant, n_users)
    k = _resolve_k(k, width)
    n_items = rel.shape[1]
    valid = rec >= 0
    if np.any(rec[valid] >= n_items):
        raise ValueError(f"recommended holds item indices >= n_items ({n_items})")
    n_relevant = np.diff(rel.indptr).astype(np.int64)
    gains = np.zeros(rec.shape, dtype=np.float64)
    if rel.nnz and rec.size:
        # (user, item) -> one int64 key; canonical CSR keys are sorted, so a
        # binary search finds every slot's relevance at once.
        users = np.arange(n_users, dtype=np.int64)
        rel_keys = np.repeat(users, n_relevant) * n_items + rel.indices.astype(np.int64)
        rec_keys = users[:, None] * n_items + np.where(valid, rec, 0)
        pos = np.minimum(np.searchsorted(rel_keys, rec_keys), rel.nnz - 1)
        found = valid & (rel_keys[pos] == rec_keys) & ~_repeats(rec)
        gains = np.where(found, rel.data[pos], 0.0)
    return gains[:, :k], n_relevant, k, rel


def _per_user(values: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """``values`` as float64 with NaN for users without relevant items."""
    return np.where(n_relevant > 0, values, np.nan).astype(np.float64)


def _discounts(k: int) -> np.ndarray:
    """(k,) position discounts 1 / log2(r + 1) for ranks r = 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


# ---------------------------------------------------------------------------
# top-K accuracy metrics: per user, (U,) float64, NaN where |rel| = 0
# ---------------------------------------------------------------------------


def recall_at_k(
    recommended: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int | None = None
) -> np.ndarray:
    """Recall@K = |top-K ∩ rel| / |rel| per user (the standard definition).

    The denominator is the user's full number of relevant items, not
    ``min(|rel|, K)``, so a user with more than K relevant items cannot reach 1.

    Args:
        recommended: (U, K) int64 item indices, best first, -1 padded.
        relevant: (U, n_items) CSR of held-out items (value > 0 = relevant).
        k: cut-off; ``None`` uses all K slots.

    Returns:
        (U,) float64 in [0, 1]; NaN for users with no relevant item.

    >>> rel = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0]]))
    >>> recall_at_k(np.array([[2, 1], [0, -1]]), rel).tolist()
    [0.5, nan]
    """
    gains, n_relevant, _, _ = _slot_relevance(recommended, relevant, k)
    hits = (gains > 0).sum(axis=1)
    return _per_user(hits / np.maximum(n_relevant, 1), n_relevant)


def precision_at_k(
    recommended: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int | None = None
) -> np.ndarray:
    """Precision@K = |top-K ∩ rel| / K per user.

    The denominator is K even when the list is shorter (padding counts as a
    miss); ``k = 0`` (or an empty list) scores 0.

    Args:
        recommended: (U, K) int64 item indices, best first, -1 padded.
        relevant: (U, n_items) CSR of held-out items.
        k: cut-off; ``None`` uses all K slots.

    Returns:
        (U,) float64 in [0, 1]; NaN for users with no relevant item.
    """
    gains, n_relevant, k, _ = _slot_relevance(recommended, relevant, k)
    hits = (gains > 0).sum(axis=1)
    return _per_user(hits / max(k, 1), n_relevant)


def hit_rate_at_k(
    recommended: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int | None = None
) -> np.ndarray:
    """HitRate@K = 1 if any of the top-K items is relevant, else 0, per user.

    Args:
        recommended: (U, K) int64 item indices, best first, -1 padded.
        relevant: (U, n_items) CSR of held-out items.
        k: cut-off; ``None`` uses all K slots.

    Returns:
        (U,) float64 in {0, 1}; NaN for users with no relevant item.
    """
    gains, n_relevant, _, _ = _slot_relevance(recommended, relevant, k)
    return _per_user((gains > 0).any(axis=1).astype(np.float64), n_relevant)


def ndcg_at_k(
    recommended: np.ndarray,
    relevant: sp.spmatrix | sp.sparray,
    k: int | None = None,
    gain: Literal["binary", "linear", "exponential"] = "binary",
) -> np.ndarray:
    """NDCG@K = DCG@K / IDCG@K per user (Järvelin & Kekäläinen, 2002).

    DCG@K = Σ_{r=1..K} g(rel_r) / log2(r + 1), where ``rel_r`` is the relevance
    value of the item at rank r (0 for misses). The gain ``g`` is 1 for any
    relevant item (``"binary"``, default), the value itself (``"linear"``) or
    2^value − 1 (``"exponential"``, Burges et al., 2005). IDCG@K is the DCG of
    the user's min(|rel|, K) most relevant items in the best order.

    Args:
        recommended: (U, K) int64 item indices, best first, -1 padded.
        relevant: (U, n_items) CSR of held-out items; values are graded relevance.
        k: cut-off; ``None`` uses all K slots.
        gain: how relevance values become gains.

    Returns:
        (U,) float64 in [0, 1]; NaN for users with no relevant item.

    >>> rel = sp.csr_matrix(np.array([[1, 1, 0]]))
    >>> round(float(ndcg_at_k(np.array([[2, 0]]), rel)[0]), 4)  # (1/log2 3) / (1 + 1/log2 3)
    0.3869
    """
    values, n_relevant, k, rel = _slot_relevance(recommended, relevant, k)

    def to_gain(v: np.ndarray) -> np.ndarray:
        if gain == "binary":
            return (v > 0).astype(np.float64)
        if gain == "linear":
            return v
        if gain == "exponential":
            return np.exp2(v) - 1.0
        raise ValueError(f"gain must be 'binary', 'linear' or 'exponential', got {gain!r}")

    disc = _discounts(k)
    dcg = (to_gain(values) * disc[: values.shape[1]]).sum(axis=1)
    # ideal: each user's relevance values sorted descending, first k of them
    rows = np.repeat(np.arange(len(n_relevant)), n_relevant)
    order = np.lexsort((-rel.data, rows))
    rank = np.arange(rel.nnz) - rel.indptr[:-1][rows]
    keep = rank < k
    idcg = np.bincount(
        rows[keep],
        weights=to_gain(rel.data[order][keep]) * disc[rank[keep]],
        minlength=len(n_relevant),
    )
    ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    return _per_user(ndcg, n_relevant)


def map_at_k(
    recommended: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int | None = None
) -> np.ndarray:
    """AP@K per user (averaged over users this gives MAP@K).

    AP@K = (1 / min(|rel|, K)) · Σ_{r=1..K} P@r · hit_r, where ``hit_r`` is 1
    when the item at rank r is relevant and P@r is the precision of the first
    r items. Relevance is binary here.

    Args:
        recommended: (U, K) int64 item indices, best first, -1 padded.
        relevant: (U, n_items) CSR of held-out items.
        k: cut-off; ``None`` uses all K slots.

    Returns:
        (U,) float64 in [0, 1]; NaN for users with no relevant item.

    >>> rel = sp.csr_matrix(np.array([[1, 1, 0, 0]]))
    >>> map_at_k(np.array([[0, 2, 1]]), rel).tolist()  # (1/1 + 2/3) / 2
    [0.8333333333333333]
    """
    gains, n_relevant, k, _ = _slot_relevance(recommended, relevant, k)
    hits = (gains > 0).astype(np.float64)
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    precision_at_r = np.cumsum(hits, axis=1) / ranks
    ap = (precision_at_r * hits).sum(axis=1) / np.maximum(np.minimum(n_relevant, k), 1)
    return _per_user(ap, n_relevant)


def mrr(
    recommended: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int | None = None
) -> np.ndarray:
    """Reciprocal rank of the first relevant item in the list, per user.

    RR = 1 / r₁ where r₁ is the (1-based) rank of the first hit within the
    first K slots, 0 when there is none. The mean over users is the MRR.

    Args:
        recommended: (U, K) int64 item indices, best first, -1 padded.
        relevant: (U, n_items) CSR of held-out items.
        k: cut-off; ``None`` uses all K slots.

    Returns:
        (U,) float64 in [0, 1]; NaN for users with no relevant item.
    """
    gains, n_relevant, _, _ = _slot_relevance(recommended, relevant, k)
    hits = gains > 0
    first = np.argmax(hits, axis=1) if hits.shape[1] else np.zeros(len(hits), np.int64)
    rr = np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return _per_user(rr, n_relevant)


# ---------------------------------------------------------------------------
# list-level metrics: properties of the lists, not of the held-out data
# ---------------------------------------------------------------------------


def exposure_counts(recommended: np.ndarray, n_items: int) -> np.ndarray:
    """Number of slots each item occupies across all lists.

    Args:
        recommended: (U, K) int64 item indices, -1 padded.
        n_items: catalogue size.

    Returns:
        (n_items,) int64 counts.
    """
    rec = _as_recommended(recommended)
    items = rec[rec >= 0]
    if np.any(items >= n_items):
        raise ValueError(f"recommended holds item indices >= n_items ({n_items})")
    return np.bincount(items, minlength=n_items).astype(np.int64)


def catalogue_coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list.

    coverage = |∪_u list_u| / n_items.

    Args:
        recommended: (U, K) int64 item indices, -1 padded.
        n_items: catalogue size (> 0).

    Returns:
        Coverage in [0, 1] (0 for no lists).

    >>> catalogue_coverage(np.array([[0, 1], [1, -1]]), n_items=4)
    0.5
    """
    if n_items <= 0:
        raise ValueError(f"n_items must be > 0, got {n_items}")
    return float(np.count_nonzero(exposure_counts(recommended, n_items)) / n_items)


def item_popularity(user_items: sp.spmatrix | sp.sparray) -> np.ndarray:
    """p(i): the fraction of users who interacted with each item.

    Args:
        user_items: (n_users, n_items) sparse interactions (any stored value > 0
            counts once per user).

    Returns:
        (n_items,) float64 in [0, 1], the input of :func:`novelty`.
    """
    m = sp.csr_matrix(user_items, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    n_users = m.shape[0]
    counts = np.bincount(m.indices[m.data > 0], minlength=m.shape[1])
    return counts / max(n_users, 1)


def novelty(recommended: np.ndarray, item_popularity_prob: np.ndarray) -> np.ndarray:
    """Mean self-information of each list (Zhou et al., 2010).

    novelty(u) = (1 / |L_u|) · Σ_{i ∈ L_u} −log2 p(i), where p(i) is the
    fraction of (training) users that interacted with item i (see
    :func:`item_popularity`). Items with p(i) = 0 are given the smallest
    positive p in the array (as rare as the rarest seen item) so the value
    stays finite.

    Args:
        recommended: (U, K) int64 item indices, -1 padded.
        item_popularity_prob: (n_items,) p(i) in [0, 1], at least one > 0.

    Returns:
        (U,) float64 bits per item; NaN for empty lists.

    >>> novelty(np.array([[0, 1], [-1, -1]]), np.array([0.5, 0.25])).tolist()
    [1.5, nan]
    """
    rec = _as_recommended(recommended)
    p = np.asarray(item_popularity_prob, dtype=np.float64)
    if p.ndim != 1 or np.any(p < 0) or np.any(p > 1):
        raise ValueError("item_popularity_prob must be a 1-d array of probabilities in [0, 1]")
    if not np.any(p > 0):
        raise ValueError("item_popularity_prob has no positive entry")
    valid = rec >= 0
    if np.any(rec[valid] >= len(p)):
        raise ValueError(f"recommended holds item indices >= n_items ({len(p)})")
    self_info = -np.log2(np.maximum(p, p[p > 0].min()))
    total = np.where(valid, self_info[np.where(valid, rec, 0)], 0.0).sum(axis=1)
    n = valid.sum(axis=1)
    return np.divide(total, n, out=np.full(len(rec), np.nan), where=n > 0)


def intra_list_diversity(
    recommended: np.ndarray,
    item_category: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> np.ndarray:
    """Intra-list diversity of each list (Ziegler et al., 2005), by category or by content.

    Over the unordered pairs {i, j} of a list's valid slots:

    * by category: ILD(u) = share of pairs with ``category[i] != category[j]``;
    * by content vector: ILD(u) = mean of 1 − cos(v_i, v_j). A zero vector has
      cosine 0 with everything (distance 1).

    Exactly one of ``item_category`` and ``item_vectors`` must be given. Pairs
    are scored for all lists at once with a batched (U, K, K) comparison or
    matmul, in chunks of users to bound memory.

    Args:
        recommended: (U, K) int64 item indices, -1 padded.
        item_category: (n_items,) int category of each item.
        item_vectors: (n_items, d) float content vector of each item.

    Returns:
        (U,) float64; NaN for lists with fewer than 2 items.

    >>> intra_list_diversity(np.array([[0, 1, 2]]), item_category=np.array([7, 7, 9])).tolist()
    [0.6666666666666666]
    """
    if (item_category is None) == (item_vectors is None):
        raise ValueError("give exactly one of item_category and item_vectors")
    rec = _as_recommended(recommended)
    n_users, width = rec.shape
    valid = rec >= 0
    safe = np.where(valid, rec, 0)
    if item_category is not None:
        table = np.asarray(item_category)
        if table.ndim != 1:
            raise ValueError(f"item_category must be (n_items,), got shape {table.shape}")
    else:
        table = np.asarray(item_vectors, dtype=np.float64)
        if table.ndim != 2:
            raise ValueError(f"item_vectors must be (n_items, d), got shape {table.shape}")
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        table = np.divide(table, norms, out=np.zeros_like(table), where=norms > 0)
    if np.any(rec[valid] >= len(table)):
        raise ValueError(f"recommended holds item indices >= n_items ({len(table)})")

    upper = np.triu(np.ones((width, width), dtype=bool), k=1)
    out = np.full(n_users, np.nan)
    per_user_cells = max(width * width, width * (table.shape[1] if table.ndim == 2 else 1), 1)
    chunk = max(1, (1 << 22) // per_user_cells)
    for start in range(0, n_users, chunk):  # chunks bound memory; each is fully vectorised
        sl = slice(start, start + chunk)
        v = valid[sl]
        pairs = v[:, :, None] & v[:, None, :] & upper
        if item_category is not None:
            cats = table[safe[sl]]
            distance = (cats[:, :, None] != cats[:, None, :]).astype(np.float64)
        else:
            vecs = table[safe[sl]]
            cosine = np.clip(vecs @ vecs.transpose(0, 2, 1), -1.0, 1.0)
            distance = 1.0 - cosine
        n_pairs = pairs.sum(axis=(1, 2))
        total = np.where(pairs, distance, 0.0).sum(axis=(1, 2))
        out[sl] = np.divide(total, n_pairs, out=np.full(len(total), np.nan), where=n_pairs > 0)
    return out


def gini_coefficient(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = all equal, (n−1)/n = all in one.

    G = Σ_{i=1..n} (2i − n − 1) · x_(i) / (n · Σ x), with x sorted ascending.

    Args:
        values: (n,) non-negative numbers.

    Returns:
        G in [0, 1); NaN when there are no values or they sum to 0.

    >>> gini_coefficient(np.array([0, 0, 0, 4]))
    0.75
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(x)
    if n == 0 or x.sum() <= 0:
        return float("nan")
    if np.any(x < 0):
        raise ValueError("gini_coefficient needs non-negative values")
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * x).sum() / (n * x.sum()))


def exposure_gini(recommended: np.ndarray, n_items: int) -> float:
    """Gini coefficient of item exposure counts across the whole catalogue.

    Items never recommended count as exposure 0, so a system that shows only a
    few items scores close to 1; showing every item equally often scores 0.

    Args:
        recommended: (U, K) int64 item indices, -1 padded.
        n_items: catalogue size.

    Returns:
        Gini in [0, 1); NaN when no item was recommended.
    """
    return gini_coefficient(exposure_counts(recommended, n_items))


# ---------------------------------------------------------------------------
# classification metrics (rankers, CTR models)
# ---------------------------------------------------------------------------


def _binary_labels(labels: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels).ravel()
    if len(y) != n:
        raise ValueError(f"labels has {len(y)} entries, scores has {n}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be binary (0/1 or bool)")
    return y.astype(bool)


def _scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if np.any(np.isnan(s)):
        raise ValueError("scores contain NaN")
    return s


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by ranks (Mann–Whitney U), ties counting one half.

    AUC = (R₊ − n₊(n₊ + 1)/2) / (n₊ · n₋), where R₊ is the sum of the
    positives' ranks among all scores (tied scores get their average rank).
    Equals P(score of a random positive > score of a random negative) with ties
    as 1/2. Returns 0.5 (chance) when only one class is present.

    Args:
        labels: (N,) binary labels (0/1 or bool).
        scores: (N,) real scores, higher = more likely positive (no NaN).

    Returns:
        AUC in [0, 1].

    >>> auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.8, 0.9]))
    0.875
    """
    s = _scores(scores)
    y = _binary_labels(labels, len(s))
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    rank_sum = rankdata(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(
    user: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    weight: Literal["impressions", "uniform"] = "impressions",
) -> float:
    """Group AUC: the weighted mean of per-user AUC (Zhu et al., 2017, DIN).

    GAUC = Σ_u w_u · AUC_u / Σ_u w_u over users having both a positive and a
    negative sample (others are skipped). ``w_u`` is the user's number of
    samples (``"impressions"``) or 1 (``"uniform"``). All users' AUCs are
    computed at once from one sort by (user, score), with tied scores of a
    user sharing their average rank as in :func:`auc`.

    Args:
        user: (N,) user id of each sample (any sortable dtype).
        labels: (N,) binary labels.
        scores: (N,) real scores (no NaN).
        weight: per-user weighting.

    Returns:
        GAUC in [0, 1]; NaN when no user has both classes.

    >>> gauc(np.array([1, 1, 2, 2, 2, 3]), np.array([0, 1, 1, 0, 0, 1]),
    ...      np.array([0.2, 0.1, 0.9, 0.3, 0.9, 0.5]))  # (2·0 + 3·0.75) / 5
    0.45
    """
    if weight not in ("impressions", "uniform"):
        raise ValueError(f"weight must be 'impressions' or 'uniform', got {weight!r}")
    s = _scores(scores)
    y = _binary_labels(labels, len(s))
    users = np.asarray(user).ravel()
    if len(users) != len(s):
        raise ValueError(f"user has {len(users)} entries, scores has {len(s)}")
    if len(s) == 0:
        return float("nan")
    _, group = np.unique(users, return_inverse=True)
    group = group.ravel()
    n_groups = int(group.max()) + 1
    order = np.lexsort((s, group))
    g, s_sorted, y_sorted = group[order], s[order], y[order]
    n = len(s)
    position = np.arange(n)
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, position, 0))
    new_tie = new_group | np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.r_[tie_start[1:], n] - 1
    tie_id = np.cumsum(new_tie) - 1
    rank_in_group = (tie_start + tie_end)[tie_id] / 2.0 - group_start + 1.0

    n_pos = np.bincount(g, weights=y_sorted, minlength=n_groups)
    n_all = np.bincount(g, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(g, weights=rank_in_group * y_sorted, minlength=n_groups)
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return float("nan")
    auc_u = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    w = n_all[both] if weight == "impressions" else np.ones(int(both.sum()))
    return float((w * auc_u).sum() / w.sum())


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy.

    logloss = −(1/N) Σ [y log p + (1 − y) log(1 − p)], natural log, with p
    clipped to [eps, 1 − eps] so a confident mistake costs at most −log(eps).

    Args:
        labels: (N,) targets in [0, 1] (soft labels allowed).
        probs: (N,) predicted probabilities.
        eps: clipping for numerical safety.

    Returns:
        Mean log loss; NaN for N = 0.

    >>> round(logloss(np.array([1, 0]), np.array([0.5, 0.5])), 6)  # ln 2
    0.693147
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"labels has {len(y)} entries, probs has {len(p)}")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("labels must lie in [0, 1]")
    if len(p) == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
