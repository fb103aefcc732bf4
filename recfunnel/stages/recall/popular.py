"""Popular items: the non-personalised channels, and the fallback of every other one.

* :class:`PopularRetriever` (``"popular"``): the same list for every user. An item's
  score is its time-decayed count of positive events,
  ``sum_e weight_e * 2 ** (-age_e / half_life)``, with ages measured from the newest
  training event (so a model trained on old data is not all zeros, and constant
  timestamps give plain counts). Timestamps are seconds.
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
from recfunnel.errors import ConfigError
from recfunnel.stages.base import Retriever
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


class PopularRetriever(Retriever):
    """The most popular items not excluded for the user (same list for every user).

    Learned attributes:
        scores_: (n_items,) float32 time-decayed popularity (0 for items never seen).
        order_: (n_popular,) int64 items with a positive score, most popular first.
        item_time_: (n_items,) int64 publish time (``publish_time``, else first event);
            an item published after a request's time is not returned to it.
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
        self._set_scores(scores.astype(np.float32), item_publish_time(data))
        return self

    def _set_scores(self, scores: np.ndarray, item_time: np.ndarray) -> None:
        self.scores_ = scores
        self.item_time_ = item_time
        order = np.argsort(-scores, kind="stable")  # ties: lower item index first
        self.order_ = order[scores[order] > 0].astype(np.int64)

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Top-``k`` popular items per user, minus ``request.exclude``.

        Args:
            request: B users; ``exclude`` and ``time`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by popularity, ``channel_scores={name: score}``.
        """
        b = len(request)
        max_excluded = int(np.diff(request.exclude.indptr).max(initial=0))
        # popular items published after the earliest request time may be dropped as well
        future = int((self.item_time_[self.order_] > request.time.min(initial=UNKNOWN_TIME)).sum())
        # enough popular items that k survive even the row with the most exclusions
        head = self.order_[: k + max_excluded + future]
        items = np.broadcast_to(head, (b, len(head)))
        dropped = exclusion_mask(request.exclude, np.arange(b)[:, None], items)
        dropped |= self.item_time_[items] > request.time[:, None]
        keep = np.argsort(dropped, axis=1, kind="stable")[:, :k]  # kept items first, order intact
        items = np.take_along_axis(items, keep, axis=1)
        valid = ~np.take_along_axis(dropped, keep, axis=1)
        items = np.where(valid, items, PAD)
        score = np.where(valid, self.scores_[np.maximum(items, 0)], -np.inf).astype(np.float32)
        return Candidates(items, score, {self.name: score})

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_arrays(f"{prefix}popular.npz", {"scores": self.scores_, "item_time": self.item_time_})

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: PopularConfig,
             name: str | None = None) -> Self:
        stage = cls(config, name)
        arrays = reader.read_arrays(f"{prefix}popular.npz")
        scores = arrays["scores"].astype(np.float32)
        # artifacts written before publish times were kept: every item counts as published
        item_time = arrays.get("item_time", np.full(len(scores), np.iinfo(np.int64).min))
        stage._set_scores(scores, item_time.astype(np.int64))
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
