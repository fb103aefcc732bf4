"""XGBoost ranker over retrieval candidates (seed 000 §3: "可以优先尝试LR，XgBoost").

The same contract and samples as :class:`~recfunnel.stages.rank.lightgbm.LightGBMRanker`
(:mod:`recfunnel.stages.rank.samples`): a user's held-out items among the
funnel's own candidates are positives, the user's other candidates hard
negatives. Objectives: point-wise ``binary:logistic``, or pair-wise / list-wise
``rank:pairwise`` / ``rank:ndcg`` with each user as one query (``qid``).
Trees are grown with the ``hist`` method; profile columns are native categorical
splits. Early stopping watches a validation split of whole users. The booster is
saved as XGBoost's JSON model text (never pickle).

Hyper-parameters found by :func:`recfunnel.training.grid_search.grid_search`
with ``xgboost.XGBClassifier`` carry over by name
(:func:`recfunnel.training.grid_search.ranker_config_with`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Self

import numpy as np
import xgboost as xgb

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ArtifactError, RecfunnelError
from recfunnel.features.ranking import RankingFeatureBuilder, RankingFeatureConfig
from recfunnel.stages.rank.base import FeatureRanker
from recfunnel.stages.rank.samples import (
    check_param,
    check_sampling_params,
    validation_row_mask,
)
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import Candidates, FeatureBatch, RequestBatch

OBJECTIVES = ("binary:logistic", "rank:pairwise", "rank:ndcg")


@dataclass(frozen=True)
class XGBoostRankerConfig:
    """Hyper-parameters of :class:`XGBoostRanker` (XGBoost's scikit-learn names).

    Attributes:
        objective: ``binary:logistic`` (point-wise), ``rank:pairwise`` or ``rank:ndcg``
            (each user's candidates form one query).
        n_estimators: boosting rounds at most (early stopping may use fewer).
        learning_rate: shrinkage (``eta``).
        max_depth: depth of each tree.
        min_child_weight: smallest hessian sum of a leaf.
        subsample / colsample_bytree: row and column sampling per tree.
        reg_lambda: L2 penalty on leaf weights (``lambda``).
        max_bin: histogram bins per feature (``hist`` tree method).
        ndcg_at: cut-off of the NDCG that early-stops the ranking objectives.
        early_stopping_rounds: rounds without validation improvement before stopping (0 = off).
        validation_fraction: share of users held out for early stopping.
        negatives_per_user / max_train_users: the sample (see :mod:`recfunnel.stages.rank.samples`).
        nthread: threads of training and scoring (0 = XGBoost's default, all cores).
        seed: seed of the sampling, the validation split and XGBoost's row/column sampling.
        features: the ranking features.
    """

    objective: Literal["binary:logistic", "rank:pairwise", "rank:ndcg"] = "binary:logistic"
    n_estimators: int = 400
    learning_rate: float = 0.05
    max_depth: int = 6
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    max_bin: int = 256
    ndcg_at: int = 10
    early_stopping_rounds: int = 40
    validation_fraction: float = 0.15
    negatives_per_user: int = 150
    max_train_users: int = 20_000
    nthread: int = 0
    seed: int = 0
    features: RankingFeatureConfig = field(default_factory=RankingFeatureConfig)

    def __post_init__(self) -> None:
        kind = "xgboost"
        check_param(kind, self.objective in OBJECTIVES,
                    f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        check_param(kind, self.n_estimators >= 1, f"n_estimators must be >= 1, got {self.n_estimators}")
        check_param(kind, self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check_param(kind, self.max_depth >= 1, f"max_depth must be >= 1, got {self.max_depth}")
        check_param(kind, self.min_child_weight >= 0, f"min_child_weight must be >= 0, got {self.min_child_weight}")
        check_param(kind, 0 < self.subsample <= 1, f"subsample must be in (0, 1], got {self.subsample}")
        check_param(kind, 0 < self.colsample_bytree <= 1,
                    f"colsample_bytree must be in (0, 1], got {self.colsample_bytree}")
        check_param(kind, self.reg_lambda >= 0, f"reg_lambda must be >= 0, got {self.reg_lambda}")
        check_param(kind, self.max_bin >= 2, f"max_bin must be >= 2, got {self.max_bin}")
        check_param(kind, self.ndcg_at >= 1, f"ndcg_at must be >= 1, got {self.ndcg_at}")
        check_param(kind, self.early_stopping_rounds >= 0,
                    f"early_stopping_rounds must be >= 0 (0 = off), got {self.early_stopping_rounds}")
        check_param(kind, self.nthread >= 0, f"nthread must be >= 0 (0 = all cores), got {self.nthread}")
        check_sampling_params(kind, self.negatives_per_user, self.max_train_users, self.validation_fraction)

    @property
    def is_ranking(self) -> bool:
        """True for the objectives that need each user's candidates as one query."""
        return self.objective.startswith("rank:")

    def booster_params(self) -> dict:
        """The parameters of ``xgboost.train``."""
        params = {
            "objective": self.objective, "tree_method": "hist", "eta": self.learning_rate,
            "max_depth": self.max_depth, "min_child_weight": self.min_child_weight,
            "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda, "max_bin": self.max_bin, "seed": self.seed,
            "eval_metric": f"ndcg@{self.ndcg_at}" if self.is_ranking else "auc", "verbosity": 0,
        }
        if self.nthread:
            params["nthread"] = self.nthread
        return params


class XGBoostRanker(FeatureRanker):
    """XGBoost scoring of (user, candidate) features; see :mod:`recfunnel.features.ranking`.

    Scores are probabilities for ``binary:logistic`` and ranking margins otherwise.
    """

    kind = "xgboost"

    def __init__(self, config: XGBoostRankerConfig | None = None, name: str | None = None):
        super().__init__(config or XGBoostRankerConfig(), name or "rank")

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
        self.feature_names_ = samples.feature_names
        self.feature_types_ = samples.feature_types
        x, y, rows = samples.x, samples.y, samples.rows
        vmask = validation_row_mask(rows, y, len(labels), cfg.validation_fraction, rng)

        def dmatrix(mask: np.ndarray) -> xgb.DMatrix:
            # rows are sorted by user, as qid requires
            return xgb.DMatrix(x[mask], y[mask], qid=rows[mask] if cfg.is_ranking else None,
                               feature_types=self.feature_types_, enable_categorical=True,
                               missing=np.nan, nthread=cfg.nthread or -1)

        train_set = dmatrix(~vmask)
        stopping = bool(vmask.any()) and cfg.early_stopping_rounds > 0
        evals = [(dmatrix(vmask), "valid")] if stopping else []
        booster = xgb.train(cfg.booster_params(), train_set, num_boost_round=cfg.n_estimators, evals=evals,
                            early_stopping_rounds=cfg.early_stopping_rounds if stopping else None,
                            verbose_eval=False)
        best = booster.best_iteration if stopping else booster.num_boosted_rounds() - 1
        # keep only the rounds up to the best one: the saved model is exactly what scores
        self.booster_ = booster[: best + 1]
        self.train_summary_ = {
            "rows": int(len(y)), "positives": int(y.sum()), "users": int(len(np.unique(rows))),
            "best_iteration": int(best), "rounds": int(self.booster_.num_boosted_rounds()),
            "validation_metric": cfg.booster_params()["eval_metric"] if stopping else None,
            "validation_score": float(booster.best_score) if stopping else None,
        }
        self.features_ = builder
        return self

    def _score_rows(self, request: RequestBatch, candidates: Candidates, features: FeatureBatch,
                    rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        matrix = xgb.DMatrix(features.to_matrix(), feature_types=self.feature_types_, enable_categorical=True,
                             missing=np.nan, nthread=self.config.nthread or -1)
        return self.booster_.predict(matrix)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        if not hasattr(self, "booster_"):
            raise RecfunnelError("the xgboost ranker is not trained: call fit_candidates first")
        writer.write_text(f"{prefix}model.json", bytes(self.booster_.save_raw("json")).decode("utf-8"))
        writer.write_arrays(f"{prefix}features.npz", self.features_.to_arrays())
        writer.write_json(f"{prefix}meta.json", {
            "feature_names": self.feature_names_, "feature_types": self.feature_types_,
            "channel_names": list(self.channel_names_), "builder": self.features_.meta(),
            "train_summary": self.train_summary_,
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: XGBoostRankerConfig, name: str | None = None) -> Self:
        ranker = cls(config, name)
        meta = reader.read_json(f"{prefix}meta.json")
        ranker.channel_names_ = tuple(meta["channel_names"])
        ranker.feature_names_ = list(meta["feature_names"])
        ranker.feature_types_ = list(meta["feature_types"])
        ranker.train_summary_ = meta["train_summary"]
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(reader.read_text(f"{prefix}model.json").encode("utf-8")))
        except xgb.core.XGBoostError as e:
            raise ArtifactError(f"{reader.model_dir}: '{prefix}model.json' is not an XGBoost model ({e})") from None
        if booster.num_features() != len(ranker.feature_names_):
            raise ArtifactError(f"{reader.model_dir}: the XGBoost model reads {booster.num_features()} features, "
                                f"the meta data lists {len(ranker.feature_names_)}")
        ranker.booster_ = booster
        ranker.features_ = RankingFeatureBuilder.from_arrays(
            config.features, ranker.channel_names_, reader.read_arrays(f"{prefix}features.npz"), meta["builder"])
        return ranker
