"""Maximal marginal relevance (MMR) re-ranking with a sliding window.

Greedy selection (Carbonell & Goldstein, SIGIR 1998): at each position pick the
candidate maximising ``theta * rel_i - (1 - theta) * max_{j in W} sim(i, j)``,
where ``W`` is the last ``window`` chosen items (seed 002: neighbours on screen
should differ; an item 30 slots away may resemble the first one).

Item similarity comes from item features: each usable column becomes an
L2-normalised block (multi-hot for categorical and multi-value columns, a
standardised dense vector for the numeric ``content_*`` columns), scaled by
``1 / sqrt(n_blocks)``, so ``sim(i, j)`` is the mean over columns of the
per-column cosine (a missing value contributes 0), clipped to [0, 1]. Without
usable features every similarity is 0 and MMR keeps the ranked order.

>>> from recfunnel.testing.synthetic import make_planted_data
>>> data = make_planted_data()
>>> mmr = MMRReRanker(MMRConfig(relevance_weight=0.5)).fit(data)
>>> ranked = Candidates(np.array([[0, 1, 20]]), np.array([[3.0, 2.9, 1.0]], np.float32))
>>> request = RequestBatch(np.zeros(1, np.int64), np.zeros(1, np.int64), np.full((1, 1), -1),
...                        np.zeros((1, 1), np.int64), sp.csr_matrix((1, 30)))
>>> mmr.rerank(request, ranked, k=3).item_index.tolist()  # items 0, 1 share group 0
[[0, 20, 1]]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError
from recfunnel.stages.base import ReRanker
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import PAD, Candidates, RequestBatch

#: numeric item columns with this prefix form the dense content block
CONTENT_PREFIX = "content_"

#: float32 cells of the (users, C, C) similarity block processed at once (64 MB)
_CHUNK_CELLS = 1 << 24


@dataclass(frozen=True)
class MMRConfig:
    """Options of :class:`MMRReRanker`.

    Attributes:
        relevance_weight: theta in ``theta * rel - (1 - theta) * max sim``; 1 keeps the ranked order.
        window: similarity is taken against the last ``window`` chosen items only; None: all.
        score_normalisation: "minmax" rescales each user's relevance scores to [0, 1] so that
            theta means the same for any ranker; "none" uses the scores as they are.
        max_categories: categorical / multi-value columns with more distinct values are skipped.
        max_distinct_ratio: columns whose distinct values exceed this fraction of the items
            having a value (titles, ids) are skipped: they make items similar to no one.
    """

    relevance_weight: float = 0.9
    window: int | None = 10
    score_normalisation: Literal["minmax", "none"] = "minmax"
    max_categories: int = 1000
    max_distinct_ratio: float = 0.5


class MMRReRanker(ReRanker):
    """Diversifies the ranked list by greedy MMR.

    Learned attributes:
        item_vectors_: (n_items, D) CSR float32, the categorical / multi-value blocks.
        content_vectors_: (n_items, d) float32, the dense content block (d may be 0).
        feature_columns_: names of the item columns used, in block order.
    """

    kind = "mmr"

    def __init__(self, config: MMRConfig | None = None, name: str | None = None):
        super().__init__(config or MMRConfig(), name)

    def fit(self, data: TrainingData) -> Self:
        """Build the item vectors from ``data.item_features``."""
        cfg = self.config
        if not 0.0 <= cfg.relevance_weight <= 1.0:
            raise ConfigError(f"mmr: relevance_weight must be in [0, 1], got {cfg.relevance_weight}")
        if cfg.window is not None and cfg.window < 1:
            raise ConfigError(f"mmr: window must be >= 1 or None, got {cfg.window}")
        if cfg.score_normalisation not in ("minmax", "none"):
            raise ConfigError(f"mmr: score_normalisation must be 'minmax' or 'none', got '{cfg.score_normalisation}'")
        features = data.item_features
        n_items = data.n_items
        sparse_blocks, names = [], []
        content_columns = []
        for column in features.columns:  # a loop over feature columns, a handful
            values = features[column]
            if str(column).startswith(CONTENT_PREFIX) and pd.api.types.is_numeric_dtype(values):
                content_columns.append(column)
                continue
            block = self._categorical_block(values)
            if block is not None:
                sparse_blocks.append(block)
                names.append(str(column))
        content = np.zeros((n_items, 0), np.float32)
        if content_columns:
            content = _content_block(features[content_columns])
            names.append(",".join(map(str, content_columns)))
        n_blocks = len(names)
        scale = 1.0 / np.sqrt(max(n_blocks, 1))
        if sparse_blocks:
            vectors = sp.hstack(sparse_blocks, format="csr") * scale
        else:
            vectors = sp.csr_matrix((n_items, 0))
        self.item_vectors_ = sp.csr_matrix(vectors, dtype=np.float32)
        self.content_vectors_ = (content * scale).astype(np.float32)
        self.feature_columns_ = names
        return self

    def _categorical_block(self, values: pd.Series) -> sp.csr_matrix | None:
        """Row-L2-normalised multi-hot block of a str / tuple-of-str column, or None if unusable."""
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            return None
        present = values.notna().to_numpy()
        tokens = values.reset_index(drop=True)[present]
        if not len(tokens):
            return None
        multi = tokens.map(lambda v: isinstance(v, tuple | list | np.ndarray)).to_numpy()
        if multi.any():
            tokens = tokens.map(lambda v: tuple(v) if isinstance(v, tuple | list | np.ndarray) else (v,))
            tokens = tokens.explode().dropna()
        tokens = tokens.astype(str)
        pairs = pd.DataFrame({"row": tokens.index.to_numpy(), "token": tokens.to_numpy()}).drop_duplicates()
        codes, vocabulary = pd.factorize(pairs["token"])
        n_with_value = pairs["row"].nunique()
        if len(vocabulary) > self.config.max_categories or len(vocabulary) > self.config.max_distinct_ratio * n_with_value:
            return None
        rows = pairs["row"].to_numpy()
        per_row = np.bincount(rows, minlength=len(values)).astype(np.float64)
        data = 1.0 / np.sqrt(per_row[rows])
        return sp.csr_matrix((data, (rows, codes)), shape=(len(values), len(vocabulary)))

    def pairwise_similarity(self, item_index: np.ndarray) -> np.ndarray:
        """(B, C, C) float32 similarity between the candidates of each row, clipped to [0, 1].

        Padding (-1) and items unknown to the model have similarity 0 to everything.
        """
        b, c = item_index.shape
        n_items = self.item_vectors_.shape[0]
        known = (item_index >= 0) & (item_index < n_items)
        safe = np.where(known, item_index, 0).ravel()
        sim = np.zeros((b, c, c), np.float32)
        vectors = sp.diags(known.ravel().astype(np.float32)) @ self.item_vectors_[safe]
        if vectors.nnz:
            dim = vectors.shape[1]
            # shift each user's columns into its own range: the Gram matrix is then block
            # diagonal and holds only within-user pairs
            owner = np.repeat(np.arange(b * c) // c, np.diff(vectors.indptr))
            shifted = sp.csr_matrix((vectors.data, vectors.indices + owner * dim, vectors.indptr),
                                    shape=(b * c, b * dim))
            gram = (shifted @ shifted.T).tocoo()
            sim[gram.row // c, gram.row % c, gram.col % c] = gram.data
        if self.content_vectors_.shape[1]:
            content = self.content_vectors_[safe].reshape(b, c, -1) * known[..., None]
            sim += content @ content.transpose(0, 2, 1)
        return np.clip(sim, 0.0, 1.0)

    def rerank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        """Choose ``k`` items per user by greedy MMR.

        Args:
            request: B users (unused beyond the batch size; MMR depends on the candidates only).
            candidates: (B, C) ranked candidates; ``score`` is the relevance.
            k: items to choose per user.

        Returns:
            (B, min(k, C)) candidates in chosen order; ``score`` keeps each item's input
            relevance score (so it is not necessarily sorted), ``stage_scores["rerank"]``
            holds the MMR objective when the item was chosen. Rows with fewer valid
            candidates than ``k`` end in padding.
        """
        b, c = candidates.item_index.shape
        width = min(k, c)
        order = np.full((b, width), PAD, np.int64)
        objective = np.full((b, width), -np.inf, np.float32)
        chunk = max(1, _CHUNK_CELLS // max(c * c, 1))
        for lo in range(0, b, chunk):  # chunks of users bound the (users, C, C) block
            hi = min(b, lo + chunk)
            order[lo:hi], objective[lo:hi] = self._greedy(candidates.item_index[lo:hi],
                                                          candidates.score[lo:hi], width)
        return _take_padded(candidates, order, {"rerank": objective})

    def _greedy(self, items: np.ndarray, score: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Greedy MMR over a chunk: (order (b, width) -1 padded, objective (b, width))."""
        cfg = self.config
        b, c = items.shape
        valid = (items >= 0) & np.isfinite(score)
        relevance = np.where(valid, score, 0.0).astype(np.float64)
        if cfg.score_normalisation == "minmax":
            low = np.where(valid, relevance, np.inf).min(axis=1, keepdims=True)
            high = np.where(valid, relevance, -np.inf).max(axis=1, keepdims=True)
            spread = high - low
            # a row of equal scores has no relevance signal: all 1, similarity decides
            relevance = np.where(spread > 0, (relevance - low) / np.where(spread > 0, spread, 1.0), 1.0)
        theta = cfg.relevance_weight
        sim = self.pairwise_similarity(items) if theta < 1.0 else np.zeros((b, 1, c), np.float32)
        window = width if cfg.window is None else cfg.window
        recent = np.zeros((b, max(min(window, width), 1), c), np.float32)  # ring buffer of sim rows
        available = valid.copy()
        rows = np.arange(b)
        order = np.full((b, width), PAD, np.int64)
        objective = np.full((b, width), -np.inf, np.float32)
        for t in range(width):  # loop over output positions only
            penalty = recent.max(axis=1) if t else 0.0
            value = np.where(available, theta * relevance - (1.0 - theta) * penalty, -np.inf)
            pick = np.argmax(value, axis=1)  # ties: the better-ranked (lower) column
            found = available[rows, pick]
            order[found, t] = pick[found]
            objective[found, t] = value[rows, pick][found]
            available[rows[found], pick[found]] = False
            if theta < 1.0:
                recent[:, t % recent.shape[1]] = np.where(found[:, None], sim[rows, pick], 0.0)
        return order, objective

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        v = self.item_vectors_
        writer.write_arrays(f"{prefix}mmr_item_vectors.npz", {
            "data": v.data.astype(np.float32), "indices": v.indices, "indptr": v.indptr,
            "shape": np.array(v.shape, np.int64), "content": self.content_vectors_,
            "feature_columns": np.array(self.feature_columns_, dtype=str),
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: MMRConfig,
             name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}mmr_item_vectors.npz")
        stage = cls(config, name)
        stage.item_vectors_ = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]),
            shape=tuple(int(v) for v in arrays["shape"]),
        )
        stage.content_vectors_ = arrays["content"].astype(np.float32)
        stage.feature_columns_ = [str(v) for v in arrays["feature_columns"]]
        return stage


def _content_block(table: pd.DataFrame) -> np.ndarray:
    """(n_items, d) standardised, row-L2-normalised numeric columns (missing = 0)."""
    x = table.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns: mean NaN, then 0 below
        mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    x = np.nan_to_num((x - mean) / np.where(std > 0, std, 1.0), nan=0.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _take_padded(candidates: Candidates, order: np.ndarray, stage_scores: dict[str, np.ndarray]) -> Candidates:
    """Reorder rows by ``order`` (-1 = padding slot) and add ``stage_scores``."""
    pad = order < 0
    taken = candidates.take(np.maximum(order, 0))

    def blank(a: np.ndarray, fill: float) -> np.ndarray:
        return np.where(pad, fill, a).astype(a.dtype)

    return Candidates(
        np.where(pad, PAD, taken.item_index),
        blank(taken.score, -np.inf),
        {k: blank(v, np.nan) for k, v in taken.channel_scores.items()},
        {**{k: blank(v, -np.inf) for k, v in taken.stage_scores.items()}, **stage_scores},
    )
