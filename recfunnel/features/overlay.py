"""Fitted ranking statistics plus the counts of events that arrived after the fit.

A ranker's statistics features (:class:`~recfunnel.features.ranking.RankingFeatureBuilder`)
read :class:`~recfunnel.features.statistics.EventCounter` s indexed at fit time. A
ranker given a :class:`~recfunnel.stages.base.StatisticsOverlay`
(:meth:`~recfunnel.stages.base.Ranker.use_statistics`) scores with
:func:`overlay_feature_builder`: a copy of its fitted builder whose counters are
:class:`CounterOverlay` s, so ``transform`` (the code that computed the training
features) computes the serving features over the fitted and the growing counts.

* :class:`CounterOverlay` answers like an ``EventCounter``: the fitted counter's
  answer plus the growing one's (``count``, ``last_before``, ``first_time_``), for
  keys the fitted counter never saw too (items published after the fit).

>>> from recfunnel.pipeline.nearline.counters import GrowingCounter
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
from typing import Any

import numpy as np
import scipy.sparse as sp

from recfunnel.features.ranking import RankingFeatureBuilder
from recfunnel.features.statistics import EventCounter
from recfunnel.types import Candidates, FeatureBatch, RequestBatch

_NEVER_FIRST = np.iinfo(np.int64).max
_NEVER_LAST = np.iinfo(np.int64).min


class CounterOverlay:
    """A fitted :class:`EventCounter` plus a growing counter (``GrowingCounter``), queried as one counter."""

    def __init__(self, base: EventCounter, extra: Any):
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
                            counters: dict[str, Any]) -> NearlineFeatureBuilder:
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
