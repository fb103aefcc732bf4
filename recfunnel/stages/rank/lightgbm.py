"""Point-wise LightGBM ranker over retrieval candidates.

Training samples are the funnel's own candidates (seed 000 §2, 003 §6): a
user's held-out items among them are positives, the other candidates are
hard negatives from the same distribution the ranker will see when serving.
The sampling is shared with the other learned rankers (:mod:`recfunnel.stages.rank.samples`).

Hyper-parameters found by :func:`recfunnel.training.grid_search.grid_search` with
``lightgbm.LGBMClassifier`` carry over through
:func:`recfunnel.training.grid_search.ranker_config_with`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Self

import lightgbm as lgb
import numpy as np

from recfunnel.data.dataset import TrainingData
from recfunnel.features.ranking import RankingFeatureBuilder, RankingFeatureConfig
from recfunnel.stages.rank.base import FeatureRanker
from recfunnel.stages.rank.samples import query_sizes, validation_row_mask
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import Candidates, FeatureBatch, RequestBatch


@dataclass(frozen=True)
class LightGBMRankerConfig:
    """Hyper-parameters of :class:`LightGBMRanker` (LightGBM's names where they exist)."""

    objective: Literal["binary", "lambdarank"] = "binary"
    n_estimators: int = 400
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 40
    validation_fraction: float = 0.15
    negatives_per_user: int = 150
    max_train_users: int = 20_000
    num_threads: int = 0
    seed: int = 0
    features: RankingFeatureConfig = field(default_factory=RankingFeatureConfig)


class LightGBMRanker(FeatureRanker):
    """LightGBM scoring of (user, candidate) features; see :mod:`recfunnel.features.ranking`."""

    kind = "lightgbm"

    def __init__(self, config: LightGBMRankerConfig | None = None, name: str | None = None):
        super().__init__(config or LightGBMRankerConfig(), name or "rank")

    def fit_candidates(self, data: TrainingData, request: RequestBatch, candidates: Candidates,
                       labels: np.ndarray, *, progress: bool = False) -> Self:
        """Learn the model from labelled candidates.

        Args:
            data: the training data as of the requests (statistics are indexed from it).
            request: (B users) the requests the candidates were retrieved for.
            candidates: (B, C) retrieval output.
            labels: (B, C) bool, true where the candidate is one of the user's held-out items.
        """
        cfg = self.config
        builder, samples, rng = self._training_samples(data, request, candidates, labels)
        x, y, rows = samples.x, samples.y, samples.rows
        self.feature_names_ = samples.feature_names
        categorical = samples.categorical
        vmask = validation_row_mask(rows, y, len(labels), cfg.validation_fraction, rng)
        params = {
            "objective": cfg.objective, "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
            "min_child_samples": cfg.min_child_samples, "feature_fraction": cfg.feature_fraction,
            "bagging_fraction": cfg.bagging_fraction, "bagging_freq": 1, "lambda_l2": cfg.lambda_l2,
            "seed": cfg.seed, "deterministic": True, "force_row_wise": True, "verbosity": -1,
            "num_threads": cfg.num_threads, "metric": "auc" if cfg.objective == "binary" else "ndcg",
        }
        if cfg.objective == "lambdarank":
            params["eval_at"] = [10]

        def dataset(mask: np.ndarray, reference=None) -> lgb.Dataset:
            group = None
            if cfg.objective == "lambdarank":
                group = query_sizes(rows[mask])
            return lgb.Dataset(x[mask], y[mask], group=group, feature_name=self.feature_names_,
                               categorical_feature=categorical, reference=reference, free_raw_data=True)

        train_set = dataset(~vmask)
        callbacks = []
        valid_sets = []
        if vmask.any():
            valid_sets = [dataset(vmask, train_set)]
            callbacks.append(lgb.early_stopping(cfg.early_stopping_rounds, verbose=False))
        self.booster_ = lgb.train(params, train_set, num_boost_round=cfg.n_estimators,
                                  valid_sets=valid_sets, callbacks=callbacks)
        self.train_summary_ = {
            "rows": int(len(y)), "positives": int(y.sum()), "users": int(len(np.unique(rows))),
            "best_iteration": int(self.booster_.best_iteration or self.booster_.current_iteration()),
            "validation_auc": float(self.booster_.best_score["valid_0"]["auc"])
            if valid_sets and cfg.objective == "binary" else None,
        }
        self.features_ = builder
        return self

    def _score_rows(self, request: RequestBatch, candidates: Candidates, features: FeatureBatch,
                    rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.booster_.predict(features.to_matrix(), num_iteration=self.booster_.best_iteration or None)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_text(f"{prefix}model.txt", self.booster_.model_to_string())
        writer.write_arrays(f"{prefix}features.npz", self.features_.to_arrays())
        writer.write_json(f"{prefix}meta.json", {
            "feature_names": self.feature_names_, "channel_names": list(self.channel_names_),
            "builder": self.features_.meta(), "train_summary": self.train_summary_,
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: LightGBMRankerConfig, name: str | None = None) -> Self:
        ranker = cls(config, name)
        meta = reader.read_json(f"{prefix}meta.json")
        ranker.channel_names_ = tuple(meta["channel_names"])
        ranker.feature_names_ = list(meta["feature_names"])
        ranker.train_summary_ = meta["train_summary"]
        ranker.booster_ = lgb.Booster(model_str=reader.read_text(f"{prefix}model.txt"))
        ranker.features_ = RankingFeatureBuilder.from_arrays(
            config.features, ranker.channel_names_, reader.read_arrays(f"{prefix}features.npz"), meta["builder"])
        return ranker
