"""GBDT + LR ranker (He et al., "Practical Lessons from Predicting Clicks on Ads at Facebook", 2014).

Boosted trees act as a learned feature transform: each sample falls into one
leaf of every tree, and the one-hot vector of those leaves (one column per
(tree, leaf), exactly ``n_trees`` ones per row) is the input of a logistic
regression. The trees and the LR learn on disjoint users, so the LR does not
learn to trust leaves that the trees fitted to the same rows (the paper trains
them on different data too).

Samples are the funnel's own candidates, as for every learned ranker
(:mod:`recfunnel.stages.rank.samples`). Artifacts: the LightGBM model text, the
LR weights as ``.npz`` and a JSON meta file (never pickle). Scores are computed
from the saved arrays, so a loaded ranker scores exactly like the trained one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ArtifactError, RecfunnelError
from recfunnel.evaluation.metrics import auc
from recfunnel.features.ranking import RankingFeatureBuilder, RankingFeatureConfig
from recfunnel.stages.rank.base import FeatureRanker
from recfunnel.stages.rank.samples import check_param, check_sampling_params
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import Candidates, FeatureBatch, RequestBatch


@dataclass(frozen=True)
class GBDTLRRankerConfig:
    """Hyper-parameters of :class:`GBDTLRRanker` (LightGBM's names for the trees).

    Attributes:
        n_estimators: trees of the GBDT, fixed (the leaf encoding has one block per tree).
        learning_rate / num_leaves / min_child_samples / feature_fraction / bagging_fraction /
            lambda_l2: the GBDT's options.
        gbdt_fraction: share of the training users whose samples train the trees; the
            others' samples train the LR.
        lr_c: inverse L2 strength of the logistic regression (scikit-learn's ``C``).
        lr_max_iter: L-BFGS iterations of the LR at most.
        validation_fraction: share of users held out of both parts; only reported
            (``train_summary_["validation_auc"]``).
        negatives_per_user / max_train_users: the sample (see :mod:`recfunnel.stages.rank.samples`).
        num_threads: LightGBM threads (0 = LightGBM's default).
        seed: seed of the sampling, the user splits and LightGBM.
        features: the ranking features.
    """

    n_estimators: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_child_samples: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    gbdt_fraction: float = 0.5
    lr_c: float = 1.0
    lr_max_iter: int = 200
    validation_fraction: float = 0.1
    negatives_per_user: int = 150
    max_train_users: int = 20_000
    num_threads: int = 0
    seed: int = 0
    features: RankingFeatureConfig = field(default_factory=RankingFeatureConfig)

    def __post_init__(self) -> None:
        kind = "gbdt_lr"
        check_param(kind, self.n_estimators >= 1, f"n_estimators must be >= 1, got {self.n_estimators}")
        check_param(kind, self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check_param(kind, self.num_leaves >= 2, f"num_leaves must be >= 2, got {self.num_leaves}")
        check_param(kind, self.min_child_samples >= 1,
                    f"min_child_samples must be >= 1, got {self.min_child_samples}")
        check_param(kind, 0 < self.feature_fraction <= 1,
                    f"feature_fraction must be in (0, 1], got {self.feature_fraction}")
        check_param(kind, 0 < self.bagging_fraction <= 1,
                    f"bagging_fraction must be in (0, 1], got {self.bagging_fraction}")
        check_param(kind, self.lambda_l2 >= 0, f"lambda_l2 must be >= 0, got {self.lambda_l2}")
        check_param(kind, 0 < self.gbdt_fraction < 1,
                    f"gbdt_fraction must be in (0, 1): the trees and the LR each need their own users, "
                    f"got {self.gbdt_fraction}")
        check_param(kind, self.lr_c > 0, f"lr_c must be > 0, got {self.lr_c}")
        check_param(kind, self.lr_max_iter >= 1, f"lr_max_iter must be >= 1, got {self.lr_max_iter}")
        check_param(kind, self.num_threads >= 0, f"num_threads must be >= 0 (0 = default), got {self.num_threads}")
        check_sampling_params(kind, self.negatives_per_user, self.max_train_users, self.validation_fraction)

    def lightgbm_params(self) -> dict:
        """The parameters of ``lightgbm.train`` for the trees."""
        return {
            "objective": "binary", "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": 1, "lambda_l2": self.lambda_l2,
            "seed": self.seed, "deterministic": True, "force_row_wise": True, "verbosity": -1,
            "num_threads": self.num_threads,
        }


def leaf_offsets(booster: lgb.Booster) -> np.ndarray:
    """(n_trees + 1,) int64 first one-hot column of each tree's leaves; the last entry is the width."""
    leaves = [tree["num_leaves"] for tree in booster.dump_model()["tree_info"]]
    return np.concatenate([[0], np.cumsum(leaves)]).astype(np.int64)


def encode_leaves(leaves: np.ndarray, offsets: np.ndarray) -> sp.csr_matrix:
    """One-hot (N, n_columns) CSR of the leaf each row reaches in each tree.

    Args:
        leaves: (N, n_trees) leaf index within each tree (``predict(pred_leaf=True)``).
        offsets: (n_trees + 1,) from :func:`leaf_offsets`.

    Returns:
        float64 CSR with exactly ``n_trees`` ones per row.

    >>> encode_leaves(np.array([[0, 1], [2, 0]]), np.array([0, 3, 5])).toarray().tolist()
    [[1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0, 0.0]]
    """
    n, n_trees = leaves.shape
    if n_trees != len(offsets) - 1:
        raise ValueError(f"{n_trees} trees of leaves, {len(offsets) - 1} trees of offsets")
    columns = (np.asarray(leaves, np.int64) + offsets[:-1]).ravel()
    indptr = np.arange(0, n * n_trees + 1, n_trees, dtype=np.int64)
    return sp.csr_matrix((np.ones(n * n_trees), columns, indptr), shape=(n, int(offsets[-1])))


class GBDTLRRanker(FeatureRanker):
    """Logistic regression over the GBDT leaf encoding of (user, candidate) features.

    Scores are the LR's click probabilities.
    """

    kind = "gbdt_lr"

    def __init__(self, config: GBDTLRRankerConfig | None = None, name: str | None = None):
        super().__init__(config or GBDTLRRankerConfig(), name or "rank")

    def fit_candidates(self, data: TrainingData, request: RequestBatch, candidates: Candidates,
                       labels: np.ndarray, *, progress: bool = False) -> Self:
        """Learn the trees on one part of the users and the LR on the other.

        Args:
            data: the training data as of the requests (statistics are indexed from it).
            request: (B users) the requests the candidates were retrieved for.
            candidates: (B, C) retrieval output.
            labels: (B, C) bool, true where the candidate is one of the user's held-out items.
        """
        cfg = self.config
        builder, samples, rng = self._training_samples(data, request, candidates, labels)
        self.feature_names_ = samples.feature_names
        x, y, rows = samples.x, samples.y, samples.rows
        # whole users go to one part: validation (report only), trees, or LR
        is_valid_user = rng.random(len(labels)) < cfg.validation_fraction
        is_tree_user = ~is_valid_user & (rng.random(len(labels)) < cfg.gbdt_fraction)
        part = np.where(is_valid_user, 0, np.where(is_tree_user, 1, 2))[rows]
        for code, what in ((1, "trees"), (2, "logistic regression")):
            if y[part == code].sum() == 0 or y[part == code].min() == 1:
                raise RecfunnelError(
                    f"gbdt_lr: the users sampled for the {what} have {int((part == code).sum())} samples and "
                    "not both classes; give the ranker more users with held-out items or change gbdt_fraction")
        tree_set = lgb.Dataset(x[part == 1], y[part == 1], feature_name=self.feature_names_,
                               categorical_feature=samples.categorical, free_raw_data=True)
        self.booster_ = lgb.train(cfg.lightgbm_params(), tree_set, num_boost_round=cfg.n_estimators)
        self.leaf_offsets_ = leaf_offsets(self.booster_)
        lr = LogisticRegression(C=cfg.lr_c, solver="lbfgs", max_iter=cfg.lr_max_iter)
        lr.fit(self._encode(x[part == 2]), y[part == 2])
        self.lr_weights_ = lr.coef_.ravel().astype(np.float64)
        self.lr_intercept_ = float(lr.intercept_[0])
        valid = part == 0
        self.train_summary_ = {
            "rows": int(len(y)), "positives": int(y.sum()), "users": int(len(np.unique(rows))),
            "tree_rows": int((part == 1).sum()), "lr_rows": int((part == 2).sum()),
            "trees": int(self.booster_.num_trees()), "leaf_columns": int(self.leaf_offsets_[-1]),
            "lr_iterations": int(lr.n_iter_[0]),
            "validation_auc": auc(y[valid], self._predict(x[valid]))
            if valid.any() and 0 < y[valid].sum() < valid.sum() else None,
        }
        self.features_ = builder
        return self

    def _encode(self, x: np.ndarray) -> sp.csr_matrix:
        return encode_leaves(self.booster_.predict(x, pred_leaf=True), self.leaf_offsets_)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        """(N,) float32 probabilities of the LR over the leaf encoding of ``x``."""
        logit = self._encode(x) @ self.lr_weights_ + self.lr_intercept_
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    def _score_rows(self, request: RequestBatch, candidates: Candidates, features: FeatureBatch,
                    rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self._predict(features.to_matrix())

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        if not hasattr(self, "booster_"):
            raise RecfunnelError("the gbdt_lr ranker is not trained: call fit_candidates first")
        writer.write_text(f"{prefix}gbdt.txt", self.booster_.model_to_string())
        writer.write_arrays(f"{prefix}lr.npz", {
            "weights": self.lr_weights_, "intercept": np.array([self.lr_intercept_]),
            "leaf_offsets": self.leaf_offsets_})
        writer.write_arrays(f"{prefix}features.npz", self.features_.to_arrays())
        writer.write_json(f"{prefix}meta.json", {
            "feature_names": self.feature_names_, "channel_names": list(self.channel_names_),
            "builder": self.features_.meta(), "train_summary": self.train_summary_,
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: GBDTLRRankerConfig, name: str | None = None) -> Self:
        ranker = cls(config, name)
        meta = reader.read_json(f"{prefix}meta.json")
        ranker.channel_names_ = tuple(meta["channel_names"])
        ranker.feature_names_ = list(meta["feature_names"])
        ranker.train_summary_ = meta["train_summary"]
        ranker.booster_ = lgb.Booster(model_str=reader.read_text(f"{prefix}gbdt.txt"))
        lr = reader.read_arrays(f"{prefix}lr.npz")
        ranker.leaf_offsets_ = lr["leaf_offsets"].astype(np.int64)
        ranker.lr_weights_ = lr["weights"].astype(np.float64)
        ranker.lr_intercept_ = float(lr["intercept"][0])
        if not np.array_equal(ranker.leaf_offsets_, leaf_offsets(ranker.booster_)) or \
                len(ranker.lr_weights_) != ranker.leaf_offsets_[-1]:
            raise ArtifactError(f"{reader.model_dir}: '{prefix}lr.npz' does not match the trees of '{prefix}gbdt.txt'")
        ranker.features_ = RankingFeatureBuilder.from_arrays(
            config.features, ranker.channel_names_, reader.read_arrays(f"{prefix}features.npz"), meta["builder"])
        return ranker
