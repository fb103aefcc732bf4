"""Full-ranking top-K evaluation: score every item, drop what was seen, rank, measure.

:func:`evaluate_topk` scores given lists; :func:`full_ranking_evaluate` builds
the lists itself from a ``score_fn`` over the whole catalogue (as benchmarks do
for model-only baselines), batch by batch, with the same aggregation.

Which users count: only users with at least one held-out (relevant) item; every
metric, the list metrics included, is computed over exactly those users, and
``n_users`` reports how many there were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from recfunnel.evaluation import metrics

__all__ = ["evaluate_topk", "full_ranking_topk", "full_ranking_evaluate", "format_table"]

_ACCURACY = {
    "recall": metrics.recall_at_k,
    "precision": metrics.precision_at_k,
    "hit_rate": metrics.hit_rate_at_k,
    "ndcg": metrics.ndcg_at_k,
    "map": metrics.map_at_k,
}


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] <= 0:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def _n_positive(m: sp.csr_matrix) -> np.ndarray:
    """(rows,) number of stored entries > 0 per row (the relevant items)."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return np.bincount(rows[m.data > 0], minlength=m.shape[0])


class _TopKAccumulator:
    """Sums per-user metrics and exposure counts over batches of users."""

    def __init__(
        self,
        ks: tuple[int, ...],
        n_items: int,
        item_popularity: np.ndarray | None,
        item_category: np.ndarray | None,
        item_vectors: np.ndarray | None,
    ):
        self.ks = ks
        self.n_items = n_items
        self.item_popularity = item_popularity
        self.item_category = item_category
        self.item_vectors = item_vectors
        self.n_users = 0
        # metric key -> [sum over users, number of users with a finite value]
        self.sums: dict[str, list[float]] = {}
        self.exposure = {k: np.zeros(n_items, np.int64) for k in ks}

    def _add_mean(self, key: str, per_user: np.ndarray) -> None:
        finite = ~np.isnan(per_user)
        entry = self.sums.setdefault(key, [0.0, 0])
        entry[0] += float(per_user[finite].sum())
        entry[1] += int(finite.sum())

    def add(self, recommended: np.ndarray, relevant: sp.spmatrix | sp.sparray) -> None:
        recommended = np.asarray(recommended)
        relevant = sp.csr_matrix(relevant)
        if recommended.ndim != 2 or recommended.shape[0] != relevant.shape[0]:
            raise ValueError(
                f"recommended {recommended.shape} and relevant {relevant.shape} need the same rows"
            )
        if relevant.shape[1] != self.n_items:
            raise ValueError(f"relevant has {relevant.shape[1]} columns, n_items is {self.n_items}")
        if recommended.shape[1] < self.ks[-1]:
            raise ValueError(
                f"recommended has {recommended.shape[1]} columns, fewer than the largest k "
                f"({self.ks[-1]}); metrics at that k would silently equal a smaller k"
            )
        keep = _n_positive(relevant) > 0
        recommended, relevant = recommended[keep], relevant[keep]
        self.n_users += int(keep.sum())
        if not keep.any():
            return
        for k in self.ks:
            for name, fn in _ACCURACY.items():
                self._add_mean(f"{name}@{k}", fn(recommended, relevant, k))
        self._add_mean("mrr", metrics.mrr(recommended, relevant, self.ks[-1]))
        for k in self.ks:
            top = recommended[:, :k]
            self.exposure[k] += metrics.exposure_counts(top, self.n_items)
            if self.item_popularity is not None:
                self._add_mean(f"novelty@{k}", metrics.novelty(top, self.item_popularity))
            if self.item_category is not None:
                ild = metrics.intra_list_diversity(top, item_category=self.item_category)
                self._add_mean(f"diversity_category@{k}", ild)
            if self.item_vectors is not None:
                ild = metrics.intra_list_diversity(top, item_vectors=self.item_vectors)
                self._add_mean(f"diversity_vector@{k}", ild)

    def result(self) -> dict[str, float]:
        keys = [f"{name}@{k}" for k in self.ks for name in _ACCURACY] + ["mrr"]
        for k in self.ks:
            keys.append(f"coverage@{k}")
            if self.item_popularity is not None:
                keys.append(f"novelty@{k}")
            if self.item_category is not None:
                keys.append(f"diversity_category@{k}")
            if self.item_vectors is not None:
                keys.append(f"diversity_vector@{k}")
            keys.append(f"gini@{k}")
        out: dict[str, float] = {}
        for key in keys:
            if key.startswith("coverage@"):
                counts = self.exposure[int(key.split("@")[1])]
                out[key] = float(np.count_nonzero(counts) / self.n_items) if self.n_users else math.nan
            elif key.startswith("gini@"):
                out[key] = metrics.gini_coefficient(self.exposure[int(key.split("@")[1])])
            else:
                total, count = self.sums.get(key, (0.0, 0))
                out[key] = total / count if count else math.nan
        out["n_users"] = self.n_users
        return out


def evaluate_topk(
    recommended: np.ndarray,
    relevant: sp.spmatrix | sp.sparray,
    ks: Sequence[int] = (10, 20, 50),
    *,
    n_items: int,
    item_popularity: np.ndarray | None = None,
    item_category: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> dict[str, float]:
    """Top-K accuracy and list metrics of given recommendation lists.

    Only users with at least one relevant item count; every value is the mean
    over them (list metrics too). Accuracy metrics use binary relevance.

    Args:
        recommended: (U, K) int64 item indices, best first, -1 padded; K >= max(ks).
        relevant: (U, n_items) CSR of held-out items, rows aligned with ``recommended``.
        ks: cut-offs.
        n_items: catalogue size (for coverage and Gini).
        item_popularity: (n_items,) p(i), fraction of training users per item;
            adds ``novelty@K``.
        item_category: (n_items,) int categories; adds ``diversity_category@K``.
        item_vectors: (n_items, d) content vectors; adds ``diversity_vector@K``.

    Returns:
        For each k in ks (ascending): ``recall@k``, ``precision@k``,
        ``hit_rate@k``, ``ndcg@k``, ``map@k``; then ``mrr`` (within the largest
        k); then the list metrics at *each* k: ``coverage@k``, ``novelty@k``,
        ``diversity_category@k``, ``diversity_vector@k`` (the last three only
        when their input is given), ``gini@k`` (exposure Gini over the
        catalogue); and ``n_users`` (int). Values are NaN when ``n_users`` is 0.

    >>> rel = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0]]))
    >>> r = evaluate_topk(np.array([[1, 0], [2, 0]]), rel, ks=(1, 2), n_items=3)
    >>> r["recall@1"], r["precision@2"], r["coverage@2"], r["n_users"]
    (1.0, 0.5, 0.6666666666666666, 1)
    """
    acc = _TopKAccumulator(_check_ks(ks), n_items, item_popularity, item_category, item_vectors)
    acc.add(recommended, relevant)
    return acc.result()


def full_ranking_topk(
    scores: np.ndarray, exclude: sp.spmatrix | sp.sparray | None, k: int
) -> np.ndarray:
    """Top-k items per user over the whole catalogue, excluding seen items.

    Excluded items (each row's stored entries of ``exclude``) and items scored
    NaN or -inf are never returned; rows with fewer than ``k`` eligible items
    are -1 padded. Ties are broken by the lower item index, deterministically,
    also at the k-th place. ``scores`` is not modified.

    Args:
        scores: (U, n_items) float scores, higher is better.
        exclude: (U, n_items) sparse items to exclude (e.g. training items), or None.
        k: list length.

    Returns:
        (U, k) int64 item indices, best first, -1 padded.

    >>> full_ranking_topk(np.array([[0.5, 0.9, 0.5, 0.1]]), sp.csr_matrix([[0, 1, 0, 0]]), 3).tolist()
    [[0, 2, 3]]
    """
    s = np.array(scores, dtype=np.result_type(np.asarray(scores).dtype, np.float32), copy=True)
    if s.ndim != 2:
        raise ValueError(f"scores must be (U, n_items), got shape {s.shape}")
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    n_users, n_items = s.shape
    s[np.isnan(s)] = -np.inf
    if exclude is not None:
        ex = sp.csr_matrix(exclude, copy=True)
        if ex.shape != s.shape:
            raise ValueError(f"exclude has shape {ex.shape}, scores {s.shape}")
        ex.eliminate_zeros()
        rows = np.repeat(np.arange(n_users), np.diff(ex.indptr))
        s[rows, ex.indices] = -np.inf
    width = min(k, n_items)
    top = np.full((n_users, k), -1, np.int64)
    if width == 0 or n_users == 0:
        return top
    # Threshold = the k-th largest score per row, from a full sort: sorting is
    # robust to heavy ties (popularity scores), where introselect
    # (np.argpartition) slows down several-fold.
    desc = -s
    desc.sort(axis=1)
    kth = -desc[:, width - 1 : width]
    del desc
    above = s > kth
    tied = s == kth
    need = width - above.sum(axis=1, keepdims=True)  # tied items to take, lowest index first
    take = above | tied
    crowded = np.flatnonzero(tied.sum(axis=1) > need[:, 0])
    if len(crowded):
        first_tied = np.cumsum(tied[crowded], axis=1, dtype=np.int32) <= need[crowded]
        take[crowded] = above[crowded] | (tied[crowded] & first_tied)
    cols = np.nonzero(take)[1].reshape(n_users, width)  # ascending columns in each row
    order = np.argsort(-np.take_along_axis(s, cols, axis=1), axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    picked = np.take_along_axis(s, cols, axis=1)
    top[:, :width] = np.where(np.isneginf(picked), -1, cols)
    return top


def full_ranking_evaluate(
    score_fn: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    train: sp.spmatrix | sp.sparray,
    test: sp.spmatrix | sp.sparray,
    ks: Sequence[int] = (10, 20, 50),
    batch_size: int = 1024,
    *,
    item_popularity: np.ndarray | None = None,
    item_category: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> dict[str, float]:
    """Evaluate a scorer by ranking the whole catalogue for each user.

    Users without test items are skipped before scoring. The rest are scored in
    batches with ``score_fn``, their training items are excluded, the top
    max(ks) items are kept (:func:`full_ranking_topk`) and the metrics of
    :func:`evaluate_topk` are aggregated over all batches (list metrics from
    the exposure counts of all batches together).

    Args:
        score_fn: maps (b,) int64 user indices to (b, n_items) scores.
        users: (U,) int64 user indices (rows of ``train`` and ``test``) to evaluate.
        train: (n_users, n_items) sparse training interactions, excluded from lists.
        test: (n_users, n_items) sparse held-out items.
        ks: cut-offs.
        batch_size: users scored per ``score_fn`` call.
        item_popularity, item_category, item_vectors: as in :func:`evaluate_topk`.

    Returns:
        The dict of :func:`evaluate_topk`.
    """
    train = sp.csr_matrix(train)
    test = sp.csr_matrix(test)
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} shapes differ")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    ks = _check_ks(ks)
    n_items = test.shape[1]
    users = np.asarray(users, dtype=np.int64).ravel()
    if users.size and (users.min() < 0 or users.max() >= test.shape[0]):
        raise ValueError(f"users must be row indices in [0, {test.shape[0]})")
    users = users[_n_positive(test)[users] > 0]
    acc = _TopKAccumulator(ks, n_items, item_popularity, item_category, item_vectors)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.asarray(score_fn(batch))
        if scores.shape != (len(batch), n_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(batch), n_items)}")
        acc.add(full_ranking_topk(scores, train[batch], ks[-1]), test[batch])
    return acc.result()


def format_table(results: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """Markdown table of results: one row per model, one column per metric.

    Floats are shown with 4 decimals, ints as ints, missing values as ``-``.

    Args:
        results: model name -> metric name -> value.
        columns: metric names to show, in order.

    Returns:
        The table as text (readable as plain text too: columns are padded).

    >>> print(format_table({"pop": {"recall@10": 0.1, "n_users": 3}}, ["recall@10", "n_users", "mrr"]))
    | model | recall@10 | n_users | mrr |
    |:------|----------:|--------:|----:|
    | pop   |    0.1000 |       3 |   - |
    """

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return str(int(value))
        return f"{float(value):.4f}"

    header = ["model", *columns]
    rows = [[str(name), *(cell(metrics_.get(c)) for c in columns)] for name, metrics_ in results.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        padded = [values[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|:" + "-" * (widths[0] + 1) + "|" + "|".join("-" * (w + 1) + ":" for w in widths[1:]) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
