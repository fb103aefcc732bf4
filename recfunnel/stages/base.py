"""One small abstract base per funnel stage: one verb, one signature for all.

Every implementation of a stage takes the same inputs and returns the same
:class:`~recfunnel.types.Candidates`, so one conformance test covers all of them
(``recfunnel.testing.conformance``) and the :class:`~recfunnel.pipeline.online.funnel.Funnel`
composes any of them from a config.

Lifecycle (scikit-learn style): the constructor only stores its frozen config;
``fit`` validates and learns (learned attributes end in ``_``); ``save`` writes
the learned state into an :class:`~recfunnel.storage.artifacts.ArtifactWriter`
under a prefix and ``load`` restores it without pickle.

What changes between fits: a stage that takes nearline updates (items published
after the fit, events that arrived after it) also derives from :class:`Incremental`
and overrides its :meth:`~Incremental.publish` / :meth:`~Incremental.observe`; the
nearline layer (:mod:`recfunnel.pipeline.nearline`) calls them on every stage of the
funnel that is ``Incremental`` and knows nothing else about it. A ranker is given
the nearline counts for its statistics features explicitly
(:meth:`Ranker.use_statistics` with a :class:`StatisticsOverlay`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import pandas as pd

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import DataError
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


@dataclass(frozen=True)
class NewItems:
    """N items published after the fit (or re-published ones), as a stage receives them.

    Attributes:
        item_index: (N,) int64 the items' indices in the funnel's (grown) item map, >= 0;
            new ones lie beyond the fitted catalogue.
        publish_time: (N,) int64 unix seconds.
        attributes: N rows of side information (the training item table's columns, any
            subset), aligned with ``item_index``, on a 0..N-1 index.
    """

    item_index: np.ndarray
    publish_time: np.ndarray
    attributes: pd.DataFrame

    def __post_init__(self) -> None:
        index = np.asarray(self.item_index, np.int64).ravel()
        times = np.asarray(self.publish_time, np.int64).ravel()
        if not len(index) == len(times) == len(self.attributes) or (index < 0).any():
            raise DataError("NewItems: one publish time and one attribute row per item index (>= 0)")
        object.__setattr__(self, "item_index", index)
        object.__setattr__(self, "publish_time", times)
        object.__setattr__(self, "attributes", self.attributes.reset_index(drop=True))

    def __len__(self) -> int:
        return len(self.item_index)


#: ``(rows, history_length) -> RequestBatch``: see :attr:`EventBatch.history_before`
HistoryBefore = Callable[[np.ndarray, int], RequestBatch]


@dataclass(frozen=True)
class EventBatch:
    """N user events that arrived after the fit, in log order, as a stage observes them.

    Only events on items the funnel knows arrive (an event on an item not published
    yet waits for it), and each event reaches a stage object once.

    Attributes:
        user_index: (N,) int64 the users' indices in the funnel's user map; -1 for users
            the model does not know (nearline-only users).
        item_index: (N,) int64 the items' indices in the funnel's (grown) item map, >= 0.
        time: (N,) int64 event times, unix seconds.
        positive: (N,) bool positive feedback (click, like, ...); False: an impression.
        value: (N,) float64 the events' values (a rating; 1 for a plain click).
        history_before: ``history_before(rows, L)`` is the :class:`RequestBatch` of the
            users of events ``rows`` ((R,) int64 positions in this batch) at the events'
            times: offline and nearline history strictly before each event, ``L`` long,
            no exclusions. None when the sender has no histories.
    """

    user_index: np.ndarray
    item_index: np.ndarray
    time: np.ndarray
    positive: np.ndarray
    value: np.ndarray
    history_before: HistoryBefore | None = None

    def __post_init__(self) -> None:
        arrays = {"user_index": np.int64, "item_index": np.int64, "time": np.int64, "positive": bool,
                  "value": np.float64}
        for name, dtype in arrays.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype).ravel())
        if len({len(getattr(self, name)) for name in arrays}) != 1 or (self.item_index < 0).any():
            raise DataError("EventBatch: arrays of one length and item indices >= 0 are needed")

    def __len__(self) -> int:
        return len(self.item_index)

    def take(self, rows: np.ndarray) -> EventBatch:
        """The events ``rows`` (a boolean mask or positions); ``history_before`` follows them."""
        positions = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        history = self.history_before
        sub = None if history is None else (lambda r, length: history(positions[r], length))
        return EventBatch(self.user_index[positions], self.item_index[positions], self.time[positions],
                          self.positive[positions], self.value[positions], sub)


class Incremental:
    """A stage that takes what changes between fits: new items and new events.

    A mixin beside a stage base (``class PopularRetriever(Retriever, Incremental)``);
    override what the stage learns from, the defaults ignore it. Stages that learn
    only at ``fit`` do not derive from it. The calls come from one thread at a time
    (the nearline state serialises them) while retrievals may run: replace learned
    arrays as a whole rather than resizing them in place where a retrieval reads them.
    Nearline updates are not part of the artifact (``save`` writes the fitted state;
    the event log replays the rest).
    """

    def publish(self, items: NewItems) -> bool:
        """Take items published after the fit; returns whether the stage took them."""
        return False

    def observe(self, events: EventBatch) -> None:
        """Learn from events that arrived after the fit (each one is observed once)."""


class GrowingStatistic(Protocol):
    """Counts of events added after the fit (``recfunnel.pipeline.nearline.counters.GrowingCounter``)."""

    version: int
    first_time_: np.ndarray
    last_time_: np.ndarray

    @property
    def n_keys(self) -> int: ...

    def count(self, keys: np.ndarray, times: np.ndarray, window: int | None) -> np.ndarray: ...

    def last_before(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class StatisticsOverlay:
    """Event counts that arrived after the fit, for a ranker to add to its fitted statistics.

    Each counter keeps growing after it is given (:meth:`Ranker.use_statistics`); the
    ranker reads it at every request, only events strictly before the request time.

    Attributes:
        positives_by_item / positives_by_user: positive events, keyed by item / user index.
        exposures_by_item: positives and impressions by item.
        values_by_item / values_by_user: positive events weighted by their values.
    """

    positives_by_item: GrowingStatistic
    positives_by_user: GrowingStatistic
    exposures_by_item: GrowingStatistic
    values_by_item: GrowingStatistic
    values_by_user: GrowingStatistic


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

    def use_statistics(self, overlay: StatisticsOverlay | None) -> bool:
        """Score with the fitted statistics plus the (growing) counts of ``overlay``.

        The features stay those of training (the same ``transform``), computed over the
        fitted events and the overlay's; None goes back to the fitted statistics alone.
        Giving a new overlay replaces the previous one.

        Returns:
            whether the ranker has statistics features that use it (the default: none).
        """
        return False

    def statistics_time(self) -> int | None:
        """The newest event time in the fitted statistics (exposures included); None: none known."""
        return None


class ReRanker(Stage):
    """Builds the final list from ranked candidates (diversity, rules, boosts)."""

    @abstractmethod
    def rerank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        """Choose and order ``k`` items per user from ``candidates``."""
