"""Cluster recall: the newest items of the content clusters a user has been reading.

A cold-start channel (seed 002 §4 "冷启动", 聚类召回): a new item has no
interactions, so ItemCF, Swing and ID embeddings cannot return it, but it has
content. The channel works in three steps:

1. **Fit.** Item content vectors (:class:`ContentEncoder`: the dense
   ``content_*`` columns, else a multi-hot of the categorical columns) are
   L2-normalised and clustered by spherical k-means (``faiss.Kmeans``,
   ``spherical=True``: cosine k-means, Dhillon & Modha 2001). With
   ``n_clusters=0`` the count is ``round(sqrt(n_items / 10))`` clipped to
   [2, 1000] (seed 002 uses 1000 clusters for a catalogue of tens of millions).
2. **Index.** cluster -> its items, newest first, by ``publish_time`` (else the
   item's first interaction, else the newest training event: an item in the
   catalogue that nobody touched is taken to be new). :meth:`ClusterRetriever.add_items`
   assigns an item published online to its nearest centroid at once.
3. **Retrieve.** The seeds are the user's last ``seeds`` history items with a
   cluster; seed ``p`` (0 = newest) weighs ``1 / (1 + recency_decay * p)`` and a
   cluster's share is the sum of its seeds' weights over the total. From every
   seed cluster the window is its newest ``items_per_cluster`` items published
   at or before ``request.time`` (and at most ``max_item_age_days`` old); excluded
   items leave the window. The ``k`` slots are then apportioned between the
   clusters in proportion to their shares by the D'Hondt (highest averages)
   rule: the ``j``-th kept item of a cluster (0 = newest) scores
   ``share / (j + 1)`` and the top-k scores win, so a cluster with twice the
   share gets about twice the slots, newest items first.

>>> import pandas as pd
>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()  # no content_* columns: the category multi-hot is used
>>> cluster = ClusterRetriever(ClusterConfig(n_clusters=2)).fit(data)
>>> cluster.encoder_.source_, cluster.centroids_.shape
('categorical', (2, 2))
>>> out = cluster.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
>>> bool((out.item_index[0] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.base import Incremental, NewItems, Retriever
from recfunnel.stages.recall.sparse import exclusion_mask, sparse_top_k
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import PAD, Candidates, RequestBatch

#: numeric item columns with this prefix are the dense content vector (as the simulator writes them)
CONTENT_PREFIX = "content_"

#: categorical columns whose distinct values exceed this fraction of the items having a value
#: (ids, titles) are skipped by the multi-hot fallback: they make items similar to no one
_MAX_DISTINCT_RATIO = 0.5

#: cells of the (pairs, window) blocks processed at once during retrieval (about 100 MB)
_CHUNK_CELLS = 1 << 22

_SECONDS_PER_DAY = 86_400

#: multiply-adds per k-means iteration below which faiss runs on one thread: OpenMP barriers
#: cost more than such small jobs (250 points: 1.3 ms on one thread, 17-1100 ms on two busy cores)
_SINGLE_THREAD_WORK = 1 << 24


@contextmanager
def _faiss_threads(work: int) -> Iterator[None]:
    """Run the faiss calls inside on one OpenMP thread when ``work`` is small, then restore."""
    import faiss

    before = faiss.omp_get_max_threads()
    if work < _SINGLE_THREAD_WORK:
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class ContentEncoder:
    """Unit-length content vectors of items, from the columns of an item table.

    Sources, tried in order (``source_`` says which one was used):

    * ``"content"``: the numeric columns whose name starts with ``prefix`` (the
      simulator's ``content_0..content_{D-1}``, or any pre-trained text / image
      embedding); a missing cell takes the column mean.
    * ``"categorical"`` (only with ``categorical_fallback``): a multi-hot of every
      str / tuple-of-str column (category, tags, author ...). Each column's block
      is L2-normalised and scaled by ``1 / sqrt(n_columns)`` so every column
      weighs the same; columns with more distinct values than half the items are
      skipped. A vocabulary larger than ``max_dims`` is reduced to ``max_dims``
      by a seeded Gaussian random projection (Johnson-Lindenstrauss: inner
      products are preserved in expectation), a smaller one is kept as is.
    * ``"none"``: no usable column; every vector is zero.

    The "raw" vectors (:meth:`raw_vectors`, ``dim`` columns: the content
    columns, or the projected multi-hot) are centred by their fitted mean (a
    direction every item shares says nothing about which items are alike) and
    L2-normalised by :meth:`normalise`. An item without content (all its cells
    missing) gets a zero vector.

    Learned attributes:
        source_: "content", "categorical" or "none".
        columns_: names of the item columns used.
        tokens_: (V,) str vocabulary of the categorical source (empty otherwise).
        token_column_: (V,) int64 position in ``columns_`` of each token.
        projection_: (V, dim) float32 random projection, or (0, 0) when not projected.
        mean_: (dim,) float64 mean raw vector of the items with content.

    >>> items = pd.DataFrame({"content_0": [1.0, 3.0, np.nan], "content_1": [0.0, 0.0, np.nan]})
    >>> encoder = ContentEncoder().fit(items)
    >>> vectors, has_content = encoder.transform(items)
    >>> vectors.round(3).tolist(), has_content.tolist()
    ([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], [True, True, False])
    """

    def __init__(self, prefix: str = CONTENT_PREFIX, *, categorical_fallback: bool = True,
                 max_dims: int = 64, seed: int = 0):
        self.prefix = prefix
        self.categorical_fallback = categorical_fallback
        self.max_dims = max_dims
        self.seed = seed

    @property
    def dim(self) -> int:
        """Number of columns of the raw and the normalised vectors."""
        return len(self.mean_)

    def fit(self, items: pd.DataFrame) -> Self:
        """Choose the source and learn its vocabulary, projection and mean.

        Args:
            items: item table, one row per item (e.g. ``TrainingData.item_features``).
        """
        content = [c for c in items.columns
                   if str(c).startswith(self.prefix) and pd.api.types.is_numeric_dtype(items[c])]
        self.tokens_ = np.zeros(0, str)
        self.token_column_ = np.zeros(0, np.int64)
        self.projection_ = np.zeros((0, 0), np.float32)
        if content:
            self.source_ = "content"
            self.columns_ = [str(c) for c in content]
            x = items[content].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
            present = np.isfinite(x)
            totals = np.where(present, x, 0.0).sum(axis=0)
            # the column means fill missing cells, so centring maps them to 0
            self.mean_ = totals / np.maximum(present.sum(axis=0), 1)
            return self
        self.columns_, tokens, token_column = [], [], []
        if self.categorical_fallback:
            for column in items.columns:  # a loop over feature columns, a handful
                _, values = _column_tokens(items[column])
                if values is None:
                    continue
                rows, vocabulary = values
                if len(vocabulary) == 0 or len(vocabulary) > _MAX_DISTINCT_RATIO * len(np.unique(rows)):
                    continue
                token_column.append(np.full(len(vocabulary), len(self.columns_), np.int64))
                tokens.append(vocabulary)
                self.columns_.append(str(column))
        if not self.columns_:
            self.source_ = "none"
            self.mean_ = np.zeros(0)
            return self
        self.source_ = "categorical"
        self.tokens_ = np.concatenate(tokens).astype(str)
        self.token_column_ = np.concatenate(token_column)
        if len(self.tokens_) > self.max_dims:
            rng = np.random.default_rng(self.seed)
            self.projection_ = (rng.standard_normal((len(self.tokens_), self.max_dims))
                                / np.sqrt(self.max_dims)).astype(np.float32)
        self.mean_ = np.zeros(len(self.tokens_) if not self.projection_.size else self.max_dims)
        self.mean_ = self._raw_mean(self.raw_vectors(items))
        return self

    @staticmethod
    def _raw_mean(raw: np.ndarray) -> np.ndarray:
        """(dim,) mean of the raw rows that have content (zeros when none has)."""
        present = ~np.isnan(raw).all(axis=1)
        if not present.any():
            return np.zeros(raw.shape[1])
        return np.nan_to_num(raw[present].astype(np.float64)).mean(axis=0)

    def raw_vectors(self, items: pd.DataFrame) -> np.ndarray:
        """(n, dim) float32 raw vectors of the rows of an item table; NaN rows have no content.

        This is the input space of :meth:`ClusterRetriever.add_items`: for the
        "content" source simply the content columns, in ``columns_`` order.

        Raises:
            DataError: when the table lacks a column the encoder was fitted on.
        """
        missing = [c for c in self.columns_ if c not in set(map(str, items.columns))]
        if missing:
            raise DataError(f"content encoder: item table has no column(s) {missing}")
        by_name = {str(c): c for c in items.columns}
        n = len(items)
        if self.source_ == "content":
            x = items[[by_name[c] for c in self.columns_]].apply(pd.to_numeric, errors="coerce")
            x = x.to_numpy(np.float64)
            empty = ~np.isfinite(x).any(axis=1)
            x = np.where(np.isfinite(x), x, self.mean_)
            x[empty] = np.nan
            return x.astype(np.float32)
        if self.source_ == "none":
            return np.full((n, 0), np.nan, np.float32)
        blocks = []
        scale = 1.0 / np.sqrt(len(self.columns_))
        for position, column in enumerate(self.columns_):  # a loop over feature columns
            vocabulary = self.tokens_[self.token_column_ == position]
            pairs, _ = _column_tokens(items[by_name[column]])
            rows, tokens = pairs if pairs is not None else (np.zeros(0, np.int64), np.zeros(0, str))
            code = pd.Index(vocabulary).get_indexer(tokens)
            rows, code = rows[code >= 0], code[code >= 0]
            per_row = np.bincount(rows, minlength=n).astype(np.float64)
            # each column's block has unit rows, then 1 / sqrt(n_columns): every column weighs the same
            data = scale / np.sqrt(per_row[rows])
            blocks.append(sp.csr_matrix((data, (rows, code)), shape=(n, len(vocabulary))))
        multi_hot = sp.hstack(blocks, format="csr")
        empty = np.diff(multi_hot.indptr) == 0
        raw = (multi_hot @ self.projection_) if self.projection_.size else multi_hot.toarray()
        raw = np.asarray(raw, np.float32)
        raw[empty] = np.nan
        return raw

    def normalise(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre and L2-normalise raw vectors.

        Args:
            raw: (n, dim) raw vectors; an all-NaN row means "no content".

        Returns:
            (vectors (n, dim) float32 unit rows, zero without content; has_content (n,) bool).
        """
        raw = np.asarray(raw, np.float64)
        raw = raw.reshape(1, -1) if raw.ndim == 1 else raw
        present = ~np.isnan(raw).all(axis=1) if self.dim else np.zeros(len(raw), bool)
        x = np.nan_to_num(raw - self.mean_, nan=0.0)
        x[~present] = 0.0
        norm = np.linalg.norm(x, axis=1)
        has_content = present & (norm > 0)
        x = x / np.where(has_content, norm, 1.0)[:, None]
        return x.astype(np.float32), has_content

    def transform(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`normalise` of :meth:`raw_vectors`: (vectors (n, dim), has_content (n,))."""
        return self.normalise(self.raw_vectors(items))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays (saved with the model, no pickle)."""
        return {
            "source": np.array(self.source_), "columns": np.array(self.columns_, dtype=str),
            "tokens": self.tokens_, "token_column": self.token_column_,
            "projection": self.projection_, "mean": self.mean_,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ContentEncoder:
        """Restore an encoder written by :meth:`to_arrays`."""
        encoder = cls()
        encoder.source_ = str(arrays["source"])
        encoder.columns_ = [str(c) for c in arrays["columns"]]
        encoder.tokens_ = arrays["tokens"].astype(str)
        encoder.token_column_ = arrays["token_column"].astype(np.int64)
        encoder.projection_ = arrays["projection"].astype(np.float32)
        encoder.mean_ = arrays["mean"].astype(np.float64)
        return encoder


def _column_tokens(values: pd.Series) -> tuple[tuple[np.ndarray, np.ndarray] | None,
                                                tuple[np.ndarray, np.ndarray] | None]:
    """(row, token) pairs of a str / tuple-of-str column, and (rows, vocabulary).

    Returns (None, None) for numeric and boolean columns (not categorical).
    """
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None, None
    series = values.reset_index(drop=True)
    series = series[series.notna().to_numpy()]
    is_multi = series.map(lambda v: isinstance(v, tuple | list | np.ndarray)).to_numpy(bool)
    if is_multi.any():
        series = series.map(lambda v: tuple(v) if isinstance(v, tuple | list | np.ndarray) else (v,))
        series = series.explode().dropna()
    pairs = pd.DataFrame({"row": series.index.to_numpy(np.int64), "token": series.astype(str).to_numpy()})
    pairs = pairs.drop_duplicates()
    rows, tokens = pairs["row"].to_numpy(np.int64), pairs["token"].to_numpy().astype(str)
    return (rows, tokens), (rows, np.unique(tokens))


def item_times(data: TrainingData, time_column: str) -> tuple[np.ndarray, int]:
    """When each item became available, and the newest training event.

    An item's time is its ``time_column`` value (publish time) when the item
    table has one, else its first training interaction, else the newest
    training event (an item in the catalogue that nobody touched is taken to be new).

    Returns:
        (item_time (n_items,) int64, reference_time: the newest training event).
    """
    inter = data.interactions
    reference = int(inter.timestamp.max()) if len(inter) else 0
    first = np.full(data.n_items, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, inter.item_index, inter.timestamp.astype(np.int64))
    time = np.where(first < np.iinfo(np.int64).max, first, reference)
    features = data.item_features
    if time_column in features.columns and pd.api.types.is_numeric_dtype(features[time_column]):
        published = pd.to_numeric(features[time_column], errors="coerce").to_numpy(np.float64)
        known = np.isfinite(published)
        time = np.where(known, np.nan_to_num(published).astype(np.int64), time)
    return time.astype(np.int64), reference


@dataclass(frozen=True)
class ClusterConfig:
    """Options of :class:`ClusterRetriever`.

    Attributes:
        n_clusters: k-means clusters; 0 = ``round(sqrt(n_items / 10))`` clipped to [2, 1000]
            (never more than the items with content).
        items_per_cluster: window of each cluster: its newest items available at request time.
        seeds: the user's last ``seeds`` history items (with a cluster) choose the clusters.
        iterations: k-means iterations.
        recency_decay: seed ``p`` (0 = newest) weighs ``1 / (1 + recency_decay * p)``.
        max_item_age_days: items published more than this before the request are left out; None: any age.
        content_prefix: numeric item columns with this prefix are the content vector.
        max_projection_dims: dimensions of the random projection of the categorical fallback.
        time_column: item column holding the publish time (unix seconds).
        seed: seed of k-means and of the random projection.
    """

    n_clusters: int = 0
    items_per_cluster: int = 100
    seeds: int = 10
    iterations: int = 20
    recency_decay: float = 0.1
    max_item_age_days: float | None = None
    content_prefix: str = CONTENT_PREFIX
    max_projection_dims: int = 64
    time_column: str = "publish_time"
    seed: int = 0


class ClusterRetriever(Retriever, Incremental):
    """The newest items of the content clusters of the user's recent items.

    Learned attributes:
        encoder_: the fitted :class:`ContentEncoder`.
        centroids_: (n_clusters, dim) float32 unit centroids.
        item_cluster_: (n_items,) int64 cluster of each item, -1 without content.
            Grows with :meth:`add_items`.
        item_time_: (n_items,) int64 time each item became available (see :func:`item_times`).
        reference_time_: newest training event (int).
    """

    kind = "cluster"

    def __init__(self, config: ClusterConfig | None = None, name: str | None = None):
        super().__init__(config or ClusterConfig(), name)
        self._sorted: dict[str, np.ndarray] | None = None

    def _validate(self) -> None:
        cfg = self.config
        if cfg.n_clusters < 0:
            raise ConfigError(f"cluster: n_clusters must be >= 0 (0 = automatic), got {cfg.n_clusters}")
        for field in ("items_per_cluster", "seeds", "iterations", "max_projection_dims"):
            if getattr(cfg, field) < 1:
                raise ConfigError(f"cluster: {field} must be >= 1, got {getattr(cfg, field)}")
        if cfg.recency_decay < 0:
            raise ConfigError(f"cluster: recency_decay must be >= 0, got {cfg.recency_decay}")
        if cfg.max_item_age_days is not None and not cfg.max_item_age_days > 0:
            raise ConfigError(f"cluster: max_item_age_days must be positive or None, got {cfg.max_item_age_days}")

    def fit(self, data: TrainingData) -> Self:
        """Cluster the items' content vectors and index every item by cluster and time.

        Raises:
            DataError: the items have neither ``content_*`` columns nor a usable categorical column.
        """
        import faiss

        self._validate()
        cfg = self.config
        encoder = ContentEncoder(cfg.content_prefix, max_dims=cfg.max_projection_dims, seed=cfg.seed)
        encoder.fit(data.item_features)
        vectors, has_content = encoder.transform(data.item_features)
        n_content = int(has_content.sum())
        if n_content == 0:
            raise DataError(
                f"cluster: items have no '{cfg.content_prefix}*' columns and no usable categorical column "
                "(category, tags ...) to cluster")
        n_clusters = cfg.n_clusters or int(np.clip(round(np.sqrt(data.n_items / 10)), 2, 1000))
        n_clusters = min(n_clusters, n_content)
        kmeans = faiss.Kmeans(encoder.dim, n_clusters, niter=cfg.iterations, seed=cfg.seed, spherical=True,
                              min_points_per_centroid=1, verbose=False)
        with _faiss_threads(n_content * n_clusters * encoder.dim):
            kmeans.train(np.ascontiguousarray(vectors[has_content]))
        self.encoder_ = encoder
        self.centroids_ = np.asarray(kmeans.centroids, np.float32)
        item_cluster = np.full(data.n_items, -1, np.int64)
        item_cluster[has_content] = self.assign(vectors[has_content])
        self.item_cluster_ = item_cluster
        self.item_time_, self.reference_time_ = item_times(data, cfg.time_column)
        self._sorted = None
        return self

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """(n,) int64 nearest centroid (largest cosine) of (n, dim) unit vectors."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.centroids_.shape[1])
        step = max(1, _CHUNK_CELLS // len(self.centroids_))  # bounds the (rows, clusters) block
        blocks = [np.argmax(vectors[lo:lo + step] @ self.centroids_.T, axis=1)
                  for lo in range(0, len(vectors), step)]  # a loop over row batches
        return np.concatenate(blocks).astype(np.int64) if blocks else np.zeros(0, np.int64)

    def publish(self, items: NewItems) -> bool:
        """Index published items by their content (:meth:`add_items`).

        Returns:
            False (nothing indexed) when the items lack a column of the content encoder.
        """
        if not set(self.encoder_.columns_) <= set(map(str, items.attributes.columns)):
            return False
        self.add_items(items.item_index, self.encoder_.raw_vectors(items.attributes), items.publish_time)
        return True

    def add_items(self, item_index: np.ndarray, vectors: np.ndarray, publish_time: np.ndarray | int) -> None:
        """Index newly published items at once (online service), or re-index changed ones.

        Args:
            item_index: (n,) int64 item indices; may exceed the fitted catalogue (new items).
            vectors: (n, dim) raw content vectors in the encoder's input space: for the
                "content" source the ``content_*`` values in ``encoder_.columns_`` order;
                in general ``encoder_.raw_vectors(new_item_rows)``. All-NaN rows have no
                content and are left out of every cluster.
            publish_time: (n,) or scalar int64 unix seconds.
        """
        items = np.asarray(item_index, np.int64).reshape(-1)
        if len(items) == 0:
            return
        if (items < 0).any():
            raise ValueError("add_items: item indices must be >= 0")
        unit, has_content = self.encoder_.normalise(vectors)
        if len(unit) != len(items):
            raise ValueError(f"add_items: {len(items)} items but {len(unit)} vectors")
        clusters = np.where(has_content, self.assign(unit), -1)
        size = int(items.max()) + 1
        if size > len(self.item_cluster_):
            grow = size - len(self.item_cluster_)
            self.item_cluster_ = np.concatenate([self.item_cluster_, np.full(grow, -1, np.int64)])
            self.item_time_ = np.concatenate([self.item_time_, np.full(grow, self.reference_time_, np.int64)])
        self.item_cluster_[items] = clusters
        self.item_time_[items] = np.broadcast_to(np.asarray(publish_time, np.int64), items.shape)
        self._sorted = None  # rebuilt lazily by the next retrieval

    def _index(self) -> dict[str, np.ndarray]:
        """Items sorted by (cluster, time descending, index): one searchable key per item.

        ``key = cluster * (U + 1) + (U - 1 - time_rank)`` with ``time_rank`` the rank of the
        item's time among the ``U`` distinct times, so a cluster's items are one key range,
        newest first, and "published at or before t" is a single ``searchsorted``.
        Rebuilt (one sort, O(n log n)) after :meth:`add_items`.
        """
        if self._sorted is None:
            indexed = np.flatnonzero(self.item_cluster_ >= 0)
            unique_times, time_rank = np.unique(self.item_time_[indexed], return_inverse=True)
            span = len(unique_times) + 1
            key = self.item_cluster_[indexed] * span + (span - 2 - time_rank.reshape(-1))
            order = np.lexsort((indexed, key))
            self._sorted = {"key": key[order], "item": indexed[order], "times": unique_times,
                            "span": np.int64(span)}
        return self._sorted

    def _seed_shares(self, request: RequestBatch) -> sp.csr_matrix:
        """(B, n_clusters) CSR share of each seed cluster of each user (rows sum to 1 or 0)."""
        cfg = self.config
        history = request.history
        n_known = len(self.item_cluster_)
        valid = (history >= 0) & (history < n_known)
        cluster = np.where(valid, self.item_cluster_[np.clip(history, 0, n_known - 1)], -1)
        valid &= cluster >= 0
        position = np.cumsum(valid, axis=1) - 1  # rank among the usable seeds, 0 = newest
        valid &= position < cfg.seeds
        weight = 1.0 / (1.0 + cfg.recency_decay * position)
        rows = np.broadcast_to(np.arange(len(request))[:, None], history.shape)
        shares = sp.csr_matrix((weight[valid], (rows[valid], cluster[valid])),
                               shape=(len(request), len(self.centroids_)))
        shares.sum_duplicates()
        totals = np.asarray(shares.sum(axis=1)).ravel()
        shares.data /= np.repeat(totals, np.diff(shares.indptr))
        return shares

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """The newest items of the user's seed clusters, apportioned by share, minus ``request.exclude``.

        Args:
            request: B users; ``history``, ``time`` and ``exclude`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored ``share / (j + 1)`` (D'Hondt quotient, ``j`` the item's
            place among its cluster's kept items, 0 = newest); users without a usable
            history get padding. Items published after ``request.time`` are never returned.
        """
        b = len(request)
        if b == 0 or k <= 0:
            return Candidates.empty(b)
        shares = self._seed_shares(request)
        window = self.config.items_per_cluster
        step = max(1, _CHUNK_CELLS // (window * min(self.config.seeds, shares.shape[1])))
        blocks = [self._retrieve_rows(request, shares, lo, min(lo + step, b), k)
                  for lo in range(0, b, step)]  # a loop over user batches
        width = max(items.shape[1] for items, _ in blocks)
        items = np.concatenate([np.pad(i, ((0, 0), (0, width - i.shape[1])), constant_values=PAD)
                                for i, _ in blocks])
        score = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=-np.inf)
                                for _, s in blocks]).astype(np.float32)
        return Candidates(items, score, {self.name: score})

    def _retrieve_rows(self, request: RequestBatch, shares: sp.csr_matrix, lo: int, hi: int,
                       k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (items, scores) of the request rows ``lo..hi``."""
        cfg = self.config
        index = self._index()
        block = shares[lo:hi]
        pair_row = np.repeat(np.arange(hi - lo), np.diff(block.indptr))
        pair_cluster = block.indices.astype(np.int64)
        if len(pair_row) == 0 or len(index["item"]) == 0:
            return np.full((hi - lo, 0), PAD, np.int64), np.zeros((hi - lo, 0), np.float32)
        span, times = index["span"], index["times"]
        t = request.time[lo:hi][pair_row].astype(np.int64)
        base = pair_cluster * span
        # first position of the cluster's items published at or before t (keys grow as time falls)
        n_before = np.searchsorted(times, t, side="right")
        start = np.searchsorted(index["key"], base + (span - 1 - n_before), side="left")
        if cfg.max_item_age_days is None:
            end = np.searchsorted(index["key"], base + span, side="left")
        else:
            oldest = t - int(round(cfg.max_item_age_days * _SECONDS_PER_DAY))
            n_too_old = np.searchsorted(times, oldest, side="left")
            end = np.searchsorted(index["key"], base + (span - 2 - n_too_old), side="right")
        end = np.maximum(end, start)
        slot = start[:, None] + np.arange(cfg.items_per_cluster)
        in_window = slot < end[:, None]
        items = np.where(in_window, index["item"][np.minimum(slot, len(index["item"]) - 1)], PAD)
        keep = in_window & ~exclusion_mask(request.exclude[lo:hi], pair_row[:, None], items)
        place = np.cumsum(keep, axis=1) - 1
        keep &= place < k
        # D'Hondt: the j-th kept item of a cluster with share s has quotient s / (j + 1)
        quotient = block.data[:, None] / (np.maximum(place, 0) + 1.0)
        rows = np.broadcast_to(pair_row[:, None], items.shape)
        scores = sp.csr_matrix((quotient[keep], (rows[keep], items[keep])),
                               shape=(hi - lo, len(self.item_cluster_)))
        return sparse_top_k(scores, k)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_arrays(f"{prefix}cluster.npz", {
            "centroids": self.centroids_, "item_cluster": self.item_cluster_, "item_time": self.item_time_,
            "reference_time": np.int64(self.reference_time_),
            **{f"encoder_{key}": value for key, value in self.encoder_.to_arrays().items()},
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any, name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}cluster.npz")
        stage = cls(config, name)
        stage.encoder_ = ContentEncoder.from_arrays(
            {key[len("encoder_"):]: value for key, value in arrays.items() if key.startswith("encoder_")})
        stage.centroids_ = arrays["centroids"].astype(np.float32)
        stage.item_cluster_ = arrays["item_cluster"].astype(np.int64)
        stage.item_time_ = arrays["item_time"].astype(np.int64)
        stage.reference_time_ = int(arrays["reference_time"])
        return stage
