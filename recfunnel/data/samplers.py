"""Negative samplers and exposure negatives.

Samplers draw ``n`` items per user at once and avoid the items in an
``exclude`` matrix (the user's positives) by redrawing only the colliding
slots, vectorised, for :data:`RESAMPLE_ROUNDS` rounds. Slots still colliding
after that (a user who excluded most of the catalogue: the chance per slot is
about ``excluded_share ** (RESAMPLE_ROUNDS + 1)``) are drawn exactly from the
user's allowed items, one user at a time. The one leftover: a user who
excluded every item keeps the excluded draws, since one false negative is
milder than a padding index that breaks an embedding lookup. (A popularity
sampler whose allowed items all have zero count draws them uniformly.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.errors import DataError

#: how many times colliding slots are redrawn
RESAMPLE_ROUNDS = 10


class _NegativeSampler:
    """Shared sampling loop; subclasses implement :meth:`_draw`."""

    n_items: int
    rng: np.random.Generator

    def _draw(self, size: int) -> np.ndarray:
        raise NotImplementedError

    def _draw_from(self, allowed: np.ndarray, size: int) -> np.ndarray:
        """``size`` draws restricted to the ``allowed`` items (the slow exact path)."""
        raise NotImplementedError

    def sample(
        self, user_index: np.ndarray, n_per_user: int, exclude: sp.csr_matrix | None = None
    ) -> np.ndarray:
        """Draw negatives.

        Args:
            user_index: (B,) int64 user of each row (rows of ``exclude``; negative = nothing excluded).
            n_per_user: negatives per row.
            exclude: (n_users, n_items) CSR; nonzero entries are never sampled for that user
                (unless the user excluded every item, see the module docstring).

        Returns:
            (B, n_per_user) int64 item indices.
        """
        user_index = np.asarray(user_index, dtype=np.int64)
        if user_index.ndim != 1:
            raise ValueError(f"user_index must be 1-d, got shape {user_index.shape}")
        if n_per_user < 0:
            raise ValueError(f"n_per_user must be >= 0, got {n_per_user}")
        b = len(user_index)
        items = self._draw(b * n_per_user).reshape(b, n_per_user)
        if exclude is None or items.size == 0:
            return items
        if exclude.shape[1] != self.n_items:
            raise ValueError(f"exclude has {exclude.shape[1]} columns, expected n_items={self.n_items}")
        if (user_index >= exclude.shape[0]).any():
            raise ValueError(f"user_index exceeds the {exclude.shape[0]} rows of exclude")
        known = user_index >= 0
        rows = sp.csr_matrix(exclude)[np.where(known, user_index, 0)]
        row_of_entry = np.repeat(np.arange(b, dtype=np.int64), np.diff(rows.indptr))
        kept = known[row_of_entry] & (rows.data != 0)
        # keys of the excluded (row, item) pairs of this batch
        excluded = row_of_entry[kept] * self.n_items + rows.indices[kept]
        row_of_slot = np.repeat(np.arange(b, dtype=np.int64), n_per_user)
        flat = items.reshape(-1)
        for _ in range(RESAMPLE_ROUNDS):
            hit = np.flatnonzero(np.isin(row_of_slot * self.n_items + flat, excluded))
            if len(hit) == 0:
                return flat.reshape(b, n_per_user)
            flat[hit] = self._draw(len(hit))
        # rows that still collide exclude most of the catalogue: draw them from what is left
        hit = np.flatnonzero(np.isin(row_of_slot * self.n_items + flat, excluded))
        for row in np.unique(row_of_slot[hit]):
            allowed = np.setdiff1d(np.arange(self.n_items), rows.indices[rows.indptr[row]:rows.indptr[row + 1]])
            if len(allowed):
                slots = hit[row_of_slot[hit] == row]
                flat[slots] = self._draw_from(allowed, len(slots))
        return flat.reshape(b, n_per_user)


class UniformNegativeSampler(_NegativeSampler):
    """Items drawn uniformly from ``0..n_items-1``.

    Args:
        n_items: catalogue size.
        seed: random seed.

    >>> UniformNegativeSampler(5, seed=0).sample(np.array([0, 1]), 3).shape
    (2, 3)
    """

    def __init__(self, n_items: int, seed: int = 0):
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def _draw(self, size: int) -> np.ndarray:
        return self.rng.integers(0, self.n_items, size=size, dtype=np.int64)

    def _draw_from(self, allowed: np.ndarray, size: int) -> np.ndarray:
        return self.rng.choice(allowed, size=size).astype(np.int64)


class PopularityNegativeSampler(_NegativeSampler):
    """Items drawn with probability proportional to ``count ** alpha``.

    ``alpha=0.75`` is word2vec's compromise between uniform (0) and raw
    popularity (1). Items with count 0 are never drawn, unless every count is
    0, in which case sampling is uniform.

    Args:
        item_counts: (n_items,) interaction count per item.
        alpha: popularity exponent.
        seed: random seed.
    """

    def __init__(self, item_counts: np.ndarray, alpha: float = 0.75, seed: int = 0):
        counts = np.asarray(item_counts, dtype=np.float64)
        if counts.ndim != 1 or len(counts) == 0:
            raise ValueError(f"item_counts must be a non-empty 1-d array, got shape {counts.shape}")
        if (counts < 0).any() or not np.isfinite(counts).all():
            raise ValueError("item_counts must be finite and >= 0")
        self.item_counts = counts
        self.alpha = alpha
        self.seed = seed
        self.n_items = len(counts)
        self.rng = np.random.default_rng(seed)
        mass = np.where(counts > 0, counts ** alpha, 0.0)
        if mass.sum() <= 0:
            mass = np.ones_like(counts)
        self.probability_ = mass / mass.sum()
        self._cdf = np.cumsum(self.probability_)
        self._cdf[-1] = 1.0

    def _draw(self, size: int) -> np.ndarray:
        u = self.rng.random(size)
        # side="right": a draw equal to a cdf step skips zero-mass items sitting on it
        items = np.searchsorted(self._cdf, u, side="right")
        return np.minimum(items, self.n_items - 1).astype(np.int64)

    def _draw_from(self, allowed: np.ndarray, size: int) -> np.ndarray:
        mass = self.probability_[allowed]
        p = mass / mass.sum() if mass.sum() > 0 else None
        return self.rng.choice(allowed, size=size, p=p).astype(np.int64)


def exposed_not_clicked(interactions_df: pd.DataFrame) -> pd.DataFrame:
    """Exposure negatives: rows with ``label == 0`` whose user never clicked that item.

    A user who was shown an item, skipped it and clicked it at another time
    (before or after) does not dislike it, so those exposures are dropped.

    Args:
        interactions_df: interactions with ``user_id``, ``item_id`` and ``label`` columns.

    Returns:
        the kept ``label == 0`` rows, original order, fresh RangeIndex.

    >>> df = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "x", "x"], "label": [0, 1, 0]})
    >>> exposed_not_clicked(df)["user_id"].tolist()
    ['b']
    """
    missing = [c for c in ("user_id", "item_id", "label") if c not in interactions_df.columns]
    if missing:
        raise DataError(
            f"exposure negatives need columns {missing}; columns found: {list(interactions_df.columns)}"
        )
    user_code, _ = pd.factorize(interactions_df["user_id"], use_na_sentinel=False)
    item_code, items = pd.factorize(interactions_df["item_id"], use_na_sentinel=False)
    pair = user_code.astype(np.int64) * max(len(items), 1) + item_code
    label = interactions_df["label"].to_numpy()
    clicked_pairs = np.unique(pair[label == 1])
    keep = (label == 0) & ~np.isin(pair, clicked_pairs)
    return interactions_df.loc[keep].reset_index(drop=True)
