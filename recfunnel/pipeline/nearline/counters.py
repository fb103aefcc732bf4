"""Nearline event counters that add to the ranker's fitted statistics at serving time.

The ranker's statistics features (:class:`~recfunnel.features.ranking.RankingFeatureBuilder`)
read :class:`~recfunnel.features.statistics.EventCounter` s indexed at fit time.
Nearline events must count in them within a second, without a refit, and with
the same no-leakage rule (only events strictly before the request time). Here:

* :class:`GrowingCounter` indexes events as they arrive: a log-structured list of
  small sorted :class:`EventCounter` segments, each older segment more than twice
  the size of the next, so a batch of ``n`` events costs ``O(n log N)`` amortised
  and a query ``O(log N)`` segments (``N`` events in all).
* :class:`CounterOverlay` answers like an ``EventCounter``: the fitted counter's
  answer plus the growing one's (``count``, ``last_before``, ``first_time_``), for
  keys the fitted counter never saw too (items published after the fit).
* :func:`overlay_feature_builder` returns a copy of a fitted builder whose counters
  are overlays; the ranker scores with it, so ``transform`` (the code that computed
  the training features) computes the serving features.

>>> base = EventCounter(np.array([0, 1]), np.array([10, 20]), n_keys=2)
>>> extra = GrowingCounter()
>>> extra.add(np.array([0, 2]), np.array([30, 30]))
>>> c = CounterOverlay(base, extra)
>>> c.count(np.array([0, 0, 2]), np.array([30, 31, 31]), window=None).tolist()
[1.0, 2.0, 1.0]
>>> c.first_time_.tolist(), c.last_before(np.array([0]), np.array([31])).tolist()
([10, 20, 30], [30])
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recfunnel.features.ranking import RankingFeatureBuilder
from recfunnel.features.statistics import EventCounter
from recfunnel.types import Candidates, FeatureBatch, RequestBatch

_NEVER_FIRST = np.iinfo(np.int64).max
_NEVER_LAST = np.iinfo(np.int64).min


@dataclass(frozen=True)
class _Segment:
    keys: np.ndarray
    times: np.ndarray
    weights: np.ndarray
    counter: EventCounter

    @classmethod
    def build(cls, keys: np.ndarray, times: np.ndarray, weights: np.ndarray) -> _Segment:
        n_keys = int(keys.max(initial=-1)) + 1
        return cls(keys, times, weights, EventCounter(keys, times, n_keys, weights))

    def __len__(self) -> int:
        return len(self.keys)


class GrowingCounter:
    """Windowed counts of events added over time (same answers as one ``EventCounter`` of them all).

    Thread-safe: :meth:`add` swaps in a new tuple of segments, readers use the tuple
    they read first.
    """

    def __init__(self) -> None:
        self._segments: tuple[_Segment, ...] = ()
        self._lock = threading.Lock()
        self.first_time_ = np.zeros(0, np.int64)
        self.last_time_ = np.zeros(0, np.int64)
        self.total_ = np.zeros(0, np.float64)
        self.version = 0

    @property
    def n_keys(self) -> int:
        return len(self.first_time_)

    def __len__(self) -> int:
        return sum(len(s) for s in self._segments)

    def add(self, keys: np.ndarray, times: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Index events ``(keys >= 0, times, weights)``; negative keys are dropped."""
        keys = np.asarray(keys, np.int64).ravel()
        times = np.asarray(times, np.int64).ravel()
        w = np.ones(len(keys)) if weights is None else np.asarray(weights, np.float64).ravel()
        ok = keys >= 0
        keys, times, w = keys[ok], times[ok], w[ok]
        if len(keys) == 0:
            return
        with self._lock:
            size = int(keys.max()) + 1
            first, last, total = self.first_time_, self.last_time_, self.total_
            if size > len(first):  # new arrays: readers keep the old ones
                grow = size - len(first)
                first = np.concatenate([first, np.full(grow, _NEVER_FIRST, np.int64)])
                last = np.concatenate([last, np.full(grow, _NEVER_LAST, np.int64)])
                total = np.concatenate([total, np.zeros(grow)])
            else:
                first, last, total = first.copy(), last.copy(), total.copy()
            np.minimum.at(first, keys, times)
            np.maximum.at(last, keys, times)
            np.add.at(total, keys, w)
            segments = list(self._segments)
            new = (keys, times, w)
            # log-structured merge: keep every segment more than twice the size of the next
            while segments and len(segments[-1]) <= 2 * len(new[0]):
                old = segments.pop()
                new = (np.concatenate([old.keys, new[0]]), np.concatenate([old.times, new[1]]),
                       np.concatenate([old.weights, new[2]]))
            segments.append(_Segment.build(*new))
            self.first_time_, self.last_time_, self.total_ = first, last, total
            self._segments = tuple(segments)
            self.version += 1

    def count(self, keys: np.ndarray, times: np.ndarray, window: int | None) -> np.ndarray:
        """(Q,) float64 weight of events of ``keys`` with ``times - window <= t < times``."""
        keys = np.asarray(keys, np.int64)
        out = np.zeros(keys.shape, np.float64)
        for seg in self._segments:
            out += seg.counter.count(keys, times, window)
        return out

    def last_before(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(Q,) int64 time of the key's latest event strictly before ``times``; int64 min when none."""
        keys = np.asarray(keys, np.int64)
        out = np.full(keys.shape, _NEVER_LAST, np.int64)
        for seg in self._segments:
            out = np.maximum(out, seg.counter.last_before(keys, times))
        return out

    def totals(self, keys: np.ndarray) -> np.ndarray:
        """(Q,) float64 weight of all events of ``keys`` (any time)."""
        keys = np.asarray(keys, np.int64)
        total = self.total_
        ok = (keys >= 0) & (keys < len(total))
        out = np.zeros(keys.shape, np.float64)
        out[ok] = total[keys[ok]]
        return out


class CounterOverlay:
    """A fitted :class:`EventCounter` plus a :class:`GrowingCounter`, queried as one counter."""

    def __init__(self, base: EventCounter, extra: GrowingCounter):
        self.base = base
        self.extra = extra
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    @property
    def n_keys(self) -> int:
        return max(self.base.n_keys, self.extra.n_keys)

    def _times(self) -> tuple[np.ndarray, np.ndarray]:
        cache = self._cache
        version = self.extra.version
        if cache is None or cache[0] != version:
            n = self.n_keys
            first = np.full(n, _NEVER_FIRST, np.int64)
            last = np.full(n, _NEVER_LAST, np.int64)
            nb = len(self.base.first_time_)
            first[:nb], last[:nb] = self.base.first_time_, self.base.last_time_
            ef, el = self.extra.first_time_, self.extra.last_time_
            first[:len(ef)] = np.minimum(first[:len(ef)], ef)
            last[:len(el)] = np.maximum(last[:len(el)], el)
            cache = (version, first, last)
            self._cache = cache
        return cache[1], cache[2]

    @property
    def first_time_(self) -> np.ndarray:
        """(n_keys,) int64 time of each key's first event (fitted or nearline)."""
        return self._times()[0]

    @property
    def last_time_(self) -> np.ndarray:
        return self._times()[1]

    def count(self, keys: np.ndarray, times: np.ndarray, window: int | None) -> np.ndarray:
        return self.base.count(keys, times, window) + self.extra.count(keys, times, window)

    def last_before(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        return np.maximum(self.base.last_before(keys, times), self.extra.last_before(keys, times))


#: the builder's counters that nearline events feed, and what feeds them
COUNTER_ATTRIBUTES = {
    "item_counter_": "positives by item",
    "user_counter_": "positives by user",
    "item_exposure_": "positives and impressions by item (only when the model saw exposures)",
    "item_rating_": "positive values by item (only when the model saw ratings)",
    "user_rating_": "positive values by user (only when the model saw ratings)",
}


class NearlineFeatureBuilder(RankingFeatureBuilder):
    """A fitted builder whose counters are :class:`CounterOverlay` s (made by :func:`overlay_feature_builder`).

    ``transform`` is the fitted builder's own; ``to_arrays`` saves the fitted
    statistics (nearline events belong to the event log, not to the model).
    """

    fitted_: RankingFeatureBuilder

    def transform(self, request: RequestBatch, candidates: Candidates) -> tuple[FeatureBatch, np.ndarray, np.ndarray]:
        """The fitted builder's features, with histories that hold items published after the fit.

        The user-item affinity profiles are indexed by the fitted catalogue; an item
        published later has no profile row yet. The builder then sees a catalogue
        padded with empty rows (such a history item adds nothing to the profile but
        counts in its normalisation), and the affinities of new candidate items stay
        missing (NaN) as for any item the fit did not know.
        """
        n_fitted = int(self.fitted_.n_items_)
        top = int(request.history.max(initial=-1)) + 1
        if not self.affinity_ or top <= n_fitted:
            return super().transform(request, candidates)
        view = copy.copy(self)
        view.n_items_ = top
        view.affinity_ = {col: self._padded(col, m, top) for col, m in self.affinity_.items()}
        features, rows, cols = RankingFeatureBuilder.transform(view, request, candidates)
        new = candidates.item_index[rows, cols] >= n_fitted
        if new.any():
            dense = dict(features.dense)
            for col in self.affinity_:
                dense[f"affinity_{col}"] = np.where(new, np.nan, dense[f"affinity_{col}"]).astype(np.float32)
            features = FeatureBatch(dense=dense, sparse=features.sparse, sequences=features.sequences)
        return features, rows, cols

    def _padded(self, col: str, m: sp.csr_matrix, n: int) -> sp.csr_matrix:
        cache = self.__dict__.setdefault("_padded_cache", {})
        hit = cache.get(col)
        if hit is None or hit.shape[0] < n:
            size = max(n, 2 * m.shape[0])  # doubling: new items rarely cost a copy
            hit = sp.vstack([m, sp.csr_matrix((size - m.shape[0], m.shape[1]), dtype=m.dtype)], format="csr")
            cache[col] = hit
        return hit[:n] if hit.shape[0] > n else hit

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.fitted_.to_arrays()


def overlay_feature_builder(builder: RankingFeatureBuilder,
                            counters: dict[str, GrowingCounter]) -> NearlineFeatureBuilder:
    """A copy of ``builder`` whose counters named in ``counters`` add the nearline events.

    ``builder`` itself is not modified. A builder that is already an overlay is
    re-overlaid from its fitted original.
    """
    fitted = builder.fitted_ if isinstance(builder, NearlineFeatureBuilder) else builder
    out = NearlineFeatureBuilder.__new__(NearlineFeatureBuilder)
    out.__dict__.update(fitted.__dict__)
    out.fitted_ = fitted
    for name, extra in counters.items():
        base = getattr(fitted, name, None)
        if base is not None:
            setattr(out, name, CounterOverlay(base, extra))
    return out
