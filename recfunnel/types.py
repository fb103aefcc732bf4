"""The contracts every stage shares.

One request batch goes into every stage and one candidate type comes out of it,
so any retriever can feed any ranker (STYLE principle 1). Everything is a batch:
the online path is a batch of one user, the offline path a batch of thousands,
and both run the same code.

Shapes: ``B`` users in the batch, ``C`` candidate slots per user, ``L`` history
slots. Padding is ``-1`` for indices and ``-inf`` for scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

PAD = -1

#: provenance name (in ``Candidates.channel_scores``) of the items the fallback channel added
FALLBACK = "fallback"

#: :attr:`StageTrace.status` values: ran; late (dropped); raised (dropped); skipped because
#: earlier calls of the stage still hang; skipped because no time was left in the budget
OK, TIMEOUT, ERROR, BUSY, SKIPPED = "ok", "timeout", "error", "busy", "skipped"


@dataclass(frozen=True)
class RequestBatch:
    """What a stage knows about the users it serves.

    Attributes:
        user_index: (B,) int64 internal user indices; -1 for users unknown to the model.
        time: (B,) int64 reference time of each request; features read only events before it.
        history: (B, L) int64 the user's most recent items, newest first, -1 padded.
        history_time: (B, L) int64 timestamps of ``history`` (0 at padding).
        exclude: (B, n_items) CSR of items never to return (already seen, business filters).
        context: named per-request arrays, each of leading size B (device, hour, ...).
    """

    user_index: np.ndarray
    time: np.ndarray
    history: np.ndarray
    history_time: np.ndarray
    exclude: sp.csr_matrix
    context: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = len(self.user_index)
        if self.time.shape != (b,) or self.history.shape[0] != b or self.history_time.shape != self.history.shape:
            raise ValueError(
                f"RequestBatch shapes disagree: user_index {self.user_index.shape}, time {self.time.shape}, "
                f"history {self.history.shape}, history_time {self.history_time.shape}"
            )
        if self.exclude.shape[0] != b:
            raise ValueError(f"RequestBatch.exclude has {self.exclude.shape[0]} rows, expected {b}")

    def __len__(self) -> int:
        return len(self.user_index)


@dataclass(frozen=True)
class Candidates:
    """Candidate items per user, sorted by ``score`` descending within each row.

    Attributes:
        item_index: (B, C) int64, -1 at padding.
        score: (B, C) float32, -inf at padding; the score of the stage that produced them.
        channel_scores: channel name -> (B, C) float32 score that channel gave the item,
            NaN where the channel did not find it (provenance).
        stage_scores: stage name -> (B, C) float32 score of each stage the candidates went
            through (``rank``, ``rerank``, ...), kept for features, reports and debugging.
    """

    item_index: np.ndarray
    score: np.ndarray
    channel_scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    stage_scores: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.item_index.ndim != 2 or self.score.shape != self.item_index.shape:
            raise ValueError(f"Candidates shapes disagree: item_index {self.item_index.shape}, score {self.score.shape}")
        for name, arr in {**self.channel_scores, **self.stage_scores}.items():
            if arr.shape != self.item_index.shape:
                raise ValueError(f"Candidates score '{name}' has shape {arr.shape}, expected {self.item_index.shape}")

    @property
    def valid(self) -> np.ndarray:
        """(B, C) bool, true where a slot holds an item."""
        return self.item_index >= 0

    def __len__(self) -> int:
        return self.item_index.shape[0]

    def take(self, order: np.ndarray) -> Candidates:
        """Reorder (or subset) the slots of every row: ``order`` is (B, C') column indices."""
        rows = np.arange(len(self))[:, None]

        def pick(a: np.ndarray) -> np.ndarray:
            return a[rows, order]

        return Candidates(
            pick(self.item_index), pick(self.score),
            {k: pick(v) for k, v in self.channel_scores.items()},
            {k: pick(v) for k, v in self.stage_scores.items()},
        )

    def with_scores(self, score: np.ndarray, stage: str, k: int | None = None) -> Candidates:
        """New candidates scored by ``stage``, sorted by that score, truncated to ``k``."""
        score = np.where(self.valid, score, -np.inf).astype(np.float32)
        rescored = replace(self, score=score, stage_scores={**self.stage_scores, stage: score})
        return rescored.take(top_k_columns(score, k or score.shape[1]))

    @staticmethod
    def empty(batch_size: int) -> Candidates:
        return Candidates(np.full((batch_size, 0), PAD, np.int64), np.zeros((batch_size, 0), np.float32))


def top_k_columns(score: np.ndarray, k: int) -> np.ndarray:
    """(B, min(k, C)) column indices of the k largest scores per row, best first.

    Ties keep the lower column first, so results are deterministic.

    >>> top_k_columns(np.array([[0.1, 0.9, 0.5]]), 2).tolist()
    [[1, 2]]
    """
    b, c = score.shape
    k = min(k, c)
    if k == 0:
        return np.zeros((b, 0), np.int64)
    # a full stable sort: argpartition may drop the lower column of a tie at the k-th place
    return np.argsort(-score, axis=1, kind="stable")[:, :k].astype(np.int64)


@dataclass(frozen=True)
class FeatureBatch:
    """Model inputs for N (user, item) rows.

    Attributes:
        dense: name -> (N,) float32 numeric features (NaN = missing).
        sparse: name -> (N,) int64 vocabulary indices (0 = missing, 1 = unknown).
        sequences: name -> (N, L) int64 id lists / behaviour sequences (0 = padding).
    """

    dense: Mapping[str, np.ndarray] = field(default_factory=dict)
    sparse: Mapping[str, np.ndarray] = field(default_factory=dict)
    sequences: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        for group in (self.dense, self.sparse, self.sequences):
            for arr in group.values():
                return arr.shape[0]
        return 0

    @property
    def names(self) -> list[str]:
        """Column names of :meth:`to_matrix`: dense first, then sparse."""
        return list(self.dense) + list(self.sparse)

    def to_matrix(self) -> np.ndarray:
        """(N, F) float32 matrix of dense then sparse columns (for tree models).

        Missing dense values stay NaN; sparse indices are cast to float.
        """
        cols = [np.asarray(v, np.float32) for v in self.dense.values()]
        cols += [np.asarray(v, np.float32) for v in self.sparse.values()]
        if not cols:
            return np.zeros((0, 0), np.float32)
        return np.column_stack(cols)


@dataclass(frozen=True)
class StageTrace:
    """What one stage did to one request batch (for debug output, funnel reports and the service).

    Attributes:
        stage: stage name ("retrieval", "prerank", "rank", "rerank"), "retrieval:<channel>",
            or "retrieval:fallback" (only when the fallback failed and a static list replaced it).
        n_in: (B,) int64 candidates entering the stage per user (0 for retrieval).
        n_out: (B,) int64 candidates leaving it per user (0 unless the stage ran).
        seconds: wall time of the stage for the whole batch.
        candidates: the stage's output; None when it did not run (``status`` not ok), except
            for "retrieval:fallback", which carries the static list used instead.
        status: ``ok``, ``timeout``, ``error``, ``busy`` or ``skipped`` (see :data:`OK`).
        error: the exception's one-line description when it raised.
    """

    stage: str
    n_in: np.ndarray
    n_out: np.ndarray
    seconds: float
    candidates: Candidates | None
    status: str = OK
    error: str | None = None
