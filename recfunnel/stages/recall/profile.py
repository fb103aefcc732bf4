"""Profile recall: inverted item indexes read through the user's profile.

Channels (MISSION_MAP §2 and §6; Wang Shusen's course, 召回09 "地理位置召回、作者召回、
缓存召回" and 物品冷启02 "类目、关键词召回"):

* :class:`CategoryIndexRetriever` (``"category_index"``): an index ``value -> items,
  newest first`` for each category-like item column (category, sub-category, tags,
  genres ...). The user's profile is the recency-weighted share of every value in
  their point-in-time history; the channel returns the newest items of the user's top
  values, each value's quota proportional to its share.
* :class:`AuthorRetriever` (``"author"``): the same index over the author column: the
  authors of the user's history, their newest items.
* :class:`GeoRetriever` (``"geo"``): ``location -> popular items`` (同城召回): the
  popular items of the user's city (or region), the city read from the user table.

They share the machinery of this module, which the category-popular channel
(``popular.py``) and the new-item pools (``new_items.py``) use as well:

* :class:`ItemLists`: a CSR of item lists (list x items), each list ordered best first
  (newest, or hottest), built once at fit, with every entry's publish time;
* :func:`value_profile`: the user's top values and their shares from the history;
* :func:`mix_lists`: for a whole batch, the first entries of each (user, list) pair by
  CSR ``indptr`` arithmetic, minus exclusions and items published after the request
  time, then mixed by D'Hondt quotas.

"Newest" means the item's ``publish_time`` column when the item table has one, else the
time of its first event in the training data (positive or exposure); an item with
neither has no known time and is never returned by a time-aware channel
(:func:`item_publish_time`). Everything is point-in-time: an item published after
``request.time`` is never returned.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> index = CategoryIndexRetriever().fit(data)  # the planted items carry a "category" column
>>> index.values_.tolist()
['category=g0', 'category=g1']
>>> out = index.retrieve(make_request(data, np.array([0, 39]), history_length=5), k=3)
>>> bool((out.item_index[0] < 15).all() and (out.item_index[1] >= 15).all())  # own group's items
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.data.interactions import Interactions
from recfunnel.errors import ConfigError
from recfunnel.stages.base import Retriever
from recfunnel.stages.recall.sparse import exclusion_mask, sparse_top_k
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import PAD, Candidates, RequestBatch

_SECONDS_PER_DAY = 86_400.0

#: publish time of an item whose time is unknown: after every request, so never "published"
UNKNOWN_TIME = np.iinfo(np.int64).max

#: item columns the category index uses when present (``CategoryIndexConfig.columns=None``)
CATEGORY_COLUMNS = ("category", "sub_category", "tags", "tag", "genres", "genre", "class")

#: user / item columns the geographic channel looks for (``GeoConfig.column=None``)
LOCATION_COLUMNS = ("city", "region", "location")

Recency = Literal["position", "time", "none"]


# ---------------------------------------------------------------------------
# item attributes


def item_publish_time(data: TrainingData) -> np.ndarray:
    """When each item appeared: its ``publish_time``, else its first event.

    Args:
        data: training data; ``item_features["publish_time"]`` (unix seconds) is used
            where present and not missing.

    Returns:
        (n_items,) int64 publish time; the first training event (positive or exposure)
        of items without one, :data:`UNKNOWN_TIME` for items with neither.
    """
    first = np.full(data.n_items, UNKNOWN_TIME, np.int64)
    for events in (data.interactions, data.exposures):
        if events is not None and len(events):
            np.minimum.at(first, events.item_index, events.timestamp.astype(np.int64))
    if "publish_time" in data.item_features.columns:
        published = pd.to_numeric(data.item_features["publish_time"], errors="coerce").to_numpy(np.float64)
        known = np.isfinite(published)
        first = np.where(known, np.where(known, published, 0).astype(np.int64), first)
    return first


def decayed_event_weights(events: Interactions, half_life_days: float | None,
                          window_days: float | None) -> np.ndarray:
    """Time-decayed weight of every event: ``weight_e * 2 ** (-age_e / half_life)``.

    Ages are measured from the newest event, so a model fit on old data is not all
    zeros and constant timestamps give plain weights. Events older than ``window_days``
    get 0.

    Args:
        events: N events.
        half_life_days: the weight halves every this many days; None: no decay.
        window_days: only events at most this many days older than the newest count.

    Returns:
        (N,) float64 weights.
    """
    age_days = np.zeros(len(events))
    if len(events):
        age_days = (events.timestamp.max() - events.timestamp) / _SECONDS_PER_DAY
    weight = events.weight.astype(np.float64)
    if half_life_days is not None:
        weight = weight * np.exp2(-age_days / half_life_days)
    if window_days is not None:
        weight = np.where(age_days <= window_days, weight, 0.0)
    return weight


def _column_kind(column: pd.Series) -> str:
    """"categorical" (strings), "multi" (tuples / lists / arrays of strings) or "other"."""
    present = column.dropna()
    if len(present) == 0:
        return "other"
    first = present.iloc[0]
    if isinstance(first, tuple | list | np.ndarray):  # parquet gives list columns back as arrays
        return "multi"
    if isinstance(first, str):
        return "categorical"
    return "other"


def category_columns(features: pd.DataFrame, max_cardinality: int) -> tuple[str, ...]:
    """Item columns the category index uses by default.

    The columns named in :data:`CATEGORY_COLUMNS` that exist; when there are none, every
    categorical or multi-value column with 2..``max_cardinality`` distinct values whose
    name does not end in ``_id`` (ids such as ``author_id`` have their own channel).
    """
    named = tuple(c for c in CATEGORY_COLUMNS if c in features.columns
                  and _column_kind(features[c]) != "other")
    if named:
        return named
    picked = []
    for name in features.columns:  # a loop over columns, not items
        kind = _column_kind(features[name])
        if kind == "other" or str(name).endswith("_id"):
            continue
        values = features[name].explode() if kind == "multi" else features[name]
        if 2 <= values.nunique(dropna=True) <= max_cardinality:
            picked.append(str(name))
    return tuple(picked)


def encode_item_values(features: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(item, value) pairs of categorical / multi-value item columns, and their vocabulary.

    Values are named ``"column=value"`` so columns never collide. An item with several
    values in one column (tags) spreads weight 1 over them, and each column gets an
    equal share, so every item carries total weight 1 over the columns it has.

    Args:
        features: item table, one row per item index.
        columns: the columns to encode (numbers are turned into strings).

    Returns:
        (item (P,) int64, value (P,) int64, weight (P,) float32, vocabulary (V,) str).
    """
    items, labels = [], []
    for name in columns:  # a loop over columns, not items
        column = features[name]
        if _column_kind(column) == "multi":
            column = column.explode()
        column = column.dropna()
        items.append(column.index.to_numpy(np.int64))
        labels.append((f"{name}=" + column.astype(str)).to_numpy(dtype=object))
    if not items:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, dtype=str))
    column_id = np.repeat(np.arange(len(items)), [len(i) for i in items])
    item = np.concatenate(items)
    codes, vocabulary = pd.factorize(pd.Series(np.concatenate(labels), dtype=object))
    # duplicate values within an item (a repeated tag) count once
    key = pd.DataFrame({"item": item, "value": codes, "column": column_id}).drop_duplicates(["item", "value"])
    per_item_column = key.groupby(["item", "column"])["value"].transform("size").to_numpy(np.float64)
    weight = 1.0 / (per_item_column * len(columns))
    return (key["item"].to_numpy(np.int64), key["value"].to_numpy(np.int64), weight.astype(np.float32),
            np.asarray(vocabulary, dtype=object).astype(str))


def membership_matrix(item: np.ndarray, value: np.ndarray, weight: np.ndarray,
                      n_items: int, n_values: int) -> sp.csr_matrix:
    """(n_items, n_values) CSR float32 of the item -> value weights."""
    m = sp.csr_matrix((np.asarray(weight, np.float32), (item, value)), shape=(n_items, n_values))
    m.sum_duplicates()
    return m


# ---------------------------------------------------------------------------
# item lists


@dataclass(frozen=True, eq=False)
class ItemLists:
    """Lists of items, each ordered best first, stored as one CSR (list x position).

    Attributes:
        indptr: (n_lists + 1,) int64; list ``l`` is ``items[indptr[l]:indptr[l + 1]]``.
        items: (nnz,) int64 item indices.
        key: (nnz,) float64 the order key, non-increasing within each list (publish time
            for newest-first lists, popularity for hottest-first lists).
        time: (nnz,) int64 publish time of each entry (point-in-time filtering).
        n_items: size of the item space the lists index.
    """

    indptr: np.ndarray
    items: np.ndarray
    key: np.ndarray
    time: np.ndarray
    n_items: int
    #: (n_items, n_lists) CSR float32, 1 where an item is in a list (derived)
    membership: sp.csr_matrix = field(init=False, repr=False)
    #: some item is in several lists (derived)
    overlapping: bool = field(init=False, repr=False)
    _t_min: int = field(init=False, repr=False)
    _span: int = field(init=False, repr=False)
    _by_time: np.ndarray = field(init=False, repr=False)

    @classmethod
    def build(cls, list_id: np.ndarray, items: np.ndarray, key: np.ndarray, time: np.ndarray,
              n_lists: int, n_items: int) -> ItemLists:
        """Group (list, item) entries into lists sorted by ``key`` descending.

        Ties keep the lower item index first, so a rebuild gives the same lists.

        Args:
            list_id, items, key, time: (E,) the entries.
            n_lists: number of lists (empty lists are allowed).
            n_items: size of the item space.
        """
        list_id = np.asarray(list_id, np.int64)
        items = np.asarray(items, np.int64)
        key = np.asarray(key, np.float64)
        order = np.lexsort((items, -key, list_id))
        indptr = np.r_[0, np.cumsum(np.bincount(list_id, minlength=n_lists))].astype(np.int64)
        return cls(indptr, items[order], key[order], np.asarray(time, np.int64)[order], int(n_items))

    @property
    def n_lists(self) -> int:
        return len(self.indptr) - 1

    @property
    def list_id(self) -> np.ndarray:
        """(nnz,) int64 list of each entry."""
        return np.repeat(np.arange(self.n_lists, dtype=np.int64), np.diff(self.indptr))

    def __post_init__(self) -> None:
        # derived once: entries sorted by (list, time), for per-list counts of entries after a time
        time = self.time
        t_min = int(time.min()) if len(time) else 0
        span = (int(time.max()) - t_min + 2) if len(time) else 2
        by_time = np.sort(self.list_id * span + (time - t_min))
        object.__setattr__(self, "_t_min", t_min)
        object.__setattr__(self, "_span", span)
        object.__setattr__(self, "_by_time", by_time)
        membership = sp.csr_matrix(
            (np.ones(len(self.items), np.float32), (self.items, self.list_id)),
            shape=(self.n_items, self.n_lists))
        membership.sum_duplicates()
        object.__setattr__(self, "membership", membership)
        object.__setattr__(self, "overlapping", bool((np.diff(membership.indptr) > 1).any()))

    def count_after(self, lists: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Entries of each list published strictly after ``t``.

        In a newest-first list these are its first entries, so the count is the position
        of the first entry published at or before ``t``.

        Args:
            lists: (P,) list ids.
            t: (P,) times.

        Returns:
            (P,) int64 counts.
        """
        lists = np.asarray(lists, np.int64)
        # one sorted search over (list, time) keys for the whole batch (as UserHistoryStore does)
        offset = np.clip(np.asarray(t, np.int64), self._t_min - 1, self._t_min + self._span - 2) - self._t_min
        at_or_before = np.searchsorted(self._by_time, lists * self._span + offset, side="right") - self.indptr[lists]
        return (self.indptr[lists + 1] - self.indptr[lists] - at_or_before).astype(np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that :meth:`from_arrays` restores (for artifacts)."""
        return {"indptr": self.indptr, "items": self.items, "key": self.key, "time": self.time,
                "n_items": np.array(self.n_items, np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ItemLists:
        return cls(arrays["indptr"].astype(np.int64), arrays["items"].astype(np.int64),
                   arrays["key"].astype(np.float64), arrays["time"].astype(np.int64), int(arrays["n_items"]))


def _request_exclusions(request: RequestBatch, n_items: int) -> sp.csr_matrix:
    """(B, n_items) binary CSR of the request's exclusions among the first ``n_items`` items."""
    ex = sp.coo_matrix(request.exclude)
    keep = (ex.col < n_items) & (ex.data != 0)
    out = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (ex.row[keep], ex.col[keep])),
                        shape=(len(request), n_items))
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


def _group_starts(group: np.ndarray, n_groups: int) -> np.ndarray:
    """For entries sorted by ``group`` (ints in [0, n_groups)), the index of each entry's group start."""
    size = np.bincount(group, minlength=n_groups)
    return np.repeat(np.cumsum(size) - size, size)


def mix_lists(
    lists: ItemLists,
    request: RequestBatch,
    k: int,
    pair_row: np.ndarray,
    pair_list: np.ndarray,
    pair_weight: np.ndarray,
    pair_start: np.ndarray | None = None,
    pair_stop: np.ndarray | None = None,
    *,
    time_ordered: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``k`` items per request row, taken from its (row, list) pairs by quotas.

    Every pair offers the entries ``[start, stop)`` of its list, minus the row's
    exclusions and items published after the row's request time. The ``j``-th surviving
    entry (0-based) of a pair of weight ``w`` gets the priority ``w / (j + 1)`` and each
    row keeps its ``k`` highest priorities: the D'Hondt (Jefferson) apportionment, so a
    pair's share of the row is proportional to its weight, and a pair whose list runs dry
    leaves its places to the others. An item offered by several pairs keeps its best
    priority. Ties go to the pair with the lower index.

    Only the entries that can matter are read, for the whole batch at once by CSR
    ``indptr`` arithmetic: per pair, the survivors it can place (at most ``k``, and at
    most ``floor(w / theta) + 1`` once another pair of the row surely fills ``k``
    places at priority ``theta`` or more) plus the entries that may be dropped (the
    row's exclusions in that list and, unless ``time_ordered`` lists already start after
    them, its entries published after the request time).

    Args:
        lists: the item lists.
        request: B rows; ``time`` and ``exclude`` are used.
        k: items per row.
        pair_row, pair_list, pair_weight: (P,) request row, list id and weight (> 0) of
            each pair (list a row's heavier pairs first: they win ties).
        pair_start, pair_stop: (P,) range of list positions offered (default: all).
        time_ordered: the lists are newest first and ``pair_start`` already skips the
            entries published after the request time.

    Returns:
        (items, priority, position): (B, W) int64 items (-1 padded), (B, W) float64
        priorities (-inf padded) sorted descending, and (B, W) int64 positions in the
        lists' arrays (-1 padded), with ``W <= k``.
    """
    b = len(request)
    pair_row = np.asarray(pair_row, np.int64)
    pair_list = np.asarray(pair_list, np.int64)
    length = lists.indptr[pair_list + 1] - lists.indptr[pair_list]
    start = np.zeros(len(pair_row), np.int64) if pair_start is None else np.asarray(pair_start, np.int64)
    stop = length if pair_stop is None else np.minimum(np.asarray(pair_stop, np.int64), length)
    if k <= 0 or len(pair_row) == 0:
        return np.full((b, 0), PAD, np.int64), np.full((b, 0), -np.inf), np.full((b, 0), PAD, np.int64)

    # how deep to read each pair: k survivors need k + (entries that will be dropped)
    weight = np.asarray(pair_weight, np.float64)
    excluded_in_list = _request_exclusions(request, lists.n_items) @ lists.membership  # (B, n_lists)
    dropped = np.asarray(excluded_in_list[pair_row, pair_list]).ravel().astype(np.int64)
    if not time_ordered:
        dropped += lists.count_after(pair_list, request.time[pair_row])
    available = np.clip(stop - start, 0, None)
    # Jefferson's bound: a pair sure to keep k survivors puts the row's k-th priority at
    # >= w / k (k distinct items at least that high), so pair p needs at most floor(w_p / that)
    sure = np.minimum(available, k + dropped) - dropped >= k
    threshold = np.zeros(b)
    np.maximum.at(threshold, pair_row[sure], weight[sure] / k)
    row_threshold = threshold[pair_row]
    needed = np.where(row_threshold > 0, np.floor(weight / np.where(row_threshold > 0, row_threshold, 1.0)) + 1, k)
    count = np.minimum(available, np.minimum(needed, k).astype(np.int64) + dropped)

    # CSR gather: the first `count` entries after `start` of every pair, for all pairs at once
    pair = np.repeat(np.arange(len(pair_row)), count)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
    position = lists.indptr[pair_list[pair]] + start[pair] + offset
    row = pair_row[pair]
    item = lists.items[position]
    keep = ~exclusion_mask(request.exclude, row, item) & (lists.time[position] <= request.time[row])
    pair, row, item, position = pair[keep], row[keep], item[keep], position[keep]

    # survivors' rank within their pair (entries stay grouped by pair), then D'Hondt quotients
    rank = np.arange(len(pair)) - _group_starts(pair, len(pair_row))
    priority = weight[pair] / (rank + 1.0)

    # order by (row, priority desc); stable sorts keep ties in pair order (single-key sorts
    # are several times faster than a lexsort over a million entries, and small integer
    # keys get numpy's linear-time radix sort)
    by_priority = np.argsort(-priority, kind="stable")
    row_key = row.astype(np.int16 if b <= np.iinfo(np.int16).max else np.int64)
    order = by_priority[np.argsort(row_key[by_priority], kind="stable")]
    if lists.overlapping:  # an item in several lists: keep its best entry per row
        key = row * np.int64(max(lists.n_items, 1)) + item
        by_item = order[np.argsort(key[order], kind="stable")]
        first = np.ones(len(by_item), bool)
        first[1:] = key[by_item][1:] != key[by_item][:-1]
        best = np.zeros(len(order), bool)
        best[by_item[first]] = True
        order = order[best[order]]

    # the k best of each row
    slot = np.arange(len(order)) - _group_starts(row[order], b)
    chosen = order[slot < k]
    slot = slot[slot < k]
    width = int(slot.max(initial=-1)) + 1
    items_out = np.full((b, width), PAD, np.int64)
    priority_out = np.full((b, width), -np.inf)
    position_out = np.full((b, width), PAD, np.int64)
    items_out[row[chosen], slot] = item[chosen]
    priority_out[row[chosen], slot] = priority[chosen]
    position_out[row[chosen], slot] = position[chosen]
    return items_out, priority_out, position_out


# ---------------------------------------------------------------------------
# user profiles


def check_recency(kind: str, recency: str, recency_decay: float, half_life_days: float) -> None:
    if recency not in ("position", "time", "none"):
        raise ConfigError(f"{kind}: recency must be 'position', 'time' or 'none', got '{recency}'")
    if recency_decay < 0 or not half_life_days > 0:
        raise ConfigError(f"{kind}: recency_decay must be >= 0 and recency_half_life_days > 0")


def history_weights(request: RequestBatch, n_items: int, recency: Recency = "position",
                    recency_decay: float = 0.1, half_life_days: float = 7.0) -> sp.csr_matrix:
    """(B, n_items) CSR recency weights of each user's point-in-time history.

    Args:
        request: B rows; ``history`` (newest first), ``history_time`` and ``time``.
        n_items: items known to the model; later items in the history are ignored.
        recency: "position" ``1 / (1 + recency_decay * pos)`` (pos 0 = newest), "time"
            ``2 ** (-age_days / half_life_days)``, "none" 1.
        recency_decay, half_life_days: parameters of the weights.

    Returns:
        (B, n_items) CSR float64; repeated items add up.
    """
    history = request.history
    valid = (history >= 0) & (history < n_items)
    if recency == "position":
        weight = np.broadcast_to(1.0 / (1.0 + recency_decay * np.arange(history.shape[1])), history.shape)
    elif recency == "time":
        age_days = np.maximum(request.time[:, None] - request.history_time, 0) / _SECONDS_PER_DAY
        weight = np.exp2(-age_days / half_life_days)
    else:
        weight = np.ones(history.shape)
    rows = np.broadcast_to(np.arange(len(request))[:, None], history.shape)
    h = sp.csr_matrix((weight[valid], (rows[valid], history[valid])), shape=(len(request), n_items))
    h.sum_duplicates()
    return h


def value_profile(request: RequestBatch, membership: sp.csr_matrix, top_values: int,
                  recency: Recency = "position", recency_decay: float = 0.1,
                  half_life_days: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """Each user's top item-attribute values and their shares of the user's history.

    The profile is ``H @ M``: recency-weighted history (:func:`history_weights`) times
    the item -> value weights, normalised to shares that sum to 1 over all values.

    Args:
        request: B rows.
        membership: (n_items, n_values) item -> value weights.
        top_values: values kept per user.
        recency, recency_decay, half_life_days: history weights, as in :func:`history_weights`.

    Returns:
        (values (B, V) int64 -1 padded, shares (B, V) float64 0 padded), heaviest first,
        ``V <= top_values``; users without a (known) history get only padding.
    """
    h = history_weights(request, membership.shape[0], recency, recency_decay, half_life_days)
    profile = (h @ membership).tocsr()
    total = np.asarray(profile.sum(axis=1)).ravel()
    values, weight = sparse_top_k(profile, top_values)
    shares = np.where(values >= 0, weight / np.where(total > 0, total, 1.0)[:, None], 0.0)
    return values, shares


def profile_pairs(values: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, value, share) of every present profile slot, row by row, heaviest first."""
    rows, cols = np.nonzero(values >= 0)  # row-major: each row's slots stay in order
    return rows.astype(np.int64), values[rows, cols], shares[rows, cols]


def _candidates(items: np.ndarray, score: np.ndarray, name: str) -> Candidates:
    score = np.where(items >= 0, score, -np.inf).astype(np.float32)
    return Candidates(items, score, {name: score})


def _save_csr(m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": np.array(m.shape, np.int64)}


def _load_csr(arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    return sp.csr_matrix((arrays["data"].astype(np.float32), arrays["indices"], arrays["indptr"]),
                         shape=tuple(int(v) for v in arrays["shape"]))


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": v for k, v in arrays.items()}


def _unprefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------
# category index and author recall


@dataclass(frozen=True)
class CategoryIndexConfig:
    """Options of :class:`CategoryIndexRetriever`.

    Attributes:
        columns: categorical / multi-value item columns to index; None: the columns of
            :data:`CATEGORY_COLUMNS` present, else every low-cardinality categorical
            column (see :func:`category_columns`).
        top_values: profile values read per user.
        max_cardinality: most distinct values of a column picked automatically.
        recency: weight of a history item: "position" ``1 / (1 + recency_decay * pos)``,
            "time" ``2 ** (-age_days / recency_half_life_days)``, "none" 1.
        recency_decay: slope of the "position" weights.
        recency_half_life_days: half-life of the "time" weights.
    """

    columns: tuple[str, ...] | None = None
    top_values: int = 5
    max_cardinality: int = 1000
    recency: Recency = "position"
    recency_decay: float = 0.1
    recency_half_life_days: float = 7.0


@dataclass(frozen=True)
class AuthorConfig:
    """Options of :class:`AuthorRetriever`.

    Attributes:
        column: the item column naming each item's author.
        top_authors: authors of the user's history read per user.
        recency, recency_decay, recency_half_life_days: as in :class:`CategoryIndexConfig`.
    """

    column: str = "author_id"
    top_authors: int = 10
    recency: Recency = "position"
    recency_decay: float = 0.1
    recency_half_life_days: float = 7.0


class ProfileListsRetriever(Retriever):
    """Base of the channels "values of the user's history -> each value's best items".

    Subclasses name the item columns (:meth:`_columns`), the number of profile values
    read per user (:meth:`_top_values`) and, unless their lists are newest first, the
    order of each list (:meth:`_list_keys`, with ``newest_first = False``). Their config
    must have ``recency``, ``recency_decay`` and ``recency_half_life_days``.

    Learned attributes:
        values_: (n_values,) str vocabulary, ``"column=value"``.
        membership_: (n_items, n_values) CSR float32 item -> value weights (the profile).
        lists_: :class:`ItemLists`, one list per value, best first (items with a known
            publish time only).
    """

    #: the lists are ordered by publish time, newest first (else by :meth:`_list_keys`)
    newest_first: ClassVar[bool] = True

    def _columns(self, data: TrainingData) -> tuple[str, ...]:
        raise NotImplementedError

    def _top_values(self) -> int:
        raise NotImplementedError

    def _validate(self) -> None:
        cfg = self.config
        check_recency(self.kind, cfg.recency, cfg.recency_decay, cfg.recency_half_life_days)
        if self._top_values() < 1:
            raise ConfigError(f"{self.kind}: the number of profile values per user must be >= 1")

    def _list_keys(self, data: TrainingData, items: np.ndarray, published: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(key, keep) of (value, item) entries: the order key and which entries to index.

        Default: newest first, items with a known publish time.
        """
        return published.astype(np.float64), published != UNKNOWN_TIME

    def fit(self, data: TrainingData) -> Self:
        """Index the items of every value of the columns, best first."""
        self._validate()
        columns = self._columns(data)
        item, value, weight, vocabulary = encode_item_values(data.item_features, columns)
        published = item_publish_time(data)[item]
        key, keep = self._list_keys(data, item, published)
        keep &= published != UNKNOWN_TIME
        self.values_ = vocabulary
        self.membership_ = membership_matrix(item, value, weight, data.n_items, len(vocabulary))
        self.lists_ = ItemLists.build(value[keep], item[keep], key[keep], published[keep],
                                      len(vocabulary), data.n_items)
        return self

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """The best items of each user's top values, quotas proportional to the shares.

        Args:
            request: B users; ``history``, ``history_time``, ``time`` and ``exclude`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by their D'Hondt priority ``share_v / (j + 1)``
            (the j-th best unexcluded item of value v, see :func:`mix_lists`), so the best
            item of the top value comes first; users without a history get padding.
        """
        cfg = self.config
        values, shares = value_profile(request, self.membership_, self._top_values(), cfg.recency,
                                       cfg.recency_decay, cfg.recency_half_life_days)
        rows, lists, weight = profile_pairs(values, shares)
        start = None
        if self.newest_first:  # skip the items published after the request time
            start = self.lists_.count_after(lists, request.time[rows])
        items, priority, _ = mix_lists(self.lists_, request, k, rows, lists, weight, start,
                                       time_ordered=self.newest_first)
        return _candidates(items, priority, self.name)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_arrays(f"{prefix}{self.kind}.npz", {
            "values": self.values_.astype(str), **_prefixed(_save_csr(self.membership_), "membership_"),
            **_prefixed(self.lists_.arrays(), "lists_"),
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any, name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}{cls.kind}.npz")
        stage = cls(config, name)
        stage.values_ = arrays["values"].astype(str)
        stage.membership_ = _load_csr(_unprefixed(arrays, "membership_"))
        stage.lists_ = ItemLists.from_arrays(_unprefixed(arrays, "lists_"))
        return stage


class CategoryIndexRetriever(ProfileListsRetriever):
    """Category / tag index recall: the newest items of the user's favourite values.

    The index ``value -> items, newest first`` (物品冷启02: 类目索引, 按时间倒排) makes
    it a cold-start channel as well: a new item is found by its category at once, before
    it has any interaction.
    """

    kind = "category_index"

    def __init__(self, config: CategoryIndexConfig | None = None, name: str | None = None):
        super().__init__(config or CategoryIndexConfig(), name)

    def _top_values(self) -> int:
        return self.config.top_values

    def _validate(self) -> None:
        super()._validate()
        if self.config.max_cardinality < 2:
            raise ConfigError("category_index: max_cardinality must be >= 2")

    def _columns(self, data: TrainingData) -> tuple[str, ...]:
        cfg = self.config
        if cfg.columns is None:
            columns = category_columns(data.item_features, cfg.max_cardinality)
            if not columns:
                raise ConfigError(
                    "category_index: the item table has no categorical column to index; "
                    f"add one of {list(CATEGORY_COLUMNS)} or set columns=")
            return columns
        missing = [c for c in cfg.columns if c not in data.item_features.columns]
        if missing or not cfg.columns:
            raise ConfigError(f"category_index: item columns {missing or '[]'} not found; "
                              f"the item table has {list(data.item_features.columns)}")
        return tuple(cfg.columns)


class AuthorRetriever(ProfileListsRetriever):
    """Author recall (召回09, 有交互的作者召回): the newest items of the authors the user
    interacted with, each author's quota proportional to their recency-weighted share of
    the user's history.
    """

    kind = "author"

    def __init__(self, config: AuthorConfig | None = None, name: str | None = None):
        super().__init__(config or AuthorConfig(), name)

    def _top_values(self) -> int:
        return self.config.top_authors

    def _columns(self, data: TrainingData) -> tuple[str, ...]:
        column = self.config.column
        if column not in data.item_features.columns:
            raise ConfigError(f"author: the item table has no column '{column}'; set column= to the "
                              f"author column (item columns: {list(data.item_features.columns)})")
        return (column,)


# ---------------------------------------------------------------------------
# geographic recall


@dataclass(frozen=True)
class GeoConfig:
    """Options of :class:`GeoRetriever`.

    Attributes:
        column: location column of the user table (and of the item table, for
            ``source="item"``); None: the first of :data:`LOCATION_COLUMNS` in the user table.
        source: where an item's location comes from: "item" its own column (a note's
            city), "users" the locations of the users who interacted with it (what is
            popular among the users of a city), "auto" "item" when the item table has
            the column, else "users".
        half_life_days: popularity decay, as in ``PopularConfig``; None: plain counts.
        window_days: only events at most this many days older than the newest count.
    """

    column: str | None = None
    source: Literal["auto", "item", "users"] = "auto"
    half_life_days: float | None = 30.0
    window_days: float | None = None


class GeoRetriever(Retriever):
    """Geographic recall (召回09, 同城召回): the popular items of the user's location.

    The user's location is read from the user table at fit; a request may override it
    with ``request.context[column]`` (an array of location strings, e.g. the city of the
    device right now; empty strings fall back to the table). Users with no known
    location (unknown users included) get padding.

    Learned attributes:
        locations_: (n_locations,) str vocabulary.
        user_location_: (n_users,) int64 location of every user, -1 unknown.
        lists_: :class:`ItemLists`, one per location, most popular first (key = popularity).
        column_: the location column used.
    """

    kind = "geo"

    def __init__(self, config: GeoConfig | None = None, name: str | None = None):
        super().__init__(config or GeoConfig(), name)

    def _resolve(self, data: TrainingData) -> tuple[str, str]:
        cfg = self.config
        if cfg.source not in ("auto", "item", "users"):
            raise ConfigError(f"geo: source must be 'auto', 'item' or 'users', got '{cfg.source}'")
        for option in ("half_life_days", "window_days"):
            value = getattr(cfg, option)
            if value is not None and not value > 0:
                raise ConfigError(f"geo: {option} must be positive or None, got {value}")
        users = data.user_features.columns
        column = cfg.column or next((c for c in LOCATION_COLUMNS if c in users), None)
        if column is None or column not in users:
            raise ConfigError(f"geo: the user table has no location column "
                              f"({cfg.column or list(LOCATION_COLUMNS)}); user columns: {list(users)}")
        source = cfg.source
        if source == "auto":
            source = "item" if column in data.item_features.columns else "users"
        if source == "item" and column not in data.item_features.columns:
            raise ConfigError(f"geo: source='item' but the item table has no column '{column}'")
        return column, source

    def fit(self, data: TrainingData) -> Self:
        """Rank the items of every location by their decayed popularity."""
        column, source = self._resolve(data)
        user_labels = data.user_features[column]
        item_labels = data.item_features[column] if source == "item" else pd.Series(dtype=object)
        labels = pd.concat([user_labels.dropna().astype(str), item_labels.dropna().astype(str)])
        vocabulary = pd.Index(pd.unique(labels.to_numpy(dtype=object))).astype(str)
        user_location = self._codes(vocabulary, user_labels)

        inter = data.interactions
        weight = decayed_event_weights(inter, self.config.half_life_days, self.config.window_days)
        if source == "item":
            popularity = np.bincount(inter.item_index, weights=weight, minlength=data.n_items)
            location = self._codes(vocabulary, item_labels)
            entries = np.flatnonzero((popularity > 0) & (location >= 0))
            list_id, items, key = location[entries], entries, popularity[entries]
        else:
            # popularity among the users of each location: a (location x item) sparse sum
            event_location = user_location[inter.user_index]
            known = event_location >= 0
            counts = sp.coo_matrix((weight[known], (event_location[known], inter.item_index[known])),
                                   shape=(len(vocabulary), data.n_items)).tocsr()
            counts.sum_duplicates()
            counts.eliminate_zeros()
            list_id = np.repeat(np.arange(len(vocabulary)), np.diff(counts.indptr))
            items, key = counts.indices.astype(np.int64), counts.data.astype(np.float64)
        published = item_publish_time(data)
        self.column_ = column
        self.locations_ = np.asarray(vocabulary, dtype=object).astype(str)
        self.user_location_ = user_location
        self.lists_ = ItemLists.build(list_id, items, key, published[items], len(vocabulary), data.n_items)
        return self

    @staticmethod
    def _codes(vocabulary: pd.Index, labels: pd.Series) -> np.ndarray:
        """Vocabulary codes of location labels, -1 for missing / unknown ones."""
        present = labels.notna().to_numpy()
        codes = np.full(len(labels), -1, np.int64)
        if present.any():
            codes[present] = vocabulary.get_indexer(labels[present].astype(str).to_numpy(dtype=object))
        return codes

    def request_locations(self, request: RequestBatch) -> np.ndarray:
        """(B,) int64 location code of each request row, -1 unknown."""
        users = request.user_index
        known = (users >= 0) & (users < len(self.user_location_))
        location = np.where(known, self.user_location_[np.where(known, users, 0)], -1)
        override = request.context.get(self.column_)
        if override is not None:
            labels = np.asarray(override, dtype=object).astype(str)
            from_context = pd.Index(self.locations_).get_indexer(labels)
            location = np.where(labels != "", from_context, location)
        return location.astype(np.int64)

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """The most popular items of each user's location, minus ``request.exclude``.

        Args:
            request: B users; ``user_index``, ``time``, ``exclude`` and optionally
                ``context[column]`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by their popularity in the user's location.
        """
        location = self.request_locations(request)
        rows = np.flatnonzero(location >= 0)
        items, _, position = mix_lists(self.lists_, request, k, rows, location[rows],
                                       np.ones(len(rows)), time_ordered=False)
        popularity = self.lists_.key[np.maximum(position, 0)] if self.lists_.key.size else np.zeros(items.shape)
        return _candidates(items, popularity, self.name)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_arrays(f"{prefix}geo.npz", {
            "locations": self.locations_.astype(str), "user_location": self.user_location_,
            "column": np.array(self.column_), **_prefixed(self.lists_.arrays(), "lists_"),
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: GeoConfig, name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}geo.npz")
        stage = cls(config, name)
        stage.column_ = str(arrays["column"])
        stage.locations_ = arrays["locations"].astype(str)
        stage.user_location_ = arrays["user_location"].astype(np.int64)
        stage.lists_ = ItemLists.from_arrays(_unprefixed(arrays, "lists_"))
        return stage
