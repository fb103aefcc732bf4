"""New-item pools: the newest items by age window, so fresh items get exposure at once.

The cold-start channel of MISSION_MAP §6 (Wang Shusen, 物品冷启02 "多个召回池": 1-hour,
6-hour, 24-hour and 30-day pools of new notes). An item's age is measured from the
REQUEST time to its publish time (item column ``publish_time``, else its first event in
the training data; see ``profile.item_publish_time``), so the pools move with the clock
and an item published after the request is never returned.

Each window is one pool with its own quota. The pools are nested in the seed (the 6-hour
pool contains the 1-hour one); here pool ``w`` holds the items of age in
``[windows[w-1], windows[w])`` (the first from 0), so no quota is spent on an item a
smaller pool already offers. Quotas are proportional to ``per_window_quota`` (equal by
default) by D'Hondt apportionment: a pool with too few items leaves its places to the
others. Within a pool items are newest first, and the returned list is ordered newest
first, scored by ``-age`` in hours.

``personalised=True`` splits every pool by the category of the user's recent history
(the user's recency-weighted category shares times the pool's quota); users without a
history get the plain pools.

Items published after fit enter at once through :meth:`NewItemRetriever.add_items` (the
online service calls it when an item is published).

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> pools = NewItemRetriever().fit(data)
>>> now = int(data.interactions.timestamp.max()) + 1
>>> pools.add_items(np.array([data.n_items]), np.array([now - 600]))  # published 10 minutes ago
>>> out = pools.retrieve(make_request(data, np.array([0]), history_length=5, time=now), k=3)
>>> int(out.item_index[0, 0]) == data.n_items, round(float(out.score[0, 0]), 3)
(True, -0.167)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.base import Incremental, NewItems, Retriever
from recfunnel.stages.recall.profile import (
    UNKNOWN_TIME,
    ItemLists,
    Recency,
    check_recency,
    encode_item_values,
    item_publish_time,
    membership_matrix,
    mix_lists,
    profile_pairs,
    value_profile,
)
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import Candidates, RequestBatch, top_k_columns

_SECONDS_PER_HOUR = 3_600.0

#: list id of the pool of all items (category lists follow it)
_ALL = 0


@dataclass(frozen=True)
class NewItemConfig:
    """Options of :class:`NewItemRetriever`.

    Attributes:
        windows_hours: increasing upper ages of the pools, in hours (1h / 6h / 24h / 30d).
        per_window_quota: relative quota of each pool (normalised); None: equal quotas.
        personalised: split each pool by the categories of the user's recent history.
        category_column: item category column used when ``personalised``.
        top_categories: profile categories read per user when ``personalised``.
        recency: weight of a history item in the profile: "position"
            ``1 / (1 + recency_decay * pos)``, "time" ``2 ** (-age_days / recency_half_life_days)``,
            "none" 1.
        recency_decay: slope of the "position" weights.
        recency_half_life_days: half-life of the "time" weights.
    """

    windows_hours: tuple[float, ...] = (1.0, 6.0, 24.0, 720.0)
    per_window_quota: tuple[float, ...] | None = None
    personalised: bool = False
    category_column: str = "category"
    top_categories: int = 3
    recency: Recency = "position"
    recency_decay: float = 0.1
    recency_half_life_days: float = 7.0


@dataclass(frozen=True, eq=False)
class NewItemIndex:
    """Everything :class:`NewItemRetriever` knows, replaced as a whole on every update.

    Attributes:
        item_time: (n_items,) int64 publish time, ``UNKNOWN_TIME`` where unknown.
        pair_item, pair_value: (P,) int64 the (item, category) pairs.
        values: (V,) str category vocabulary, ``"column=value"``.
        lists: list 0 all items, list ``1 + v`` the items of category v; newest first,
            items with a known publish time only.
        membership: (n_items, V) CSR float32 item -> category weights (profiles).
    """

    item_time: np.ndarray
    pair_item: np.ndarray
    pair_value: np.ndarray
    values: np.ndarray
    lists: ItemLists
    membership: sp.csr_matrix

    @classmethod
    def build(cls, item_time: np.ndarray, pair_item: np.ndarray, pair_value: np.ndarray,
              values: np.ndarray) -> NewItemIndex:
        n_items, n_values = len(item_time), len(values)
        # a multi-value item spreads weight 1 over its categories
        per_item = np.bincount(pair_item, minlength=n_items).astype(np.float64)
        weight = 1.0 / np.maximum(per_item[pair_item], 1.0)
        membership = membership_matrix(pair_item, pair_value, weight, n_items, n_values)
        known = np.flatnonzero(item_time != UNKNOWN_TIME)
        dated = item_time[pair_item] != UNKNOWN_TIME
        items = np.concatenate([known, pair_item[dated]])
        list_id = np.concatenate([np.full(len(known), _ALL), 1 + pair_value[dated]])
        time = item_time[items]
        lists = ItemLists.build(list_id, items, time, time, 1 + n_values, n_items)
        return cls(item_time, pair_item, pair_value, values, lists, membership)


class NewItemRetriever(Retriever, Incremental):
    """The newest items of each age window, as of the request time.

    Learned attributes:
        index_: :class:`NewItemIndex`; :meth:`add_items` replaces it as a whole, so a
            retrieval running at the same time sees either the old or the new index.
    """

    kind = "new_items"

    def __init__(self, config: NewItemConfig | None = None, name: str | None = None):
        super().__init__(config or NewItemConfig(), name)

    @property
    def item_time_(self) -> np.ndarray:
        """(n_items,) int64 publish time of every item known to the channel."""
        return self.index_.item_time

    def _validate(self) -> None:
        cfg = self.config
        windows = np.asarray(cfg.windows_hours, np.float64)
        if len(windows) == 0 or not (windows > 0).all() or not (np.diff(windows) > 0).all():
            raise ConfigError(f"new_items: windows_hours must be positive and increasing, got {cfg.windows_hours}")
        if cfg.per_window_quota is not None:
            quota = np.asarray(cfg.per_window_quota, np.float64)
            if len(quota) != len(windows) or not (quota >= 0).all() or not quota.sum() > 0:
                raise ConfigError(
                    f"new_items: per_window_quota needs one non-negative number per window "
                    f"({len(windows)}), not all zero; got {cfg.per_window_quota}")
        if cfg.top_categories < 1:
            raise ConfigError(f"new_items: top_categories must be >= 1, got {cfg.top_categories}")
        check_recency(self.kind, cfg.recency, cfg.recency_decay, cfg.recency_half_life_days)

    def fit(self, data: TrainingData) -> Self:
        """Index every item with a known publish time, newest first (and by category)."""
        self._validate()
        cfg = self.config
        pair_item = pair_value = np.zeros(0, np.int64)
        values = np.zeros(0, dtype=str)
        if cfg.personalised:
            if cfg.category_column not in data.item_features.columns:
                raise ConfigError(f"new_items: personalised=True needs the item column "
                                  f"'{cfg.category_column}' (item columns: {list(data.item_features.columns)})")
            pair_item, pair_value, _, values = encode_item_values(data.item_features, (cfg.category_column,))
        self.index_ = NewItemIndex.build(item_publish_time(data), pair_item, pair_value, values)
        return self

    def publish(self, items: NewItems) -> bool:
        """Put published items into the pools (:meth:`add_items`), with their category when personalised."""
        cfg = self.config
        category = None
        if cfg.personalised and cfg.category_column in items.attributes.columns:
            category = items.attributes[cfg.category_column].to_numpy(dtype=object)
        self.add_items(items.item_index, items.publish_time, category)
        return True

    def add_items(self, item_index: np.ndarray, publish_time: np.ndarray,
                  category: Sequence[str | None] | np.ndarray | None = None) -> None:
        """Put items published after fit (or re-dated ones) into the pools at once.

        Args:
            item_index: (N,) int64 internal item indices, new ones may lie beyond the
                fitted catalogue (the channel's item space grows to cover them).
            publish_time: (N,) int64 publish times (seconds).
            category: (N,) category labels (None or "" for none); replaces the items'
                categories when given. New labels extend the vocabulary.

        Raises:
            DataError: the arrays disagree in length or an index is negative.
        """
        item_index = np.asarray(item_index, np.int64).ravel()
        publish_time = np.asarray(publish_time, np.int64).ravel()
        if len(publish_time) != len(item_index) or (category is not None and len(category) != len(item_index)):
            raise DataError("new_items.add_items: item_index, publish_time and category lengths disagree")
        if (item_index < 0).any():
            raise DataError("new_items.add_items: item indices must be >= 0")
        index = self.index_
        n_items = max(len(index.item_time), int(item_index.max(initial=-1)) + 1)
        item_time = np.full(n_items, UNKNOWN_TIME, np.int64)
        item_time[: len(index.item_time)] = index.item_time
        item_time[item_index] = publish_time
        pair_item, pair_value, values = index.pair_item, index.pair_value, index.values
        if category is not None:
            labels = pd.Series(np.asarray(category, dtype=object))
            present = (labels.notna() & (labels.astype(str) != "")).to_numpy()
            names = (f"{self.config.category_column}=" + labels[present].astype(str)).to_numpy(dtype=object)
            vocabulary = pd.Index(values.astype(object))
            unseen = pd.unique(names[vocabulary.get_indexer(names) < 0])
            vocabulary = vocabulary.append(pd.Index(unseen, dtype=object))
            replaced = np.isin(pair_item, item_index)
            pair_item = np.concatenate([pair_item[~replaced], item_index[present]])
            pair_value = np.concatenate([pair_value[~replaced], vocabulary.get_indexer(names).astype(np.int64)])
            values = np.asarray(vocabulary, dtype=object).astype(str)
        self.index_ = NewItemIndex.build(item_time, pair_item, pair_value, values)

    def _pairs(self, index: NewItemIndex, request: RequestBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, list, share) of the lists each row draws from, before the split by window."""
        cfg = self.config
        b = len(request)
        if not cfg.personalised:
            return np.arange(b), np.full(b, _ALL), np.ones(b)
        values, shares = value_profile(request, index.membership, cfg.top_categories, cfg.recency,
                                       cfg.recency_decay, cfg.recency_half_life_days)
        rows, value, share = profile_pairs(values, shares)
        without = np.flatnonzero(~(values >= 0).any(axis=1))  # no profile: the plain pools
        rows = np.concatenate([rows, without])
        lists = np.concatenate([1 + value, np.full(len(without), _ALL)])
        share = np.concatenate([share, np.ones(len(without))])
        order = np.argsort(rows, kind="stable")
        return rows[order], lists[order], share[order]

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """The newest items of every age window, quotas per window, newest first.

        Args:
            request: B users; ``time`` and ``exclude`` (and, when ``personalised``,
                ``history`` and ``history_time``) are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by ``-age_hours`` as of the request time, newest
            first; only items published at or before the request time and younger than
            the last window.
        """
        cfg = self.config
        index = self.index_  # read once: add_items may swap in a new index meanwhile
        lists = index.lists
        windows = np.round(np.asarray(cfg.windows_hours, np.float64) * _SECONDS_PER_HOUR).astype(np.int64)
        youngest = np.r_[0, windows[:-1]]  # pool w: age in [youngest[w], windows[w])
        quota = np.ones(len(windows)) if cfg.per_window_quota is None else np.asarray(cfg.per_window_quota, np.float64)
        quota = quota / quota.sum()

        rows, list_id, share = self._pairs(index, request)
        n_windows = len(windows)
        pair_row = np.repeat(rows, n_windows)
        pair_list = np.repeat(list_id, n_windows)
        window = np.tile(np.arange(n_windows), len(rows))
        weight = np.repeat(share, n_windows) * quota[window]
        live = weight > 0
        pair_row, pair_list, window, weight = pair_row[live], pair_list[live], window[live], weight[live]
        t = request.time[pair_row]
        # newest-first lists: [published at or before t - youngest, published after t - window)
        start = lists.count_after(pair_list, t - youngest[window])
        stop = lists.count_after(pair_list, t - windows[window])
        items, _, position = mix_lists(lists, request, k, pair_row, pair_list, weight, start, stop,
                                       time_ordered=True)
        age_hours = (request.time[:, None] - lists.time[np.maximum(position, 0)]) / _SECONDS_PER_HOUR
        score = np.where(items >= 0, -age_hours, -np.inf)
        order = top_k_columns(score, score.shape[1])  # newest first (stable: ties keep quota order)
        items = np.take_along_axis(items, order, axis=1)
        score = np.take_along_axis(score, order, axis=1).astype(np.float32)
        return Candidates(items, score, {self.name: score})

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        index = self.index_
        writer.write_arrays(f"{prefix}new_items.npz", {
            "item_time": index.item_time, "pair_item": index.pair_item, "pair_value": index.pair_value,
            "values": index.values.astype(str),
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: NewItemConfig,
             name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}new_items.npz")
        stage = cls(config, name)
        stage.index_ = NewItemIndex.build(arrays["item_time"].astype(np.int64), arrays["pair_item"].astype(np.int64),
                                          arrays["pair_value"].astype(np.int64), arrays["values"].astype(str))
        return stage
