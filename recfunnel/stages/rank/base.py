"""What every learned ranker over the ranking features shares.

LightGBM, XGBoost, GBDT+LR and the neural rankers all score the features of
:class:`~recfunnel.features.ranking.RankingFeatureBuilder`, re-index its
statistics on newer data without touching the model (``fit``), and rank by their
scores. They differ only in how a batch of feature rows becomes scores
(:meth:`FeatureRanker._score_rows`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Self

import numpy as np

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import RecfunnelError
from recfunnel.features.overlay import overlay_feature_builder
from recfunnel.features.ranking import RankingFeatureBuilder
from recfunnel.stages.base import Ranker, StatisticsOverlay
from recfunnel.stages.rank.samples import RankerSamples, build_ranker_samples
from recfunnel.types import Candidates, FeatureBatch, RequestBatch


class FeatureRanker(Ranker):
    """Base of the rankers over ranking features (configs carry ``features``)."""

    def fit(self, data: TrainingData) -> Self:
        """Index the statistics of ``data`` (the model itself is learned by :meth:`fit_candidates`)."""
        channels = getattr(self, "channel_names_", ())
        self.features_ = RankingFeatureBuilder(self.config.features, channels).fit(data)
        return self

    def _fitted_builder(self) -> RankingFeatureBuilder | None:
        """The builder of the fit (under an overlay, the one it overlays)."""
        builder = getattr(self, "features_", None)
        return getattr(builder, "fitted_", builder)

    def use_statistics(self, overlay: StatisticsOverlay | None) -> bool:
        """Score with the fitted statistics plus ``overlay``'s counts (see :meth:`Ranker.use_statistics`).

        ``features_`` becomes a :class:`~recfunnel.features.overlay.NearlineFeatureBuilder`
        over the fitted builder (which it saves), or the fitted builder again for None.
        """
        fitted = self._fitted_builder()
        if fitted is None:
            return False
        if overlay is None:
            self.features_ = fitted
            return True
        self.features_ = overlay_feature_builder(fitted, {
            "item_counter_": overlay.positives_by_item,
            "user_counter_": overlay.positives_by_user,
            "item_exposure_": overlay.exposures_by_item,
            "item_rating_": overlay.values_by_item,
            "user_rating_": overlay.values_by_user,
        })
        return True

    def statistics_time(self) -> int | None:
        """The newest exposure the fitted statistics hold (None without exposures)."""
        exposure = getattr(self._fitted_builder(), "item_exposure_", None)
        if exposure is None or not len(exposure.combined_):
            return None
        return int(exposure.t_max)

    def _fit_builder(self, data: TrainingData, candidates: Candidates) -> RankingFeatureBuilder:
        """The feature builder of training: channel provenance columns from ``candidates``."""
        self.channel_names_ = tuple(sorted(candidates.channel_scores))
        return RankingFeatureBuilder(self.config.features, self.channel_names_).fit(data)

    def _training_samples(self, data: TrainingData, request: RequestBatch, candidates: Candidates,
                          labels: np.ndarray) -> tuple[RankingFeatureBuilder, RankerSamples, np.random.Generator]:
        """The builder, the sampled feature rows (:func:`build_ranker_samples`) and the seeded generator
        the rest of training goes on drawing from (configs carry ``seed``, ``negatives_per_user``,
        ``max_train_users``)."""
        cfg = self.config
        builder = self._fit_builder(data, candidates)
        rng = np.random.default_rng(cfg.seed)
        samples = build_ranker_samples(builder, request, candidates, labels, cfg.negatives_per_user,
                                       cfg.max_train_users, rng)
        return builder, samples, rng

    @abstractmethod
    def _score_rows(self, request: RequestBatch, candidates: Candidates, features: FeatureBatch,
                    rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N,) scores of the N feature rows (candidate slot ``(rows[i], cols[i])``)."""

    def score(self, request: RequestBatch, candidates: Candidates) -> np.ndarray:
        """(B, C) float32 model scores, -inf at padding."""
        out = np.full(candidates.item_index.shape, -np.inf, np.float32)
        if not candidates.valid.any():
            return out
        features, rows, cols = self.features_.transform(request, candidates)
        expected = getattr(self, "feature_names_", None)
        if expected is not None and features.names != list(expected):
            raise RecfunnelError("ranking features differ from the ones the model was trained on")
        out[rows, cols] = self._score_rows(request, candidates, features, rows, cols)
        return out

    def rank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        return candidates.with_scores(self.score(request, candidates), "rank", k)


__all__ = ["FeatureRanker"]
