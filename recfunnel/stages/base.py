"""One small abstract base per funnel stage: one verb, one signature for all.

Every implementation of a stage takes the same inputs and returns the same
:class:`~recfunnel.types.Candidates`, so one conformance test covers all of them
(``recfunnel.testing.conformance``) and the :class:`~recfunnel.pipeline.online.funnel.Funnel`
composes any of them from a config.

Lifecycle (scikit-learn style): the constructor only stores its frozen config;
``fit`` validates and learns (learned attributes end in ``_``); ``save`` writes
the learned state into an :class:`~recfunnel.storage.artifacts.ArtifactWriter`
under a prefix and ``load`` restores it without pickle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np

from recfunnel.data.dataset import TrainingData
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import Candidates, RequestBatch


class Stage(ABC):
    """Common lifecycle of every stage."""

    #: registry key used in configs (e.g. "itemcf"); set by subclasses
    kind: ClassVar[str] = ""

    def __init__(self, config: Any, name: str | None = None):
        self.config = config
        self.name = name or self.kind

    @abstractmethod
    def fit(self, data: TrainingData) -> Self:
        """Learn from training data; returns self."""

    @abstractmethod
    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        """Write the learned state as files named ``{prefix}...`` (no pickle)."""

    @classmethod
    @abstractmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any, name: str | None = None) -> Self:
        """Restore a fitted stage saved by :meth:`save`."""

    @property
    def is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def training_curves(self) -> dict[str, dict]:
        """Per-epoch curves of the neural models this stage trained, for reports.

        An optional interface: the default (no neural model) is ``{}``; a stage that
        trains a neural model overrides it, and the curves survive ``save``/``load``.

        Returns:
            model name -> ``{"train_loss": [float per epoch], "valid_metric": [float per
            epoch] (empty without validation rows), "metric": name of the validation metric,
            "best_epoch": 0-based epoch kept (-1 if none)}``.
        """
        return {}


class Retriever(Stage):
    """A retrieval channel: finds up to ``k`` items for each user of a request."""

    @abstractmethod
    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Return (B, <=k) candidates sorted by score, excluding ``request.exclude``.

        Channel scores must be comparable within a channel; the merger handles
        comparability across channels.
        """


class PreRanker(Stage):
    """A cheap scorer that narrows thousands of candidates to hundreds."""

    @abstractmethod
    def prerank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        """Rescore ``candidates`` and keep the best ``k`` per user."""


class Ranker(Stage):
    """The precise scorer of the funnel.

    Learned rankers fit in two phases: :meth:`fit_candidates` learns the model
    from labelled candidates that the funnel's own retrieval produced on a
    holdout, and :meth:`fit` re-indexes the feature statistics on newer data
    (the full training set) without touching the learned model.
    """

    @abstractmethod
    def fit_candidates(self, data: TrainingData, request: RequestBatch, candidates: Candidates,
                       labels: np.ndarray, *, progress: bool = False) -> Self:
        """Learn from (B, C) candidates labelled true where the user later interacted."""

    @abstractmethod
    def rank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        """Rescore ``candidates`` and keep the best ``k`` per user."""


class ReRanker(Stage):
    """Builds the final list from ranked candidates (diversity, rules, boosts)."""

    @abstractmethod
    def rerank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        """Choose and order ``k`` items per user from ``candidates``."""
