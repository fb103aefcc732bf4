"""Vocabulary: string categories -> embedding indices.

Index 0 is missing / padding, index 1 is unknown (a value not seen while
fitting, or seen fewer than ``min_count`` times), known values get 2, 3, ...
in sorted order. Fit it on the training split only: values that first appear
in validation or serving data must map to "unknown", exactly as they will in
production.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

PAD = 0
UNKNOWN = 1
_N_RESERVED = 2


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value == ""


def _flatten(values: Sequence[Any] | np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(flat values as object array with None for missing, (N,) int64 length of each row)."""
    flat: list[str | None] = []
    lengths = np.zeros(len(values), np.int64)
    for row, value in enumerate(values):
        if isinstance(value, tuple | list | np.ndarray):
            items = [None if _is_missing(v) else str(v) for v in value]
        elif _is_missing(value):
            items = []
        else:
            items = [str(value)]
        flat.extend(items)
        lengths[row] = len(items)
    return np.asarray(flat, dtype=object), lengths


class Vocabulary:
    """Maps categorical values (str) to int64 indices; 0 = missing, 1 = unknown.

    Args:
        min_count: values seen fewer times than this while fitting map to unknown.

    Attributes (after :meth:`fit`):
        values_: (K,) str array of the known values; value ``values_[k]`` has index ``k + 2``.
        counts_: (K,) int64 how often each known value was seen while fitting.

    >>> v = Vocabulary().fit(["b", "a", "b", None])
    >>> len(v), v.transform(["a", "b", "zzz", None]).tolist()
    (4, [2, 3, 1, 0])
    >>> v.transform_lists([("a", "b"), (), ("b",)], max_len=2).tolist()
    [[2, 3], [0, 0], [3, 0]]
    """

    def __init__(self, min_count: int = 1):
        self.min_count = min_count

    def fit(self, values: Sequence[Any] | np.ndarray | pd.Series) -> Vocabulary:
        """Learn the known values.

        Args:
            values: (N,) values; each a str, a tuple/list of str (multi-value), or
                missing (None, NaN, ""). Non-str scalars are converted with ``str``.

        Returns:
            self.
        """
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        flat, _ = _flatten(values)
        present = flat[pd.notna(flat)]
        if len(present) == 0:
            uniques, counts = np.array([], dtype=str), np.array([], dtype=np.int64)
        else:
            uniques, counts = np.unique(present.astype(str), return_counts=True)
        keep = counts >= self.min_count
        self._set(uniques[keep], counts[keep].astype(np.int64))
        return self

    def _set(self, values: np.ndarray, counts: np.ndarray) -> None:
        self.values_ = np.asarray(values, dtype=str)
        self.counts_ = np.asarray(counts, dtype=np.int64)
        self._lookup = pd.Index(self.values_.astype(object))

    def _check_fitted(self) -> None:
        if not hasattr(self, "values_"):
            raise RuntimeError("Vocabulary is not fitted; call fit() first")

    def __len__(self) -> int:
        """Number of indices, reserved ones included (the embedding table size)."""
        self._check_fitted()
        return len(self.values_) + _N_RESERVED

    def _encode_flat(self, flat: np.ndarray) -> np.ndarray:
        missing = pd.isna(flat)
        codes = np.full(len(flat), PAD, np.int64)
        if (~missing).any():
            found = self._lookup.get_indexer(pd.Index(flat[~missing].astype(str).astype(object)))
            codes[~missing] = np.where(found >= 0, found + _N_RESERVED, UNKNOWN)
        return codes

    def transform(self, values: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
        """Indices of single values.

        Args:
            values: (N,) str values (missing allowed).

        Returns:
            (N,) int64: 0 for missing, 1 for unknown, 2.. for known values.
        """
        self._check_fitted()
        flat, lengths = _flatten(values)
        if (lengths > 1).any() or any(isinstance(v, tuple | list | np.ndarray) for v in values):
            raise TypeError("transform() takes single values; use transform_lists() for multi-value columns")
        codes = np.zeros(len(lengths), np.int64)
        codes[lengths == 1] = self._encode_flat(flat)
        return codes

    def transform_lists(self, values: Sequence[Any] | np.ndarray | pd.Series, max_len: int) -> np.ndarray:
        """Indices of multi-value rows, padded / truncated to ``max_len``.

        Args:
            values: (N,) tuples of str (a plain str counts as a one-element list,
                a missing value as an empty one).
            max_len: slots per row; longer rows keep their first ``max_len`` values.

        Returns:
            (N, max_len) int64, 0-padded on the right.
        """
        self._check_fitted()
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
        flat, lengths = _flatten(values)
        codes = self._encode_flat(flat)
        out = np.zeros((len(lengths), max_len), np.int64)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        starts = np.cumsum(lengths) - lengths
        slots = np.arange(len(flat)) - np.repeat(starts, lengths)
        keep = slots < max_len
        out[rows[keep], slots[keep]] = codes[keep]
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (no object dtype) for ``np.savez``; load them without pickle."""
        self._check_fitted()
        return {
            "values": self.values_.copy(),
            "counts": self.counts_.copy(),
            "min_count": np.array(self.min_count, np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Vocabulary:
        """Rebuild a fitted vocabulary from :meth:`to_arrays` output.

        >>> v = Vocabulary().fit(["x", "y"])
        >>> Vocabulary.from_arrays(v.to_arrays()).transform(["y"]).tolist()
        [3]
        """
        values = np.asarray(arrays["values"])
        if values.dtype.kind != "U":
            raise ValueError(f"vocabulary values must be a str array, got dtype {values.dtype}")
        counts = np.asarray(arrays["counts"], dtype=np.int64)
        if counts.shape != values.shape:
            raise ValueError("vocabulary values and counts differ in length")
        if len(values) and not (values[1:] > values[:-1]).all():
            raise ValueError("vocabulary values must be sorted and unique")
        vocab = cls(min_count=int(arrays["min_count"]))
        vocab._set(values, counts)
        return vocab
