"""Cache recall: items the ranker liked for the user before, but that were not shown.

Wang Shusen, 召回09 "缓存召回": the ranker scores hundreds of items per request, and
re-ranking shows only a few dozen; the rest of the ranker's top (top 50 there) is
wasted. The cache keeps them, per user, as a retrieval channel for the next requests.
Entries leave the cache (退场机制) when

* the item is shown to the user (:meth:`CacheRetriever.mark_shown`);
* the user's cache is full: the entries that entered first leave first (``capacity``);
* the item was recalled ``max_recalls`` times (:meth:`CacheRetriever.mark_recalled`);
* the entry is older than ``ttl_days`` (at retrieval, as of the request time).

The state is one per-user store of (item, score, time, recalls) arrays, written by the
funnel after ranking (:meth:`CacheRetriever.remember`) and saved with the model. ``fit``
starts it empty: what was shown before fit cannot be in an empty cache, and items the
user has seen are dropped at retrieval through ``request.exclude``.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> cache = CacheRetriever().fit(data)
>>> now = int(data.interactions.timestamp.max()) + 1
>>> cache.remember(np.array([0]), np.array([[20, 21, 22]]), np.array([[0.9, 0.8, 0.7]]), now)
>>> cache.mark_shown(np.array([0]), np.array([[21]]))
>>> cache.retrieve(make_request(data, np.array([0, 1]), history_length=5, time=now), k=5).item_index.tolist()
[[20, 22], [-1, -1]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.base import Retriever
from recfunnel.stages.recall.sparse import exclusion_mask
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import PAD, Candidates, RequestBatch, top_k_columns

_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class CacheConfig:
    """Options of :class:`CacheRetriever`.

    Attributes:
        ttl_days: an entry expires this many days after it was remembered.
        capacity: entries kept per user; the oldest leave first.
        remember_top: per :meth:`CacheRetriever.remember` call, the best this many
            items of each user enter the cache.
        max_recalls: an entry leaves after being recalled this many times; None: never.
    """

    ttl_days: float = 3.0
    capacity: int = 200
    remember_top: int = 50
    max_recalls: int | None = 10


@dataclass(frozen=True, eq=False)
class CacheStore:
    """The cache entries of all users, sorted by (user, score descending, item).

    Attributes:
        user, item: (E,) int64.
        score: (E,) float32 the ranker's score when the item was remembered.
        time: (E,) int64 when it was remembered.
        recalls: (E,) int32 how often the channel returned it since.
    """

    user: np.ndarray
    item: np.ndarray
    score: np.ndarray
    time: np.ndarray
    recalls: np.ndarray

    @classmethod
    def empty(cls) -> CacheStore:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask: np.ndarray) -> CacheStore:
        return CacheStore(self.user[mask], self.item[mask], self.score[mask], self.time[mask], self.recalls[mask])

    def sorted(self) -> CacheStore:
        return self.subset(np.lexsort((self.item, -self.score, self.user)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"user": self.user, "item": self.item, "score": self.score, "time": self.time,
                "recalls": self.recalls}


def _pair_keys(user: np.ndarray, item: np.ndarray, span: int) -> np.ndarray:
    """One int64 key per (user, item) pair, for set operations."""
    return np.asarray(user, np.int64) * np.int64(span) + np.asarray(item, np.int64)


def _user_item_pairs(user_index: np.ndarray, items: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Flat (user, item) pairs from (B,) users and (B, C) items (-1 padded) or a (B, n) sparse matrix."""
    user_index = np.asarray(user_index, np.int64)
    if sp.issparse(items):
        m = sp.coo_matrix(items)
        keep = m.data != 0
        return user_index[m.row[keep]], m.col[keep].astype(np.int64)
    items = np.asarray(items, np.int64)
    if items.ndim != 2 or items.shape[0] != len(user_index):
        raise DataError(f"cache: items must be (B, C) for B={len(user_index)} users, got shape {items.shape}")
    users = np.broadcast_to(user_index[:, None], items.shape)
    keep = (items >= 0) & (users >= 0)
    return users[keep], items[keep]


class CacheRetriever(Retriever):
    """Items ranked high for the user before but not shown yet.

    Learned attributes:
        n_items_: items known at fit; later items are never cached.
        store_: :class:`CacheStore`; every update replaces it as a whole, so a retrieval
            running at the same time sees either the old or the new store.
    """

    kind = "cache"

    def __init__(self, config: CacheConfig | None = None, name: str | None = None):
        super().__init__(config or CacheConfig(), name)

    def _validate(self) -> None:
        cfg = self.config
        if not cfg.ttl_days > 0:
            raise ConfigError(f"cache: ttl_days must be positive, got {cfg.ttl_days}")
        if cfg.capacity < 1 or cfg.remember_top < 1:
            raise ConfigError("cache: capacity and remember_top must be >= 1")
        if cfg.max_recalls is not None and cfg.max_recalls < 1:
            raise ConfigError(f"cache: max_recalls must be >= 1 or None, got {cfg.max_recalls}")

    def fit(self, data: TrainingData) -> Self:
        """Start with an empty cache over the fitted catalogue."""
        self._validate()
        self.n_items_ = data.n_items
        self.store_ = CacheStore.empty()
        return self

    @property
    def _ttl_seconds(self) -> float:
        return self.config.ttl_days * _SECONDS_PER_DAY

    def remember(self, user_index: np.ndarray, items: np.ndarray, scores: np.ndarray,
                 time: int | np.ndarray) -> None:
        """Cache the best ranked items of each user (the funnel calls this after ranking).

        The ``remember_top`` best valid items of each row enter; an item already cached
        for the user is refreshed (new score and time, recall count reset). Then each
        user keeps the ``capacity`` most recent entries, and entries older than
        ``ttl_days`` before the newest ``time`` are dropped for good.

        Args:
            user_index: (B,) int64 users; -1 rows are ignored.
            items: (B, C) int64 ranked items, -1 padded; items unknown at fit are ignored.
            scores: (B, C) ranking scores; non-finite scores are ignored.
            time: scalar or (B,) int64 time of the ranking.
        """
        cfg = self.config
        user_index = np.asarray(user_index, np.int64)
        items = np.asarray(items, np.int64)
        scores = np.asarray(scores, np.float64)
        if items.ndim != 2 or items.shape != scores.shape or items.shape[0] != len(user_index):
            raise DataError(f"cache.remember: items {items.shape} and scores {scores.shape} must be "
                            f"(B, C) with B={len(user_index)}")
        times = np.broadcast_to(np.asarray(time, np.int64), user_index.shape)
        valid = (items >= 0) & (items < self.n_items_) & np.isfinite(scores) & (user_index >= 0)[:, None]
        best = top_k_columns(np.where(valid, scores, -np.inf), cfg.remember_top)
        items = np.take_along_axis(items, best, axis=1)
        valid = np.take_along_axis(valid, best, axis=1)
        rows, cols = np.nonzero(valid)
        new = CacheStore(user_index[rows], items[rows, cols],
                         np.take_along_axis(scores, best, axis=1)[rows, cols].astype(np.float32),
                         times[rows], np.zeros(len(rows), np.int32))
        old = self.store_
        merged = CacheStore(*(np.concatenate([a, b]) for a, b in zip(old.arrays().values(), new.arrays().values(),
                                                                     strict=True)))
        is_new = np.r_[np.zeros(len(old), bool), np.ones(len(new), bool)]
        # one entry per (user, item): the newest, and the new one on equal times
        order = np.lexsort((is_new, merged.time, merged.item, merged.user))
        u, i = merged.user[order], merged.item[order]
        last = np.ones(len(order), bool)
        last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
        merged = merged.subset(order[last])
        # capacity: the entries that entered first leave first
        order = np.lexsort((-merged.score, -merged.time, merged.user))
        u = merged.user[order]
        rank = np.arange(len(order)) - np.searchsorted(u, u, side="left")
        merged = merged.subset(order[rank < cfg.capacity])
        if len(new):
            merged = merged.subset(merged.time >= times.max() - self._ttl_seconds)
        self.store_ = merged.sorted()

    def _drop_pairs(self, user_index: np.ndarray, items: np.ndarray | sp.spmatrix) -> tuple[CacheStore, np.ndarray]:
        """The store and a mask of its entries matching the given (user, item) pairs."""
        store = self.store_
        users, its = _user_item_pairs(user_index, items)
        span = max(self.n_items_, int(its.max(initial=-1)) + 1, 1)
        hit = np.isin(_pair_keys(store.user, store.item, span), _pair_keys(users, its, span))
        return store, hit

    def mark_shown(self, user_index: np.ndarray, items: np.ndarray | sp.spmatrix) -> None:
        """Remove items shown to the users (exposed items leave the cache).

        Args:
            user_index: (B,) int64 users.
            items: (B, C) int64 shown items (-1 padded) or a (B, n) sparse matrix.
        """
        store, shown = self._drop_pairs(user_index, items)
        self.store_ = store.subset(~shown)

    def mark_recalled(self, user_index: np.ndarray, items: np.ndarray | sp.spmatrix) -> None:
        """Count one more recall of the given cached items (call with what the funnel kept).

        Entries recalled ``max_recalls`` times leave the cache.

        Args:
            user_index: (B,) int64 users.
            items: (B, C) int64 recalled items (-1 padded) or a (B, n) sparse matrix.
        """
        store, recalled = self._drop_pairs(user_index, items)
        recalls = store.recalls + recalled.astype(np.int32)
        store = CacheStore(store.user, store.item, store.score, store.time, recalls)
        if self.config.max_recalls is not None:
            store = store.subset(recalls < self.config.max_recalls)
        self.store_ = store

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Each user's cached items: remembered at or before the request time, not expired,
        not excluded, best remembered score first.

        Args:
            request: B users; ``user_index``, ``time`` and ``exclude`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by the remembered ranking score; users with an
            empty cache (unknown users included) get padding.
        """
        store = self.store_
        b = len(request)
        users = request.user_index
        lo = np.searchsorted(store.user, users, side="left")
        hi = np.where(users >= 0, np.searchsorted(store.user, users, side="right"), lo)
        count = hi - lo
        # CSR gather of every row's segment of the store
        row = np.repeat(np.arange(b), count)
        position = np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count) + np.repeat(lo, count)
        t = request.time[row]
        age = t - store.time[position]
        keep = (age >= 0) & (age <= self._ttl_seconds)
        keep &= ~exclusion_mask(request.exclude, row, store.item[position])
        if self.config.max_recalls is not None:
            keep &= store.recalls[position] < self.config.max_recalls
        row, position = row[keep], position[keep]
        slot = np.arange(len(row)) - np.searchsorted(row, row, side="left")  # segments are score-sorted
        chosen = slot < max(k, 0)
        row, position, slot = row[chosen], position[chosen], slot[chosen]
        width = int(slot.max(initial=-1)) + 1
        items = np.full((b, width), PAD, np.int64)
        score = np.full((b, width), -np.inf, np.float32)
        items[row, slot] = store.item[position]
        score[row, slot] = store.score[position]
        return Candidates(items, score, {self.name: score})

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_arrays(f"{prefix}cache.npz", {**self.store_.arrays(), "n_items": np.array(self.n_items_)})

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: CacheConfig,
             name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}cache.npz")
        stage = cls(config, name)
        stage.n_items_ = int(arrays["n_items"])
        stage.store_ = CacheStore(arrays["user"].astype(np.int64), arrays["item"].astype(np.int64),
                                  arrays["score"].astype(np.float32), arrays["time"].astype(np.int64),
                                  arrays["recalls"].astype(np.int32)).sorted()
        return stage
