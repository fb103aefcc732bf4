"""Features of (user, candidate item) pairs for the ranking stages.

One :class:`RankingFeatureBuilder` computes features offline (training samples)
and online (requests) through the same :meth:`~RankingFeatureBuilder.transform`,
so the two cannot drift apart (seed 000 Q&A 6, "特征穿越"). Every statistic is read
as of the request time: only events strictly before ``request.time`` count.

Feature families (MISSION_MAP §1): retrieval provenance (channel scores and
ranks), item and user statistics over 1d/7d/30d windows, smoothed rates
(Bayesian mean rating, Bayesian CTR over exposures), item age, user-item
category affinity, and the user and item profile columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.features.processors import bayesian_smoothed_rate, fit_beta_prior
from recfunnel.features.statistics import DAY, EventCounter, counter_from_arrays, counter_to_arrays
from recfunnel.features.vocab import Vocabulary
from recfunnel.types import Candidates, FeatureBatch, RequestBatch


@dataclass(frozen=True)
class RankingFeatureConfig:
    """Which statistics to compute.

    Attributes:
        windows_days: window lengths of the windowed counts (1h, 1d, 7d, 30d by default).
        max_cardinality: categorical columns with more distinct values are not used as raw
            categorical features (they still feed affinities when below ``max_affinity_values``).
        max_affinity_values: largest vocabulary used for user-item affinity features.
        rating_prior_strength: pseudo-count of the Bayesian mean rating.
    """

    windows_days: tuple[float, ...] = (1.0 / 24.0, 1.0, 7.0, 30.0)
    max_cardinality: int = 200
    max_affinity_values: int = 5000
    rating_prior_strength: float = 10.0


def _column_kind(series: pd.Series) -> str:
    """'dense', 'sparse' or 'multi' following the dataset.py convention."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return "dense"
    non_null = series.dropna()
    if len(non_null) and isinstance(non_null.iloc[0], tuple | list):
        return "multi"
    return "sparse"


def _as_lists(series: pd.Series) -> list[tuple[str, ...]]:
    out = []
    for v in series.tolist():
        if isinstance(v, tuple | list):
            out.append(tuple(str(x) for x in v))
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(())
        else:
            out.append((str(v),))
    return out


def _value_matrix(series: pd.Series, vocab: Vocabulary, n_rows: int) -> sp.csr_matrix:
    """(n_rows, |vocab|) row-normalised multi-hot of a (multi-)categorical column."""
    lists = _as_lists(series)
    lengths = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    flat = [x for row in lists for x in row]
    cols = vocab.transform(np.asarray(flat, dtype=object)) if flat else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(lists)), lengths)
    keep = cols >= 2  # drop missing / unknown
    data = np.ones(keep.sum(), np.float32)
    m = sp.csr_matrix((data, (rows[keep], cols[keep])), shape=(n_rows, len(vocab)))
    m.sum_duplicates()
    m.data[:] = 1.0
    row_sum = np.asarray(m.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.maximum(row_sum, 1.0)).dot(m).tocsr().astype(np.float32)


class RankingFeatureBuilder:
    """Builds a :class:`FeatureBatch` for the valid slots of :class:`Candidates`.

    ``fit(data)`` indexes the statistics of ``data``; ``transform`` may be called
    any number of times, for any request time.
    """

    def __init__(self, config: RankingFeatureConfig, channel_names: tuple[str, ...]):
        self.config = config
        self.channel_names = tuple(channel_names)

    # ------------------------------------------------------------------ fit
    def fit(self, data: TrainingData) -> RankingFeatureBuilder:
        inter = data.interactions
        self.n_items_ = data.n_items
        self.n_users_ = data.n_users
        self.item_counter_ = EventCounter(inter.item_index, inter.timestamp, data.n_items)
        self.user_counter_ = EventCounter(inter.user_index, inter.timestamp, data.n_users)
        self.unix_time_ = bool(len(inter) and inter.timestamp.min() > 100_000_000)
        self.has_rating_ = data.raw is not None and "rating" in data.raw.columns
        if self.has_rating_:
            rating = pd.to_numeric(data.raw["rating"], errors="coerce").fillna(0).to_numpy(np.float64)
            self.item_rating_ = EventCounter(inter.item_index, inter.timestamp, data.n_items, rating)
            self.user_rating_ = EventCounter(inter.user_index, inter.timestamp, data.n_users, rating)
            self.rating_mean_ = float(rating.mean())
        self.has_exposures_ = data.exposures is not None and len(data.exposures) > 0
        if self.has_exposures_:
            exp = data.exposures
            self.item_exposure_ = EventCounter(
                np.concatenate([exp.item_index, inter.item_index]),
                np.concatenate([exp.timestamp, inter.timestamp]), data.n_items)
            clicks = np.bincount(inter.item_index, minlength=data.n_items)
            shown = clicks + np.bincount(exp.item_index, minlength=data.n_items)
            self.ctr_prior_ = fit_beta_prior(clicks[shown > 0], shown[shown > 0])
        self._fit_profiles(data)
        return self

    def _fit_profiles(self, data: TrainingData) -> None:
        """Vocabularies of profile columns, built on the training tables only."""
        cfg = self.config
        self.user_dense_: dict[str, np.ndarray] = {}
        self.user_sparse_: dict[str, np.ndarray] = {}
        self.item_dense_: dict[str, np.ndarray] = {}
        self.item_sparse_: dict[str, np.ndarray] = {}
        self.affinity_: dict[str, sp.csr_matrix] = {}
        for source, table, dense, sparse in (
            ("user", data.user_features, self.user_dense_, self.user_sparse_),
            ("item", data.item_features, self.item_dense_, self.item_sparse_),
        ):
            for col in table.columns:
                series = table[col]
                kind = _column_kind(series)
                name = f"{source}_{col}"
                if kind == "dense":
                    dense[name] = pd.to_numeric(series, errors="coerce").to_numpy(np.float32)
                    continue
                lists = _as_lists(series)
                vocab = Vocabulary().fit([v for row in lists for v in row])
                n_values = len(vocab) - 2
                if n_values < 1:
                    continue
                if kind == "sparse" and n_values <= cfg.max_cardinality:
                    dense_codes = vocab.transform(np.asarray([r[0] if r else None for r in lists], dtype=object))
                    sparse[name] = dense_codes.astype(np.int64)
                if source == "item" and n_values <= cfg.max_affinity_values and n_values < 0.5 * len(table):
                    self.affinity_[col] = _value_matrix(series, vocab, len(table))

    # ------------------------------------------------------------ transform
    def transform(self, request: RequestBatch, candidates: Candidates) -> tuple[FeatureBatch, np.ndarray, np.ndarray]:
        """Features of every valid candidate slot.

        Returns:
            (features, rows, cols): N rows of features, and the (N,) batch row and
            candidate column each feature row belongs to.
        """
        rows, cols = np.nonzero(candidates.valid)
        items = candidates.item_index[rows, cols]
        users = request.user_index[rows]
        t = request.time[rows]
        dense: dict[str, np.ndarray] = {}
        sparse: dict[str, np.ndarray] = {}

        # retrieval provenance: which channels found the item, their scores and ranks
        dense["retrieval_score"] = candidates.score[rows, cols].astype(np.float32)
        found = np.zeros(len(rows), np.float32)
        for ch in self.channel_names:
            score = candidates.channel_scores.get(ch)
            if score is None:
                dense[f"{ch}_score"] = np.full(len(rows), np.nan, np.float32)
                dense[f"{ch}_rank"] = np.full(len(rows), np.nan, np.float32)
                continue
            s = np.where(np.isnan(score), -np.inf, score)
            rank = np.argsort(np.argsort(-s, axis=1, kind="stable"), axis=1).astype(np.float32)
            rank[np.isnan(score)] = np.nan
            dense[f"{ch}_score"] = score[rows, cols].astype(np.float32)
            dense[f"{ch}_rank"] = rank[rows, cols]
            found += ~np.isnan(score[rows, cols])
        dense["n_channels"] = found

        # item statistics as of the request time, and as of the user's last activity
        last_user_time = np.where(request.history[:, 0] >= 0, request.history_time[:, 0] + 1, request.time)[rows]
        last_user_time = np.minimum(last_user_time, t)
        dense["item_count"] = self.item_counter_.count(items, t, None).astype(np.float32)
        for w in self.config.windows_days:
            span = int(round(w * DAY))
            label = f"{span // 3600}h" if span < DAY else f"{w:g}d"
            dense[f"item_count_{label}"] = self.item_counter_.count(items, t, span).astype(np.float32)
            dense[f"item_count_{label}_at_user_last"] = self.item_counter_.count(items, last_user_time, span).astype(np.float32)
            dense[f"user_count_{label}"] = self.user_counter_.count(users, t, span).astype(np.float32)
        dense["user_count"] = self.user_counter_.count(users, t, None).astype(np.float32)
        dense["item_age_days"] = self._age(self.item_counter_.first_time_, items, t)
        last_item = self.item_counter_.last_before(items, t)
        dense["item_since_last_days"] = np.where(
            last_item > np.iinfo(np.int64).min, (t - last_item) / DAY, np.nan).astype(np.float32)
        dense["user_since_last_days"] = np.where(
            request.history[rows, 0] >= 0, (t - request.history_time[rows, 0]) / DAY, np.nan).astype(np.float32)
        dense["user_gap_to_user_last_days"] = ((t - last_user_time) / DAY).astype(np.float32)

        if self.has_rating_:
            prior = self.config.rating_prior_strength
            for key, counter, rating in (("item", self.item_counter_, self.item_rating_),
                                         ("user", self.user_counter_, self.user_rating_)):
                ids = items if key == "item" else users
                n = counter.count(ids, t, None)
                total = rating.count(ids, t, None)
                dense[f"{key}_rating_mean"] = ((total + prior * self.rating_mean_) / (n + prior)).astype(np.float32)
        if self.has_exposures_:
            shown = self.item_exposure_.count(items, t, None)
            clicks = dense["item_count"].astype(np.float64)
            dense["item_exposures"] = shown.astype(np.float32)
            dense["item_ctr_smoothed"] = bayesian_smoothed_rate(clicks, shown, *self.ctr_prior_).astype(np.float32)

        # user-item affinity: share of the user's recent history in the item's categories
        if self.affinity_:
            hist = request.history
            hrows, hcols = np.nonzero((hist >= 0) & (hist < self.n_items_))  # items published after the fit: no profile
            h = sp.csr_matrix((np.ones(len(hrows), np.float32), (hrows, hist[hrows, hcols])),
                              shape=(len(request), self.n_items_))
            h = sp.diags(1.0 / np.maximum(np.asarray(h.sum(axis=1)).ravel(), 1.0)).dot(h).tocsr()
            known = (items >= 0) & (items < self.n_items_)  # items published after the fit have no profile yet
            safe_items = np.where(known, items, 0)
            for col, m in self.affinity_.items():
                profile = (h @ m).tocsr()
                value = np.asarray(profile[rows].multiply(m[safe_items]).sum(axis=1)).ravel()
                dense[f"affinity_{col}"] = np.where(known, value, np.nan).astype(np.float32)

        for name, values in self.user_dense_.items():
            dense[name] = self._gather(values, users, np.nan)
        for name, values in self.item_dense_.items():
            dense[name] = self._gather(values, items, np.nan)
        for name, values in self.user_sparse_.items():
            sparse[name] = self._gather(values, users, 1).astype(np.int64)
        for name, values in self.item_sparse_.items():
            sparse[name] = self._gather(values, items, 1).astype(np.int64)
        if self.unix_time_:
            dense["hour"] = ((t // 3600) % 24).astype(np.float32)
            dense["weekday"] = ((t // DAY + 4) % 7).astype(np.float32)  # 1970-01-01 was a Thursday
        return FeatureBatch(dense=dense, sparse=sparse), rows, cols

    @staticmethod
    def _gather(values: np.ndarray, index: np.ndarray, fill: float) -> np.ndarray:
        """values[index] with ``fill`` for unknown (-1) or out-of-range indices (new users/items)."""
        ok = (index >= 0) & (index < len(values))
        out = np.full(len(index), fill, dtype=np.float32 if values.dtype.kind == "f" else values.dtype)
        out[ok] = values[index[ok]]
        return out

    @staticmethod
    def _age(first_time: np.ndarray, index: np.ndarray, t: np.ndarray) -> np.ndarray:
        ok = (index >= 0) & (index < len(first_time))
        first = np.full(len(index), np.iinfo(np.int64).max, np.int64)
        first[ok] = first_time[index[ok]]
        seen = first < t
        return np.where(seen, (t - np.where(seen, first, 0)) / DAY, np.nan).astype(np.float32)

    @property
    def sparse_names(self) -> list[str]:
        return list(self.user_sparse_) + list(self.item_sparse_)

    # ---------------------------------------------------------- persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        arrays.update(counter_to_arrays(self.item_counter_, "item_counter."))
        arrays.update(counter_to_arrays(self.user_counter_, "user_counter."))
        if self.has_rating_:
            arrays.update(counter_to_arrays(self.item_rating_, "item_rating."))
            arrays.update(counter_to_arrays(self.user_rating_, "user_rating."))
        if self.has_exposures_:
            arrays.update(counter_to_arrays(self.item_exposure_, "item_exposure."))
        for group, values in (("user_dense", self.user_dense_), ("user_sparse", self.user_sparse_),
                              ("item_dense", self.item_dense_), ("item_sparse", self.item_sparse_)):
            for name, arr in values.items():
                arrays[f"{group}:{name}"] = arr
        for col, m in self.affinity_.items():
            arrays[f"affinity:{col}:data"] = m.data
            arrays[f"affinity:{col}:indices"] = m.indices
            arrays[f"affinity:{col}:indptr"] = m.indptr
            arrays[f"affinity:{col}:shape"] = np.array(m.shape, np.int64)
        return arrays

    def meta(self) -> dict:
        return {
            "n_items": self.n_items_, "n_users": self.n_users_, "unix_time": self.unix_time_,
            "has_rating": self.has_rating_, "rating_mean": getattr(self, "rating_mean_", None),
            "has_exposures": self.has_exposures_,
            "ctr_prior": list(getattr(self, "ctr_prior_", ())),
            "affinity_columns": list(self.affinity_),
        }

    @classmethod
    def from_arrays(cls, config: RankingFeatureConfig, channel_names: tuple[str, ...],
                    arrays: dict[str, np.ndarray], meta: dict) -> RankingFeatureBuilder:
        b = cls(config, channel_names)
        b.n_items_, b.n_users_, b.unix_time_ = meta["n_items"], meta["n_users"], meta["unix_time"]
        b.item_counter_ = counter_from_arrays(arrays, "item_counter.")
        b.user_counter_ = counter_from_arrays(arrays, "user_counter.")
        b.has_rating_ = meta["has_rating"]
        if b.has_rating_:
            b.item_rating_ = counter_from_arrays(arrays, "item_rating.")
            b.user_rating_ = counter_from_arrays(arrays, "user_rating.")
            b.rating_mean_ = meta["rating_mean"]
        b.has_exposures_ = meta["has_exposures"]
        if b.has_exposures_:
            b.item_exposure_ = counter_from_arrays(arrays, "item_exposure.")
            b.ctr_prior_ = tuple(meta["ctr_prior"])
        b.user_dense_, b.user_sparse_, b.item_dense_, b.item_sparse_ = {}, {}, {}, {}
        for key, arr in arrays.items():
            group, _, name = key.partition(":")
            if group in ("user_dense", "user_sparse", "item_dense", "item_sparse"):
                getattr(b, f"{group}_")[name] = arr
        b.affinity_ = {}
        for col in meta["affinity_columns"]:
            b.affinity_[col] = sp.csr_matrix(
                (arrays[f"affinity:{col}:data"], arrays[f"affinity:{col}:indices"], arrays[f"affinity:{col}:indptr"]),
                shape=tuple(arrays[f"affinity:{col}:shape"]))
        return b
