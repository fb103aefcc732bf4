"""Look-alike recall: a new item goes to users who look like the users who took it.

A cold-start channel (seed 002 §4 "冷启动", Look-Alike 人群扩散): an item with a
handful of interactions cannot be scored by co-occurrence yet, but the users who
interacted with it (the seed users) say who it is for. Its look-alike vector is
the mean of the seed users' vectors, updated nearline one event at a time
("每当有用户交互该物品, 更新笔记的特征向量"); a request scores the pool of
such items by the inner product with the user's own vector.

* **Item vectors** (``item_vectors``): the item's unit content vector
  (:class:`~recfunnel.stages.recall.cluster.ContentEncoder` over ``content_*``),
  or, without content columns, a truncated SVD of the binary user-item matrix
  (``scipy.sparse.linalg.svds``; item vector ``V_i * sqrt(sigma)``, L2-normalised:
  PureSVD, Cremonesi et al., RecSys 2010), a cheap learned embedding.
* **User vectors** (:meth:`LookalikeRetriever.user_vectors`): the unit-length
  recency-weighted sum of the user's history item vectors, read from the request
  (so an online event counts at once). A history item at place ``p`` (0 = newest)
  weighs ``1 / (1 + recency_decay * p)`` ("position"), ``2 ** (-age / half_life)``
  ("time") or 1 ("none").
* **Look-alike vectors**: per pool item a running sum ``s_i`` of its seed users'
  vectors and a count ``n_i``; :meth:`LookalikeRetriever.update` adds one event in
  O(d), and the mean is ``s_i / n_i``. Fit replays the training events of the
  pool items, each with the user's vector from the history strictly before the
  event (what the nearline consumer would have seen). Events of users without a
  vector (no earlier history) are skipped and not counted.
* **The pool** (which items the channel serves): an item enters on its first
  counted event; at fit, the items whose training events are replayed are those
  at most ``max_item_age_days`` old at the newest training event and with at most
  ``max_interactions`` events. At retrieval an item is eligible when
  ``min_interactions <= n_i <= max_interactions``, it was published at or before
  ``request.time`` and is at most ``max_item_age_days`` old then (item time:
  publish time, else first interaction). Old items stay in the buffers until
  :meth:`LookalikeRetriever.prune`.
* **Scoring**: ``score = <u, s_i> / (n_i + shrinkage)``, the mean shrunk towards
  zero by ``shrinkage`` pseudo-events, so one seed user is weaker evidence than
  ten that agree; only scores above ``min_score`` are returned. A pool of at most
  ``exact_pool_size`` items is scored by an exact numpy matmul; a larger one by a
  faiss ``IndexFlatIP`` (exact) that is rebuilt lazily after updates, fetching
  enough extra items to survive the exclusions and the time filters.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()  # no content columns: SVD item vectors
>>> lookalike = LookalikeRetriever(LookalikeConfig(max_item_age_days=None)).fit(data)
>>> lookalike.item_vector_source_, lookalike.pool_size_
('svd', 30)
>>> out = lookalike.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
>>> bool((out.item_index[0] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.base import EventBatch, Incremental, NewItems, Retriever
from recfunnel.stages.recall.cluster import CONTENT_PREFIX, ContentEncoder, item_times
from recfunnel.stages.recall.sparse import exclusion_mask
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.types import PAD, Candidates, RequestBatch, top_k_columns

_SECONDS_PER_DAY = 86_400.0

#: cells of the (users, pool items) score blocks computed at once (16 MB of float32)
_CHUNK_CELLS = 1 << 22

#: item time of the spare entries past the known items (set by their first event)
_UNSET = np.iinfo(np.int64).min

#: training events replayed per batch at fit (bounds the (events, history) request)
_EVENT_BATCH = 1 << 16


@dataclass(frozen=True)
class LookalikeConfig:
    """Options of :class:`LookalikeRetriever`.

    Attributes:
        item_vectors: "content" (``content_*`` columns), "svd" (truncated SVD of the
            user-item matrix) or "auto" (content when the columns exist, else SVD).
        svd_dims: dimensions of the SVD item vectors.
        content_prefix: numeric item columns with this prefix are the content vector.
        recency: history weights of the user vector: "position", "time" or "none".
        recency_decay: slope of the "position" weights ``1 / (1 + recency_decay * p)``.
        half_life_days: half-life of the "time" weights.
        history_length: history items of the user vector of each replayed training event.
        min_interactions: an item is retrieved once this many seed users were counted.
        max_interactions: items with more counted events leave the pool (they are no
            longer cold: collaborative channels serve them); None: no limit.
        max_item_age_days: items older than this (at fit: than the newest training event;
            at retrieval: than the request) are not served; None: any age.
        shrinkage: pseudo-events at the origin added to each item's count in the score.
        min_score: only items scoring above this are returned.
        exact_pool_size: pools up to this size are scored by numpy, larger ones by faiss.
        time_column: item column holding the publish time (unix seconds).
        seed: seed of the SVD.
    """

    item_vectors: Literal["auto", "content", "svd"] = "auto"
    svd_dims: int = 32
    content_prefix: str = CONTENT_PREFIX
    recency: Literal["position", "time", "none"] = "position"
    recency_decay: float = 0.1
    half_life_days: float = 7.0
    history_length: int = 50
    min_interactions: int = 1
    max_interactions: int | None = None
    max_item_age_days: float | None = 30.0
    shrinkage: float = 1.0
    min_score: float = 0.0
    exact_pool_size: int = 50_000
    time_column: str = "publish_time"
    seed: int = 0


class LookalikeRetriever(Retriever, Incremental):
    """Pool items whose seed users look like the request user.

    Learned attributes:
        item_vector_source_: "content" or "svd".
        item_vectors_: (n_items, d) float32 unit item vectors (zero rows: no vector).
        item_time_: (n_items',) int64 time each item became available; grows with new items.
        reference_time_: newest event time seen (fit or :meth:`update`).
        pool_items_: (capacity,) int64 item of each pool slot; slots ``>= pool_size_`` are spare.
        pool_sums_: (capacity, d) float64 running sums of the seed users' vectors.
        pool_counts_: (capacity,) int64 counted events per slot.
        pool_size_: slots in use.
        slot_of_item_: (n_items',) int64 pool slot of each item, -1 outside the pool.

    As an :class:`~recfunnel.stages.base.Incremental` stage, :meth:`publish` records new
    items' publish times and :meth:`observe` adds positive events on eligible items
    (pool items, items without a time yet, and young enough ones) to the sums.
    """

    kind = "lookalike"

    def __init__(self, config: LookalikeConfig | None = None, name: str | None = None):
        super().__init__(config or LookalikeConfig(), name)
        self._faiss_cache: tuple[Any, np.ndarray, np.ndarray] | None = None

    def _validate(self) -> None:
        cfg = self.config
        if cfg.item_vectors not in ("auto", "content", "svd"):
            raise ConfigError(f"lookalike: item_vectors must be 'auto', 'content' or 'svd', got '{cfg.item_vectors}'")
        if cfg.recency not in ("position", "time", "none"):
            raise ConfigError(f"lookalike: recency must be 'position', 'time' or 'none', got '{cfg.recency}'")
        for field in ("svd_dims", "history_length", "min_interactions"):
            if getattr(cfg, field) < 1:
                raise ConfigError(f"lookalike: {field} must be >= 1, got {getattr(cfg, field)}")
        if cfg.max_interactions is not None and cfg.max_interactions < cfg.min_interactions:
            raise ConfigError("lookalike: max_interactions must be None or >= min_interactions")
        if cfg.max_item_age_days is not None and not cfg.max_item_age_days > 0:
            raise ConfigError(f"lookalike: max_item_age_days must be positive or None, got {cfg.max_item_age_days}")
        if cfg.recency_decay < 0 or not cfg.half_life_days > 0 or cfg.shrinkage < 0 or cfg.exact_pool_size < 0:
            raise ConfigError("lookalike: recency_decay, shrinkage and exact_pool_size must be >= 0 "
                              "and half_life_days > 0")

    # ---- fit -------------------------------------------------------------------------------

    def fit(self, data: TrainingData) -> Self:
        """Learn item vectors, then replay the pool items' training events into their sums.

        Raises:
            DataError: ``item_vectors="content"`` but the items have no ``content_*`` columns.
        """
        self._validate()
        cfg = self.config
        encoder = ContentEncoder(cfg.content_prefix, categorical_fallback=False).fit(data.item_features)
        use_content = cfg.item_vectors == "content" or (cfg.item_vectors == "auto" and encoder.source_ == "content")
        if use_content:
            if encoder.source_ != "content":
                raise DataError(f"lookalike: item_vectors='content' but items have no '{cfg.content_prefix}*' columns")
            self.item_vector_source_ = "content"
            self.item_vectors_ = encoder.transform(data.item_features)[0]
        else:
            self.item_vector_source_ = "svd"
            self.item_vectors_ = _svd_item_vectors(data.interactions.to_csr(binary=True), cfg.svd_dims, cfg.seed)
        self.item_time_, self.reference_time_ = item_times(data, cfg.time_column)
        self._reset_pool(self.item_vectors_.shape[1], len(self.item_time_))

        inter = data.interactions
        counts = np.bincount(inter.item_index, minlength=data.n_items)
        in_pool = counts > 0
        if cfg.max_item_age_days is not None:
            in_pool &= self.reference_time_ - self.item_time_ <= cfg.max_item_age_days * _SECONDS_PER_DAY
        if cfg.max_interactions is not None:
            in_pool &= counts <= cfg.max_interactions
        events = np.flatnonzero(in_pool[inter.item_index])
        if len(events):
            store = UserHistoryStore(inter)
            for lo in range(0, len(events), _EVENT_BATCH):  # a loop over event batches
                batch = events[lo:lo + _EVENT_BATCH]
                # the user's vector from the history strictly before the event, as nearline would see it
                before = store.request(inter.user_index[batch], time=inter.timestamp[batch],
                                       history_length=cfg.history_length, exclude_seen=False)
                self._add(inter.item_index[batch], self.user_vectors(before).astype(np.float64))
        return self

    def _reset_pool(self, dim: int, n_items: int) -> None:
        self.pool_items_ = np.zeros(0, np.int64)
        self.pool_sums_ = np.zeros((0, dim), np.float64)
        self.pool_counts_ = np.zeros(0, np.int64)
        self.pool_size_ = 0
        self.slot_of_item_ = np.full(n_items, -1, np.int64)
        self._faiss_cache = None

    # ---- vectors -------------------------------------------------------------------------------

    def user_vectors(self, request: RequestBatch) -> np.ndarray:
        """(B, d) float32 unit user vectors from the request's history (zero rows: no usable history).

        Only history items the model has a vector for count; the weights follow ``recency``.
        """
        cfg = self.config
        n_items, dim = self.item_vectors_.shape
        history = request.history
        valid = (history >= 0) & (history < n_items)
        if cfg.recency == "position":
            weight = np.broadcast_to(1.0 / (1.0 + cfg.recency_decay * np.arange(history.shape[1])), history.shape)
        elif cfg.recency == "time":
            age_days = np.maximum(request.time[:, None] - request.history_time, 0) / _SECONDS_PER_DAY
            weight = np.exp2(-age_days / cfg.half_life_days)
        else:
            weight = np.ones(history.shape)
        rows = np.broadcast_to(np.arange(len(request))[:, None], history.shape)
        h = sp.csr_matrix((weight[valid].astype(np.float32), (rows[valid], history[valid])),
                          shape=(len(request), n_items))
        u = np.asarray(h @ self.item_vectors_, np.float64)
        norm = np.linalg.norm(u, axis=1, keepdims=True)
        return (u / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    def lookalike_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pool's plain means.

        Returns:
            (items (P,) int64, means (P, d) float64 ``s_i / n_i``, counts (P,) int64).
        """
        n = self.pool_size_
        counts = self.pool_counts_[:n]
        return self.pool_items_[:n].copy(), self.pool_sums_[:n] / np.maximum(counts, 1)[:, None], counts.copy()

    # ---- nearline updates ----------------------------------------------------------------------

    def update(self, item_index: np.ndarray | int, user_vector: np.ndarray,
               time: np.ndarray | int | None = None) -> None:
        """Add interaction events to the look-alike sums: O(d) per event (amortised).

        One call costs about 0.2 ms of numpy overhead; a nearline consumer that passes
        its events in batches pays about 3 us per event (100k events: 0.3 s).

        Args:
            item_index: an item index, or (n,) of them; new items (even beyond the fitted
                catalogue) enter the pool.
            user_vector: (d,) or (n, d) the interacting users' vectors, e.g. from
                :meth:`user_vectors` of a request built just before the event. Zero or
                non-finite vectors are skipped.
            time: event time(s); the first event of an item the model has no time for
                sets its time (else it gets the newest time seen).
        """
        items = np.asarray(item_index, np.int64).reshape(-1)
        vectors = np.asarray(user_vector, np.float64).reshape(len(items), -1)
        if time is not None and len(items):
            times = np.broadcast_to(np.asarray(time, np.int64), items.shape)
            valid = items >= 0
            self._grow_items(int(items.max()) + 1)
            unset = valid & (self.item_time_[np.maximum(items, 0)] == _UNSET)
            if unset.any():
                # an item new to the model: its earliest event stands in for the publish time
                order = np.lexsort((times[unset], items[unset]))
                new_items, first = items[unset][order], times[unset][order]
                head = np.r_[True, new_items[1:] != new_items[:-1]]
                self.item_time_[new_items[head]] = first[head]
            self.reference_time_ = max(self.reference_time_, int(times.max()))
        self._add(items, vectors)

    def publish(self, items: NewItems) -> bool:
        """Record published items' times (:meth:`add_items`); they enter the pool with a first event."""
        self.add_items(items.item_index, items.publish_time)
        return True

    def observe(self, events: EventBatch) -> None:
        """Add positive events to the look-alike sums (:meth:`update`).

        An event counts when its item is in the pool, has no time yet (new to the
        model), or is at most ``max_item_age_days`` old at the event; the user's vector
        comes from the history strictly before the event (``events.history_before``),
        as at fit.

        Raises:
            DataError: eligible events come without ``history_before``.
        """
        events = events.take(events.positive)
        if len(events) == 0:
            return
        cfg = self.config
        item = events.item_index
        known = len(self.item_time_)
        safe = np.minimum(item, known - 1)
        in_pool = (item < known) & (self.slot_of_item_[safe] >= 0)
        item_time = np.where(item < known, self.item_time_[safe], _UNSET)
        eligible = in_pool | (item_time == _UNSET)
        if cfg.max_item_age_days is None:
            eligible[:] = True
        else:
            eligible |= events.time - item_time <= cfg.max_item_age_days * _SECONDS_PER_DAY
        if not eligible.any():
            return
        if events.history_before is None:
            raise DataError("lookalike.observe: the events need history_before (the users' histories)")
        rows = np.flatnonzero(eligible)
        before = events.history_before(rows, cfg.history_length)
        self.update(item[rows], self.user_vectors(before), events.time[rows])

    def add_items(self, item_index: np.ndarray | int, publish_time: np.ndarray | int) -> None:
        """Record when items published after fit (or re-dated ones) became available.

        The items enter the pool with their first counted event (:meth:`update`); until
        then the channel has no look-alike vector for them.

        Raises:
            DataError: a negative item index.
        """
        items = np.asarray(item_index, np.int64).reshape(-1)
        if len(items) == 0:
            return
        if (items < 0).any():
            raise DataError("lookalike.add_items: item indices must be >= 0")
        self._grow_items(int(items.max()) + 1)
        self.item_time_[items] = np.broadcast_to(np.asarray(publish_time, np.int64), items.shape)
        self._faiss_cache = None

    def _grow_items(self, size: int) -> None:
        """Extend the per-item arrays to at least ``size`` items; new entries have no time yet."""
        old = len(self.item_time_)
        if size <= old:
            return
        capacity = max(size, 2 * old)  # doubling: a stream of new items costs O(1) amortised each
        self.slot_of_item_ = np.concatenate([self.slot_of_item_, np.full(capacity - old, -1, np.int64)])
        self.item_time_ = np.concatenate([self.item_time_, np.full(capacity - old, _UNSET, np.int64)])

    def _add(self, items: np.ndarray, vectors: np.ndarray) -> None:
        """Vectorised core of :meth:`update`: accumulate sums and counts per item."""
        if vectors.shape[1] != self.pool_sums_.shape[1]:
            raise ValueError(f"lookalike: user vectors have {vectors.shape[1]} dims, expected {self.pool_sums_.shape[1]}")
        keep = (items >= 0) & np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
        items, vectors = items[keep], vectors[keep]
        if len(items) == 0:
            return
        self._grow_items(int(items.max()) + 1)
        untimed = items[self.item_time_[items] == _UNSET]
        self.item_time_[untimed] = self.reference_time_  # no event time given: the newest time seen
        new_items = np.unique(items[self.slot_of_item_[items] < 0])
        if len(new_items):
            needed = self.pool_size_ + len(new_items)
            if needed > len(self.pool_items_):
                capacity = max(needed, 2 * len(self.pool_items_))
                grow = capacity - len(self.pool_items_)
                self.pool_items_ = np.concatenate([self.pool_items_, np.full(grow, PAD, np.int64)])
                self.pool_sums_ = np.concatenate([self.pool_sums_, np.zeros((grow, self.pool_sums_.shape[1]))])
                self.pool_counts_ = np.concatenate([self.pool_counts_, np.zeros(grow, np.int64)])
            slots = np.arange(self.pool_size_, needed)
            self.pool_items_[slots] = new_items
            self.slot_of_item_[new_items] = slots
            self.pool_size_ = needed
        slot = self.slot_of_item_[items]
        np.add.at(self.pool_sums_, slot, vectors)
        np.add.at(self.pool_counts_, slot, 1)
        self._faiss_cache = None

    def prune(self, time: int) -> int:
        """Drop pool items older than ``max_item_age_days`` at ``time``, or past ``max_interactions``.

        Returns:
            the number of items dropped.
        """
        cfg = self.config
        n = self.pool_size_
        items, counts = self.pool_items_[:n], self.pool_counts_[:n]
        drop = np.zeros(n, bool)
        if cfg.max_item_age_days is not None:
            drop |= time - self.item_time_[items] > cfg.max_item_age_days * _SECONDS_PER_DAY
        if cfg.max_interactions is not None:
            drop |= counts > cfg.max_interactions
        if drop.any():
            kept = np.flatnonzero(~drop)
            self.slot_of_item_[items[drop]] = -1
            self.slot_of_item_[items[kept]] = np.arange(len(kept))
            self.pool_items_ = self.pool_items_[kept].copy()
            self.pool_sums_ = self.pool_sums_[kept].copy()
            self.pool_counts_ = self.pool_counts_[kept].copy()
            self.pool_size_ = len(kept)
            self._faiss_cache = None
        return int(drop.sum())

    # ---- retrieval -----------------------------------------------------------------------------

    def _eligible(self) -> tuple[np.ndarray, np.ndarray]:
        """(items (P,), shrunk look-alike vectors (P, d) float32) of the pool slots with enough events."""
        cfg = self.config
        n = self.pool_size_
        counts = self.pool_counts_[:n]
        ok = counts >= cfg.min_interactions
        if cfg.max_interactions is not None:
            ok &= counts <= cfg.max_interactions
        vectors = self.pool_sums_[:n][ok] / (counts[ok] + cfg.shrinkage)[:, None]
        return self.pool_items_[:n][ok], vectors.astype(np.float32)

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Pool items scored by ``<u, s_i> / (n_i + shrinkage)``, minus ``request.exclude``.

        Args:
            request: B users; ``history``, ``history_time``, ``time`` and ``exclude`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates; users without a usable history, or with no pool item above
            ``min_score``, get padding. Items published after ``request.time`` are never returned.
        """
        b = len(request)
        items, vectors = self._eligible()
        if b == 0 or k <= 0 or len(items) == 0:
            return Candidates.empty(b)
        users = self.user_vectors(request)
        if len(items) <= self.config.exact_pool_size:
            step = max(1, _CHUNK_CELLS // len(items))
            blocks = [self._exact_rows(request, users, items, vectors, lo, min(lo + step, b), k)
                      for lo in range(0, b, step)]  # a loop over user batches
        else:
            blocks = [self._faiss_rows(request, users, items, vectors, k)]
        width = max(i.shape[1] for i, _ in blocks)
        out_items = np.concatenate([np.pad(i, ((0, 0), (0, width - i.shape[1])), constant_values=PAD)
                                    for i, _ in blocks])
        score = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=-np.inf)
                                for _, s in blocks]).astype(np.float32)
        return Candidates(out_items, score, {self.name: score})

    def _exact_rows(self, request: RequestBatch, users: np.ndarray, items: np.ndarray, vectors: np.ndarray,
                    lo: int, hi: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of rows ``lo..hi`` against the whole eligible pool (numpy matmul)."""
        score = users[lo:hi] @ vectors.T
        return self._top_k(request, lo, hi, items[None, :], score, users[lo:hi].any(axis=1), k)

    def _faiss_rows(self, request: RequestBatch, users: np.ndarray, items: np.ndarray, vectors: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of all rows through an exact faiss inner-product index over the eligible pool."""
        import faiss

        cfg = self.config
        cache = self._faiss_cache  # read once: a concurrent update may reset the attribute to None
        if cache is None:  # updates and prune() reset it
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(np.ascontiguousarray(vectors))
            cache = (index, items, np.sort(self.item_time_[items]))
            self._faiss_cache = cache
        index, _, sorted_times = cache
        # enough neighbours that k survive each row's exclusions and its time filters
        t = request.time.astype(np.int64)
        unpublished = len(items) - np.searchsorted(sorted_times, t, side="right")
        too_old = 0
        if cfg.max_item_age_days is not None:
            oldest = t - cfg.max_item_age_days * _SECONDS_PER_DAY
            too_old = np.searchsorted(sorted_times, oldest, side="left")
        excluded = np.diff(request.exclude.indptr)
        fetch = int(min(len(items), k + np.max(unpublished + too_old + excluded, initial=0)))
        score, found = index.search(np.ascontiguousarray(users), fetch)
        candidates = np.where(found >= 0, items[np.maximum(found, 0)], PAD)
        return self._top_k(request, 0, len(request), candidates, np.where(found >= 0, score, -np.inf),
                           users.any(axis=1), k)

    def _top_k(self, request: RequestBatch, lo: int, hi: int, candidates: np.ndarray, score: np.ndarray,
               has_user: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Mask (time, age, min_score, no user vector, exclusions) and keep the k best per row.

        Args:
            candidates: (hi - lo, C) or (1, C) int64 items of request rows ``lo..hi``, -1 for none.
            score: (hi - lo, C) their scores.
            has_user: (hi - lo,) bool, false for users without a vector (they get padding).
        """
        cfg = self.config
        t = request.time[lo:hi, None].astype(np.int64)
        published = self.item_time_[np.maximum(candidates, 0)]
        ok = (candidates >= 0) & (published <= t) & (score > cfg.min_score) & has_user[:, None]
        if cfg.max_item_age_days is not None:
            ok &= t - published <= cfg.max_item_age_days * _SECONDS_PER_DAY
        score = np.where(ok, score, -np.inf)
        # a row's exclusions remove at most nnz(row) items, so its best k + nnz hold the answer:
        # the exclusion lookup then runs on that head only, not on the whole pool
        exclude = request.exclude[lo:hi]
        fetch = int(min(score.shape[1], k + np.diff(exclude.indptr).max(initial=0)))
        if fetch < score.shape[1]:
            head = np.argpartition(-score, fetch - 1, axis=1)[:, :fetch] if fetch else score[:, :0].astype(np.int64)
            head = np.sort(head, axis=1)  # column order: ties keep the lower column, as top_k_columns does
        else:
            head = np.broadcast_to(np.arange(score.shape[1]), score.shape)
        items = np.take_along_axis(np.broadcast_to(candidates, score.shape), head, axis=1)
        score = np.take_along_axis(score, head, axis=1)
        score[exclusion_mask(exclude, np.arange(hi - lo)[:, None], items)] = -np.inf
        width = int(min(k, np.isfinite(score).sum(axis=1).max(initial=0)))
        order = top_k_columns(score, width)
        best = np.take_along_axis(score, order, axis=1)
        found = np.isfinite(best)
        out = np.where(found, np.take_along_axis(items, order, axis=1), PAD).astype(np.int64)
        return out, np.where(found, best, -np.inf).astype(np.float32)

    # ---- artifacts -----------------------------------------------------------------------------

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        n = self.pool_size_
        arrays = {
            "item_vector_source": np.array(self.item_vector_source_), "item_vectors": self.item_vectors_,
            "item_time": self.item_time_, "reference_time": np.int64(self.reference_time_),
            "pool_items": self.pool_items_[:n], "pool_sums": self.pool_sums_[:n], "pool_counts": self.pool_counts_[:n],
        }
        writer.write_arrays(f"{prefix}lookalike.npz", arrays)

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any, name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}lookalike.npz")
        stage = cls(config, name)
        stage.item_vector_source_ = str(arrays["item_vector_source"])
        stage.item_vectors_ = arrays["item_vectors"].astype(np.float32)
        stage.item_time_ = arrays["item_time"].astype(np.int64)
        stage.reference_time_ = int(arrays["reference_time"])
        stage._reset_pool(stage.item_vectors_.shape[1], len(stage.item_time_))
        items = arrays["pool_items"].astype(np.int64)
        stage.pool_items_ = items
        stage.pool_sums_ = arrays["pool_sums"].astype(np.float64)
        stage.pool_counts_ = arrays["pool_counts"].astype(np.int64)
        stage.pool_size_ = len(items)
        stage.slot_of_item_[items] = np.arange(len(items))
        return stage


def _svd_item_vectors(user_items: sp.csr_matrix, dims: int, seed: int) -> np.ndarray:
    """(n_items, d) float32 unit item vectors ``V * sqrt(sigma)`` of a truncated SVD of ``user_items``.

    ARPACK (``scipy.sparse.linalg.svds``) with a seeded start vector; matrices too
    small for it (``min(shape) <= dims + 1``) are decomposed densely. Items without
    interactions get zero rows.
    """
    from scipy.sparse.linalg import svds

    n_users, n_items = user_items.shape
    x = sp.csr_matrix(user_items, dtype=np.float64)
    if min(n_users, n_items) <= dims + 1:
        _, sigma, vt = np.linalg.svd(x.toarray(), full_matrices=False)
        sigma, vt = sigma[:dims], vt[:dims]
    else:
        start = np.random.default_rng(seed).standard_normal(min(n_users, n_items))
        _, sigma, vt = svds(x, k=dims, v0=start)
    vectors = vt.T * np.sqrt(np.maximum(sigma, 0.0))
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norm > 1e-12, norm, np.inf)).astype(np.float32)
