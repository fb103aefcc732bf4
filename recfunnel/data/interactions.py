"""Encoded interactions: the arrays every stage trains on.

External ids (strings) are mapped to contiguous internal indices by an
:class:`IdMap`, which is saved with every model (STYLE principle 8).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


class IdMap:
    """Bijection between external ids (strings) and indices ``0..n-1``.

    Unknown ids map to ``-1``.

    >>> m = IdMap.from_values(["b", "a", "b"])
    >>> m.ids.tolist(), m.index(["a", "b", "z"]).tolist()
    (['a', 'b'], [0, 1, -1])
    """

    def __init__(self, ids: np.ndarray):
        ids = np.asarray(ids, dtype=object).astype(str)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("IdMap ids must be unique")
        self.ids: np.ndarray = ids
        self._index = pd.Index(ids)

    @classmethod
    def from_values(cls, values: Iterable) -> IdMap:
        return cls(np.sort(pd.Series(list(values), dtype=object).astype(str).unique().astype(str)))

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, values: Iterable) -> np.ndarray:
        """Internal indices of ``values`` (int64), ``-1`` for unknown ids."""
        vals = pd.Index(np.asarray(values, dtype=object).astype(str))
        return self._index.get_indexer(vals).astype(np.int64)

    def to_ids(self, index: np.ndarray) -> np.ndarray:
        """External ids for ``index`` (must be valid indices)."""
        return self.ids[np.asarray(index, dtype=np.int64)]


@dataclass(frozen=True)
class Interactions:
    """Positive user-item events, encoded. Shapes: N events.

    Attributes:
        user_index: (N,) int64 indices into the user IdMap.
        item_index: (N,) int64 indices into the item IdMap.
        timestamp: (N,) int64 seconds (or any monotone time unit).
        weight: (N,) float32 strength of the event (1.0 for plain implicit data).
        n_users, n_items: sizes of the id spaces (may exceed the ids seen here).
    """

    user_index: np.ndarray
    item_index: np.ndarray
    timestamp: np.ndarray
    weight: np.ndarray
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        n = len(self.user_index)
        for name in ("item_index", "timestamp", "weight"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Interactions.{name} has length {len(getattr(self, name))}, expected {n}")

    def __len__(self) -> int:
        return len(self.user_index)

    def to_csr(self, binary: bool = False) -> sp.csr_matrix:
        """User x item matrix (n_users, n_items); duplicate events are summed."""
        data = np.ones(len(self), np.float32) if binary else self.weight.astype(np.float32)
        m = sp.csr_matrix((data, (self.user_index, self.item_index)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def subset(self, mask: np.ndarray) -> Interactions:
        """Rows where ``mask`` is true, same id spaces."""
        return Interactions(
            self.user_index[mask], self.item_index[mask], self.timestamp[mask], self.weight[mask],
            self.n_users, self.n_items,
        )
