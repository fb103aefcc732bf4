"""Popular items: the non-personalised channels, and the fallback of every other one.

* :class:`PopularRetriever` (``"popular"``): the same list for every user. An item's
  score is its time-decayed count of positive events,
  ``sum_e weight_e * 2 ** (-age_e / half_life)``, with ages measured from the newest
  training event (so a model trained on old data is not all zeros, and constant
  timestamps give plain counts). Timestamps are seconds. The popularity keeps
  counting while the model is served: :meth:`PopularRetriever.update` adds the
  positive events that arrive nearline (the online service's ``POST /events``) and
  :meth:`PopularRetriever.add_items` the items published after the fit, so an item
  many users click now rises in the list every cold-start user gets (the channel and
  the funnel's fallback).
* :class:`HotRetriever` (``"hot"``): the same channel with a short half-life (6 hours)
  and a 3-day window: what is trending now rather than what was liked this month
  (热门召回). A separate kind so that a funnel can run both.
* :class:`CategoryPopularRetriever` (``"category_popular"``): for each category of the
  user's recent history, the hottest items of that category, mixed by the user's
  recency-weighted category shares (D'Hondt quotas, see ``profile.mix_lists``).

All are point-in-time: an item whose publish time (``publish_time``, else its first
event) is after the request time is never returned.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> popular = PopularRetriever(PopularConfig(half_life_days=None)).fit(data)
>>> request = make_request(data, np.array([0, 1]), history_length=5)
>>> popular.retrieve(request, k=3).item_index.shape
(2, 3)
>>> by_category = CategoryPopularRetriever().fit(data)  # the planted items have a "category"
>>> bool((by_category.retrieve(request, k=3).item_index < 15).all())  # users 0, 1: group 0
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.base import EventBatch, Incremental, NewItems, Retriever
from recfunnel.stages.recall.profile import (
    UNKNOWN_TIME,
    ProfileListsRetriever,
    Recency,
    check_recency,
    decayed_event_weights,
    item_publish_time,
)
from recfunnel.stages.recall.sparse import exclusion_mask
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import PAD, Candidates, RequestBatch


def _check_decay(kind: str, half_life_days: float | None, window_days: float | None) -> None:
    for option, value in (("half_life_days", half_life_days), ("window_days", window_days)):
        if value is not None and not value > 0:
            raise ConfigError(f"{kind}: {option} must be positive or None, got {value}")


@dataclass(frozen=True)
class PopularConfig:
    """Options of :class:`PopularRetriever`.

    Attributes:
        half_life_days: an event loses half its weight every this many days; None: no decay.
        window_days: only events at most this many days older than the newest count; None: all.
    """

    half_life_days: float | None = 30.0
    window_days: float | None = None


@dataclass(frozen=True)
class HotConfig(PopularConfig):
    """Options of :class:`HotRetriever`: popularity with a short memory.

    Attributes:
        half_life_days: 0.25 (6 hours) by default: yesterday's hits fade within a day.
        window_days: 3 by default: older events do not count at all.
    """

    half_life_days: float | None = 0.25
    window_days: float | None = 3.0


@dataclass(frozen=True, eq=False)
class PopularIndex:
    """What :class:`PopularRetriever` serves from, replaced as a whole on every update
    (a retrieval running meanwhile sees the old or the new one, never a mix).

    Attributes:
        log_score: (n_items,) float64 ``log2`` of the decayed popularity with ages measured
            from the channel's reference time (``-inf``: no positive event). Logarithms keep
            the order exact however far the events are from the reference (an event a year
            after the fit weighs ``2 ** 12`` with a 30-day half-life, one hour-old events of a
            year-old model no less).
        scores: (n_items,) float32 the popularity as of the newest event counted (what a
            candidate's score says; may round to 0 for items last clicked long before).
        order: (n_popular,) int64 items with a positive event, most popular first (ties:
            lower item index first).
        item_time: (n_items,) int64 publish time.
        newest: time of the newest event counted (the reference time while none came after it).
    """

    log_score: np.ndarray
    scores: np.ndarray
    order: np.ndarray
    item_time: np.ndarray
    newest: int


def _log2(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    out = np.full(scores.shape, -np.inf)
    np.log2(scores, out=out, where=scores > 0)
    return out


def _merge_order(order: np.ndarray, log_score: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """``order`` (most popular first, ties by index) after the scores of ``changed`` rose.

    The changed items are taken out and put back at their new places: a pass over the
    list, not a sort of the catalogue, for every batch of nearline events.
    """
    changed = np.unique(changed)
    changed = changed[np.isfinite(log_score[changed])]
    moved = np.zeros(len(log_score), bool)
    moved[changed] = True
    rest = order[~moved[order]]
    neg_rest = -log_score[rest]  # ascending
    key = -log_score[changed]
    changed = changed[np.lexsort((changed, key))]  # by (-score, index)
    key = -log_score[changed]
    lo = np.searchsorted(neg_rest, key, side="left")
    hi = np.searchsorted(neg_rest, key, side="right")
    for j in np.flatnonzero(hi > lo):  # exact ties with unchanged items (rare): by index
        lo[j] += int(np.searchsorted(rest[lo[j]:hi[j]], changed[j]))
    return np.insert(rest, lo, changed).astype(np.int64, copy=False)


class PopularRetriever(Retriever, Incremental):
    """The most popular items not excluded for the user (same list for every user).

    Learned attributes:
        scores_: (n_items,) float32 time-decayed popularity (0 for items never seen).
        order_: (n_popular,) int64 items with a positive score, most popular first.
        item_time_: (n_items,) int64 publish time (``publish_time``, else first event);
            an item published after a request's time is not returned to it.
        ref_time_: the time the fitted ages are measured from (the newest training event);
            None for artifacts written before it was kept (nearline events then weigh as
            much as the newest training event).
        fitted_scores_ / fitted_item_time_: the fitted arrays, what :meth:`save` writes
            (nearline events belong to the event log, not to the model).

    :meth:`update` and :meth:`add_items` change the served list while the model is
    served; ``scores_``, ``order_`` and ``item_time_`` always describe the list served now.
    As an :class:`~recfunnel.stages.base.Incremental` stage, :meth:`publish` takes the
    publish times of new items and :meth:`observe` counts positive events.
    """

    kind = "popular"

    def __init__(self, config: PopularConfig | None = None, name: str | None = None):
        super().__init__(config or PopularConfig(), name)

    def fit(self, data: TrainingData) -> Self:
        """Count (decayed) positive events per item."""
        cfg = self.config
        _check_decay(self.kind, cfg.half_life_days, cfg.window_days)
        inter = data.interactions
        weight = decayed_event_weights(inter, cfg.half_life_days, cfg.window_days)
        scores = np.bincount(inter.item_index, weights=weight, minlength=data.n_items)
        # decayed_event_weights measures ages from the newest event
        ref_time = int(inter.timestamp.max()) if len(inter) else None
        self._set_scores(scores.astype(np.float32), item_publish_time(data), ref_time)
        return self

    def _set_scores(self, scores: np.ndarray, item_time: np.ndarray, ref_time: int | None) -> None:
        self.fitted_scores_ = np.asarray(scores, np.float32)
        self.fitted_item_time_ = np.asarray(item_time, np.int64)
        self.ref_time_ = ref_time
        self.idle_offset_: int | None = None  # set by the first nearline events (see update)
        order = np.argsort(-self.fitted_scores_, kind="stable")  # ties: lower item index first
        order = order[self.fitted_scores_[order] > 0].astype(np.int64)
        newest = np.iinfo(np.int64).min if ref_time is None else int(ref_time)
        self.index_ = PopularIndex(_log2(self.fitted_scores_), self.fitted_scores_.copy(), order,
                                   self.fitted_item_time_.copy(), newest)

    # the served list (properties: one index object, swapped whole)
    @property
    def scores_(self) -> np.ndarray:
        return self.index_.scores

    @property
    def order_(self) -> np.ndarray:
        return self.index_.order

    @property
    def item_time_(self) -> np.ndarray:
        return self.index_.item_time

    # ------------------------------------------------------------ nearline
    def _half_life_seconds(self) -> float | None:
        days = self.config.half_life_days
        return None if days is None else float(days) * 86_400.0

    def _grown(self, index: PopularIndex, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(log_score, item_time) copies covering ``n`` items (new ones: no event, time unknown)."""
        m = len(index.log_score)
        log_score = np.full(max(n, m), -np.inf)
        log_score[:m] = index.log_score
        item_time = np.full(max(n, m), UNKNOWN_TIME, np.int64)
        item_time[:m] = index.item_time
        return log_score, item_time

    def add_items(self, item_index: np.ndarray, publish_time: np.ndarray) -> None:
        """Items published after the fit (or re-dated): their publish times, no popularity yet.

        They enter the list with their first positive event (:meth:`update`).
        """
        item_index = np.asarray(item_index, np.int64).ravel()
        publish_time = np.asarray(publish_time, np.int64).ravel()
        if len(item_index) != len(publish_time) or (item_index < 0).any():
            raise DataError(f"{self.kind}.add_items: one publish time per item index (>= 0) is needed")
        if len(item_index) == 0:
            return
        index = self.index_
        log_score, item_time = self._grown(index, int(item_index.max()) + 1)
        item_time[item_index] = publish_time
        self.index_ = PopularIndex(log_score, self._scores(log_score, index.newest), index.order, item_time,
                                   index.newest)

    def publish(self, items: NewItems) -> bool:
        """New items' publish times (:meth:`add_items`); they enter the list with their first positive event."""
        self.add_items(items.item_index, items.publish_time)
        return True

    def observe(self, events: EventBatch) -> None:
        """Count the positive events (each weighs 1) in the popularity (:meth:`update`)."""
        positive = events.positive
        if positive.any():
            self.update(events.item_index[positive], events.time[positive])

    def update(self, item_index: np.ndarray, times: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Count positive events that arrived after the fit (nearline), decayed like the fitted ones.

        An event at time ``t`` adds ``weight * 2 ** ((t - ref_time_) / half_life)``, the
        weight the fit would have given it (the list is the one a fit on all the events
        would serve, up to the ``window_days`` cut, which applies to the fitted events).
        An item the channel does not know yet gets its first event as its publish time.

        The idle time between the newest training event and the first event counted here
        weighs at most one half-life (``idle_offset_`` is the rest, taken off every later
        event's time): a model fitted on last year's log and served today keeps its fitted
        popularity on the scale its ranker learned, halved, where a refit would decay it to
        zero. Events within a half-life of the training data get exactly a refit's weights.

        Args:
            item_index: (N,) int64 internal item indices (new ones may lie beyond the
                fitted catalogue; negative ones are ignored).
            times: (N,) int64 event times (seconds).
            weights: (N,) event weights; default 1 (a count of positive events).
        """
        item_index = np.asarray(item_index, np.int64).ravel()
        times = np.asarray(times, np.int64).ravel()
        w = np.ones(len(item_index)) if weights is None else np.asarray(weights, np.float64).ravel()
        if not len(item_index) == len(times) == len(w):
            raise DataError(f"{self.kind}.update: item_index, times and weights lengths disagree")
        ok = (item_index >= 0) & (w > 0) & np.isfinite(w)
        item_index, times, w = item_index[ok], times[ok], w[ok]
        if len(item_index) == 0:
            return
        index = self.index_
        log_score, item_time = self._grown(index, int(item_index.max()) + 1)
        unknown = item_time[item_index] == UNKNOWN_TIME
        if unknown.any():
            np.minimum.at(item_time, item_index[unknown], times[unknown])
        half_life = self._half_life_seconds()
        exponent = np.zeros(len(times))
        if half_life is not None and self.ref_time_ is not None:
            if self.idle_offset_ is None:
                # the time between the training data's end and the first served event counts at most
                # one half-life: a model served a year after its data (the ML-100K tour) would otherwise
                # see every fitted item's score, a ranker feature, fall to 0 at the first click
                self.idle_offset_ = int(max(0.0, float(times.min() - self.ref_time_) - half_life))
            exponent = (times - self.idle_offset_ - self.ref_time_) / half_life
        np.logaddexp2.at(log_score, item_index, np.log2(w) + exponent)
        order = _merge_order(index.order, log_score, item_index)
        newest = max(index.newest, int(times.max()))
        self.index_ = PopularIndex(log_score, self._scores(log_score, newest), order, item_time, newest)

    def _scores(self, log_score: np.ndarray, newest: int) -> np.ndarray:
        """Popularity as of ``newest`` (the fitted scores while nothing came after the reference)."""
        half_life = self._half_life_seconds()
        shift = 0.0
        offset = self.idle_offset_ or 0
        if half_life is not None and self.ref_time_ is not None and newest - offset > self.ref_time_:
            shift = (newest - offset - self.ref_time_) / half_life
        return np.exp2(log_score - shift).astype(np.float32)

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Top-``k`` popular items per user, minus ``request.exclude``.

        Args:
            request: B users; ``exclude`` and ``time`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by popularity, ``channel_scores={name: score}``.
        """
        index = self.index_  # read once: update may swap in a new index meanwhile
        order, item_time = index.order, index.item_time
        b = len(request)
        max_excluded = int(np.diff(request.exclude.indptr).max(initial=0))
        # popular items published after the earliest request time may be dropped as well
        future = int((item_time[order] > request.time.min(initial=UNKNOWN_TIME)).sum())
        # enough popular items that k survive even the row with the most exclusions
        head = order[: k + max_excluded + future]
        items = np.broadcast_to(head, (b, len(head)))
        dropped = exclusion_mask(request.exclude, np.arange(b)[:, None], items)
        dropped |= item_time[items] > request.time[:, None]
        keep = np.argsort(dropped, axis=1, kind="stable")[:, :k]  # kept items first, order intact
        items = np.take_along_axis(items, keep, axis=1)
        valid = ~np.take_along_axis(dropped, keep, axis=1)
        items = np.where(valid, items, PAD)
        score = np.where(valid, index.scores[np.maximum(items, 0)], -np.inf).astype(np.float32)
        return Candidates(items, score, {self.name: score})

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        arrays = {"scores": self.fitted_scores_, "item_time": self.fitted_item_time_}
        if self.ref_time_ is not None:
            arrays["ref_time"] = np.array([self.ref_time_], np.int64)
        writer.write_arrays(f"{prefix}popular.npz", arrays)

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: PopularConfig,
             name: str | None = None) -> Self:
        stage = cls(config, name)
        arrays = reader.read_arrays(f"{prefix}popular.npz")
        scores = arrays["scores"].astype(np.float32)
        # artifacts written before publish times were kept: every item counts as published
        item_time = arrays.get("item_time", np.full(len(scores), np.iinfo(np.int64).min))
        ref_time = arrays.get("ref_time")
        stage._set_scores(scores, item_time.astype(np.int64),
                          None if ref_time is None or len(ref_time) == 0 else int(ref_time[0]))
        return stage


class HotRetriever(PopularRetriever):
    """Hot items (热门): :class:`PopularRetriever` with a short half-life by default.

    >>> HotRetriever().config
    HotConfig(half_life_days=0.25, window_days=3.0)
    """

    kind = "hot"

    def __init__(self, config: PopularConfig | None = None, name: str | None = None):
        super().__init__(config or HotConfig(), name)


@dataclass(frozen=True)
class CategoryPopularConfig:
    """Options of :class:`CategoryPopularRetriever`.

    Attributes:
        column: the item category column (categorical or multi-value).
        top_categories: categories of the user's profile read per user.
        half_life_days: popularity decay, as in :class:`PopularConfig`; None: plain counts.
        window_days: only events at most this many days older than the newest count.
        recency: weight of a history item in the profile: "position"
            ``1 / (1 + recency_decay * pos)``, "time" ``2 ** (-age_days / recency_half_life_days)``,
            "none" 1.
        recency_decay: slope of the "position" weights.
        recency_half_life_days: half-life of the "time" weights.
    """

    column: str = "category"
    top_categories: int = 5
    half_life_days: float | None = 30.0
    window_days: float | None = None
    recency: Recency = "position"
    recency_decay: float = 0.1
    recency_half_life_days: float = 7.0


class CategoryPopularRetriever(ProfileListsRetriever):
    """The hottest items of each category the user likes, in proportion to the likes.

    The user's category shares come from the recency-weighted point-in-time history; a
    category holding 60% of it gets about 60% of the places (D'Hondt quotas), each filled
    with that category's most popular items not excluded.

    Learned attributes: those of :class:`~recfunnel.stages.recall.profile.ProfileListsRetriever`,
    each list ordered by decayed popularity (items with a positive popularity only).
    """

    kind = "category_popular"
    newest_first = False

    def __init__(self, config: CategoryPopularConfig | None = None, name: str | None = None):
        super().__init__(config or CategoryPopularConfig(), name)

    def _top_values(self) -> int:
        return self.config.top_categories

    def _validate(self) -> None:
        cfg = self.config
        check_recency(self.kind, cfg.recency, cfg.recency_decay, cfg.recency_half_life_days)
        _check_decay(self.kind, cfg.half_life_days, cfg.window_days)
        if cfg.top_categories < 1:
            raise ConfigError(f"{self.kind}: top_categories must be >= 1, got {cfg.top_categories}")

    def _columns(self, data: TrainingData) -> tuple[str, ...]:
        if self.config.column not in data.item_features.columns:
            raise ConfigError(f"{self.kind}: the item table has no column '{self.config.column}'; "
                              f"set column= (item columns: {list(data.item_features.columns)})")
        return (self.config.column,)

    def _list_keys(self, data: TrainingData, items: np.ndarray, published: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inter = data.interactions
        weight = decayed_event_weights(inter, self.config.half_life_days, self.config.window_days)
        popularity = np.bincount(inter.item_index, weights=weight, minlength=data.n_items)[items]
        return popularity, popularity > 0
