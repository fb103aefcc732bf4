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

#: lookups of at most this many ids use the hash table one id at a time
_SMALL_LOOKUP = 16


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
        raw = np.asarray(values, dtype=object).astype(str)
        if raw.ndim == 1 and len(raw) <= _SMALL_LOOKUP:
            # a request of a few ids (online serving): hash lookups, no index construction (~5x faster)
            return np.fromiter((self._lookup(v) for v in raw.tolist()), np.int64, len(raw))
        vals = pd.Index(raw)
        return self._index.get_indexer(vals).astype(np.int64)

    def _lookup(self, value: str) -> int:
        try:
            return int(self._index.get_loc(value))
        except KeyError:
            return -1

    def to_ids(self, index: np.ndarray) -> np.ndarray:
        """External ids for ``index`` (must be valid indices)."""
        return self.ids[np.asarray(index, dtype=np.int64)]

    def extended(self, values: Iterable) -> IdMap:
        """A new map with the unknown ``values`` appended (in first-seen order).

        Existing ids keep their indices, so a model's arrays stay valid; this map is
        not modified (swap the reference to publish the new one atomically).

        >>> m = IdMap.from_values(["a", "b"]).extended(["c", "a", "d", "c"])
        >>> m.ids.tolist(), m.index(["d"]).tolist()
        (['a', 'b', 'c', 'd'], [3])
        """
        vals = pd.unique(pd.Series(np.asarray(list(values), dtype=object)).astype(str).to_numpy(dtype=object))
        new = np.asarray(vals, dtype=object)[self.index(vals) < 0] if len(vals) else np.zeros(0, dtype=object)
        if len(new) == 0:
            return self
        return IdMap(np.concatenate([self.ids.astype(object), new]))


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
