"""Training samples of the learned rankers, drawn from the funnel's own candidates.

Every learned ranker (LightGBM, XGBoost, GBDT+LR, the neural models) learns from
the candidates retrieval produced for a holdout (seed 000 §2, 003 §6): a user's
held-out items among them are the positives and the user's other candidates
are hard negatives from the same distribution the ranker sees when serving.
The sampling, the split of users into training and validation, and the query
sizes of list-wise objectives live here so that every ranker draws the same
samples from the same seed.

>>> rng = np.random.default_rng(0)
>>> cand = Candidates(np.array([[3, 4, 5, -1], [6, 7, 8, 9]]), np.zeros((2, 4), np.float32))
>>> labels = np.array([[True, False, False, False], [False, False, False, False]])
>>> kept = sample_training_slots(cand, labels, negatives_per_user=1, max_train_users=10, rng=rng)
>>> kept.valid.sum(axis=1).tolist()  # the positive and one negative; no positive: the user is dropped
[2, 0]
>>> query_sizes(np.array([0, 0, 2, 2, 2, 5])).tolist()
[2, 3, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError, RecfunnelError
from recfunnel.features.ranking import RankingFeatureBuilder
from recfunnel.types import Candidates, RequestBatch


def sample_training_slots(candidates: Candidates, labels: np.ndarray, negatives_per_user: int,
                          max_train_users: int, rng: np.random.Generator) -> Candidates:
    """Candidate slots to learn from: every positive and a random sample of negatives per user.

    Bounded memory with the serving distribution kept: each user keeps all their
    positives and up to ``negatives_per_user`` random negatives; users without
    a positive are dropped, and at most ``max_train_users`` users (a random
    sample) are kept.

    Args:
        candidates: (B, C) retrieval output.
        labels: (B, C) bool, true where the candidate is one of the user's held-out items.
        negatives_per_user: negatives kept per user.
        max_train_users: users kept at most.
        rng: consumed in a fixed order (one (B, C) draw, then the user sample if any).

    Returns:
        ``candidates`` with the slots not chosen set to padding (-1).

    Raises:
        RecfunnelError: no candidate is a positive, or ``labels`` does not match ``candidates``.
    """
    if labels.shape != candidates.item_index.shape:
        raise RecfunnelError(f"labels have shape {labels.shape}, the candidates {candidates.item_index.shape}")
    valid = candidates.valid
    noise = rng.random(labels.shape)
    noise[~valid] = np.inf
    noise[labels & valid] = -1.0
    n_pos = (labels & valid).sum(axis=1)
    keep_n = np.minimum(valid.sum(axis=1), n_pos + negatives_per_user)
    rank = np.argsort(np.argsort(noise, axis=1), axis=1)
    keep = (rank < keep_n[:, None]) & valid
    users_with_pos = np.flatnonzero(n_pos > 0)
    if len(users_with_pos) == 0:
        raise RecfunnelError("the ranker has no positive training samples: retrieval found none of the held-out items")
    if len(users_with_pos) > max_train_users:
        users_with_pos = np.sort(rng.choice(users_with_pos, max_train_users, replace=False))
    row_keep = np.zeros(len(labels), bool)
    row_keep[users_with_pos] = True
    keep &= row_keep[:, None]
    return Candidates(
        np.where(keep, candidates.item_index, -1), candidates.score,
        dict(candidates.channel_scores), dict(candidates.stage_scores))


def validation_row_mask(rows: np.ndarray, y: np.ndarray, n_requests: int, fraction: float,
                        rng: np.random.Generator) -> np.ndarray:
    """(N,) bool: the sample rows of the users held out for validation (early stopping).

    Whole users are held out, so no user is in both sets. The mask is all false
    (no validation) when it would take every row, no row, or no positive.

    Args:
        rows: (N,) request row (user) of each sample.
        y: (N,) labels of the samples.
        n_requests: B, the number of request rows.
        fraction: share of users held out.
        rng: one (B,) draw is consumed.
    """
    is_valid_user = rng.random(n_requests) < fraction
    vmask = is_valid_user[rows]
    if vmask.all() or not vmask.any() or y[vmask].sum() == 0:
        vmask = np.zeros(len(rows), bool)
    return vmask


def query_sizes(rows: np.ndarray) -> np.ndarray:
    """Sizes of the runs of equal ``rows``, in order: the query groups of list-wise objectives.

    ``rows`` must be sorted; the rows of :meth:`RankingFeatureBuilder.transform`
    come out of ``np.nonzero`` in row-major order, so each user's rows are contiguous.
    """
    return np.bincount(rows)[np.unique(rows)]


@dataclass(frozen=True)
class RankerSamples:
    """Labelled feature rows of a ranker.

    Attributes:
        x: (N, F) float32 features (NaN = missing), dense columns then categorical codes.
        y: (N,) float32 labels, 1 for a held-out item.
        rows: (N,) int64 request row (user) of each sample, sorted: the query id / CV group.
        cols: (N,) int64 candidate column of each sample.
        feature_names: F column names.
        categorical: indices of the categorical (vocabulary code) columns.
    """

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    feature_names: list[str]
    categorical: list[int]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost's feature types: ``"c"`` for categorical columns, ``"q"`` for the others."""
        cat = set(self.categorical)
        return ["c" if i in cat else "q" for i in range(len(self.feature_names))]


def build_ranker_samples(builder: RankingFeatureBuilder, request: RequestBatch, candidates: Candidates,
                         labels: np.ndarray, negatives_per_user: int, max_train_users: int,
                         rng: np.random.Generator) -> RankerSamples:
    """Sample the training slots (:func:`sample_training_slots`) and compute their features."""
    masked = sample_training_slots(candidates, labels, negatives_per_user, max_train_users, rng)
    feats, rows, cols = builder.transform(request, masked)
    names = feats.names
    return RankerSamples(
        x=feats.to_matrix(), y=labels[rows, cols].astype(np.float32), rows=rows, cols=cols,
        feature_names=names, categorical=[i for i, n in enumerate(names) if n in feats.sparse])


def ranker_samples(config: Any, data: TrainingData, request: RequestBatch, candidates: Candidates,
                   labels: np.ndarray) -> RankerSamples:
    """The samples a ranker with ``config`` would train on (e.g. for a grid search).

    ``config`` is any ranker config with ``features``, ``negatives_per_user``,
    ``max_train_users`` and ``seed`` (LightGBM, XGBoost, GBDT+LR). Use
    ``samples.rows`` as the CV groups so that no user is in two folds.
    """
    channels = tuple(sorted(candidates.channel_scores))
    builder = RankingFeatureBuilder(config.features, channels).fit(data)
    return build_ranker_samples(builder, request, candidates, labels, config.negatives_per_user,
                                config.max_train_users, np.random.default_rng(config.seed))


def check_sampling_params(kind: str, negatives_per_user: int, max_train_users: int,
                          validation_fraction: float) -> None:
    """Raise a :class:`ConfigError` naming ``kind`` when a sampling parameter is out of range."""
    check_param(kind, negatives_per_user >= 0, f"negatives_per_user must be >= 0, got {negatives_per_user}")
    check_param(kind, max_train_users >= 1, f"max_train_users must be >= 1, got {max_train_users}")
    check_param(kind, 0.0 <= validation_fraction < 1.0,
                f"validation_fraction must be in [0, 1), got {validation_fraction}")


def check_param(kind: str, ok: bool, message: str) -> None:
    """Raise ``ConfigError("<kind>: <message>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{kind}: {message}")
