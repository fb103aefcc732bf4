"""Popular items: the non-personalised channel, and the fallback of every other one.

An item's score is its time-decayed count of positive events,
``sum_e weight_e * 2 ** (-age_e / half_life)``, with ages measured from the
newest training event (so a model trained on old data is not all zeros, and
constant timestamps give plain counts). Timestamps are seconds.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> popular = PopularRetriever(PopularConfig(half_life_days=None)).fit(data)
>>> request = make_request(data, np.array([0, 1]), history_length=5)
>>> popular.retrieve(request, k=3).item_index.shape
(2, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError
from recfunnel.stages.base import Retriever
from recfunnel.stages.recall.merge import exclusion_mask
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import PAD, Candidates, RequestBatch

_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class PopularConfig:
    """Options of :class:`PopularRetriever`.

    Attributes:
        half_life_days: an event loses half its weight every this many days; None: no decay.
        window_days: only events at most this many days older than the newest count; None: all.
    """

    half_life_days: float | None = 30.0
    window_days: float | None = None


class PopularRetriever(Retriever):
    """The most popular items not excluded for the user (same list for every user).

    Learned attributes:
        scores_: (n_items,) float32 time-decayed popularity (0 for items never seen).
        order_: (n_popular,) int64 items with a positive score, most popular first.
    """

    kind = "popular"

    def __init__(self, config: PopularConfig | None = None, name: str | None = None):
        super().__init__(config or PopularConfig(), name)

    def fit(self, data: TrainingData) -> Self:
        """Count (decayed) positive events per item."""
        cfg = self.config
        for field in ("half_life_days", "window_days"):
            value = getattr(cfg, field)
            if value is not None and not value > 0:
                raise ConfigError(f"popular: {field} must be positive or None, got {value}")
        inter = data.interactions
        age_days = np.zeros(len(inter))
        if len(inter):
            age_days = (inter.timestamp.max() - inter.timestamp) / _SECONDS_PER_DAY
        weight = inter.weight.astype(np.float64)
        if cfg.half_life_days is not None:
            weight = weight * np.exp2(-age_days / cfg.half_life_days)
        if cfg.window_days is not None:
            weight = np.where(age_days <= cfg.window_days, weight, 0.0)
        scores = np.bincount(inter.item_index, weights=weight, minlength=data.n_items)
        self._set_scores(scores.astype(np.float32))
        return self

    def _set_scores(self, scores: np.ndarray) -> None:
        self.scores_ = scores
        order = np.argsort(-scores, kind="stable")  # ties: lower item index first
        self.order_ = order[scores[order] > 0].astype(np.int64)

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Top-``k`` popular items per user, minus ``request.exclude``.

        Args:
            request: B users; only ``exclude`` is used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by popularity, ``channel_scores={name: score}``.
        """
        b = len(request)
        max_excluded = int(np.diff(request.exclude.indptr).max(initial=0))
        # enough popular items that k survive even the row with the most exclusions
        head = self.order_[: k + max_excluded]
        items = np.broadcast_to(head, (b, len(head)))
        excluded = exclusion_mask(request.exclude, np.arange(b)[:, None], items)
        keep = np.argsort(excluded, axis=1, kind="stable")[:, :k]  # kept items first, order intact
        items = np.take_along_axis(items, keep, axis=1)
        valid = ~np.take_along_axis(excluded, keep, axis=1)
        items = np.where(valid, items, PAD)
        score = np.where(valid, self.scores_[np.maximum(items, 0)], -np.inf).astype(np.float32)
        return Candidates(items, score, {self.name: score})

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_arrays(f"{prefix}popular.npz", {"scores": self.scores_})

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: PopularConfig,
             name: str | None = None) -> Self:
        stage = cls(config, name)
        stage._set_scores(reader.read_arrays(f"{prefix}popular.npz")["scores"].astype(np.float32))
        return stage
