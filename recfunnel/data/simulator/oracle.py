"""Ground truth of a simulation: the true relevance of any (user, item) pair.

The simulator draws every click from :meth:`Oracle.logit_index`, so the oracle
answers exactly the probability the log was generated with. Its parameters are
saved as ``oracle.npz`` (plain arrays, loaded with ``allow_pickle=False``) and
``oracle.json`` (the scalar coefficients).

True relevance (the click probability at position 0) of user ``u`` for item ``i``
at time ``t``::

    z = b0 + b_aff * (u_u . v_i) + b_int * theta[u, c_i] + b_q * q_i
        + b_fresh * exp(-age_days(i, t) / tau) + nu_u * video_i + b_promo * promoted_i
    relevance = sigmoid(z)
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from recfunnel.errors import DataError
from recfunnel.storage.artifacts import atomic_write_bytes, atomic_write_text

ORACLE_ARRAYS = "oracle.npz"
ORACLE_JSON = "oracle.json"
USER_PREFIX = "u"
ITEM_PREFIX = "i"

#: arrays of ``oracle.npz``: name -> (leading dimension, dtype)
_ARRAY_SPEC = {
    "user_latent": ("users", np.float32),  # (U, d) unit vectors u_u
    "user_interest": ("users", np.float32),  # (U, C) theta, rows sum to 1
    "user_video_affinity": ("users", np.float32),  # (U,) nu_u
    "item_latent": ("items", np.float32),  # (I, d) unit vectors v_i
    "item_category": ("items", np.int32),  # (I,) c_i
    "item_quality": ("items", np.float32),  # (I,) q_i
    "item_publish_time": ("items", np.int64),  # (I,) unix seconds
    "item_is_video": ("items", np.int8),
    "item_promoted": ("items", np.int8),
}

#: scalar coefficients of ``oracle.json``
COEFFICIENTS = ("relevance_bias", "relevance_affinity", "relevance_interest", "relevance_quality",
                "relevance_freshness", "freshness_tau_days", "relevance_promoted",
                "position_bias_exponent", "end_time")

_CHUNK = 1 << 20  # pairs scored at once: bounds the (chunk, d) gathers to a few tens of MB


def format_ids(prefix: str, index: np.ndarray) -> np.ndarray:
    """External ids ``prefix + str(index)`` as a numpy unicode array.

    >>> format_ids("u", np.array([0, 12])).tolist()
    ['u0', 'u12']
    """
    return np.char.add(prefix, np.asarray(index, dtype=np.int64).astype(str))


def parse_ids(prefix: str, ids: np.ndarray | list[str], size: int, kind: str) -> np.ndarray:
    """Indices of simulator ids such as ``"u12"``; raises :class:`DataError` for foreign ids.

    >>> parse_ids("i", ["i3", "i0"], 5, "item").tolist()
    [3, 0]
    """
    values = pd.Series(np.asarray(ids, dtype=object).ravel(), dtype=object).astype(str)
    # canonical spelling only ("i07" is not "i7"): ids are compared as strings elsewhere
    valid = values.str.fullmatch(rf"{prefix}(?:0|[1-9][0-9]{{0,17}})")
    if not valid.all():
        bad = values[~valid].iloc[0]
        raise DataError(f"'{bad}' is not a simulator {kind} id (expected '{prefix}<n>')")
    index = values.str.slice(len(prefix)).astype(np.int64).to_numpy()
    if len(index) and index.max() >= size:
        raise DataError(f"{kind} id '{prefix}{index.max()}' is unknown: the simulation has {size} {kind}s")
    return index


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


class TopItems(NamedTuple):
    """The best items for one user, best first."""

    item_ids: np.ndarray  # (k,) str
    relevance: np.ndarray  # (k,) float64 true relevance


class Oracle:
    """True relevance of a simulated platform.

    Args:
        arrays: the hidden parameters (see ``_ARRAY_SPEC``: user/item latent vectors,
            category interests, quality, publish times, ...).
        coefficients: the scalar coefficients of the relevance equation and ``end_time``.

    Example:
        >>> oracle = Oracle.load(out_dir)  # doctest: +SKIP
        >>> oracle.relevance(np.array(["u0", "u1"]), np.array(["i5", "i5"]))  # doctest: +SKIP
        array([0.061..., 0.213...])
    """

    def __init__(self, arrays: dict[str, np.ndarray], coefficients: dict[str, float]):
        missing = sorted(set(_ARRAY_SPEC) - set(arrays))
        if missing:
            raise DataError(f"oracle arrays lack {', '.join(missing)}")
        missing = sorted(set(COEFFICIENTS) - set(coefficients))
        if missing:
            raise DataError(f"oracle coefficients lack {', '.join(missing)}")
        self.arrays = {name: np.ascontiguousarray(arrays[name], dtype=dtype)
                       for name, (_, dtype) in _ARRAY_SPEC.items()}
        self.coefficients = {name: float(coefficients[name]) for name in COEFFICIENTS}
        n_users, n_items = self.n_users, self.n_items
        for name, (dim, _) in _ARRAY_SPEC.items():
            expected = n_users if dim == "users" else n_items
            if len(self.arrays[name]) != expected:
                raise DataError(f"oracle array '{name}' has {len(self.arrays[name])} rows, expected {expected}")
        if self.arrays["user_latent"].shape[1] != self.arrays["item_latent"].shape[1]:
            raise DataError("oracle user and item latent vectors differ in dimension")

    @property
    def n_users(self) -> int:
        return len(self.arrays["user_latent"])

    @property
    def n_items(self) -> int:
        return len(self.arrays["item_latent"])

    @property
    def end_time(self) -> int:
        """Unix seconds at the end of the simulation: the default time of every query."""
        return int(self.coefficients["end_time"])

    # ---- persistence
    def save(self, out_dir: str | Path) -> None:
        """Write ``oracle.npz`` and ``oracle.json`` into ``out_dir`` atomically."""
        out_dir = Path(out_dir)
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays)
        atomic_write_bytes(out_dir / ORACLE_ARRAYS, buffer.getvalue())
        atomic_write_text(out_dir / ORACLE_JSON, json.dumps(
            {"coefficients": self.coefficients, "user_prefix": USER_PREFIX, "item_prefix": ITEM_PREFIX,
             "arrays": {name: str(np.dtype(dtype)) for name, (_, dtype) in _ARRAY_SPEC.items()}},
            indent=2, sort_keys=True))

    @classmethod
    def load(cls, out_dir: str | Path) -> Oracle:
        """Load the oracle of a simulation directory.

        Args:
            out_dir: the directory ``simulate`` wrote.

        Returns:
            The oracle; raises :class:`DataError` when files are missing or malformed.
        """
        out_dir = Path(out_dir)
        arrays_path, json_path = out_dir / ORACLE_ARRAYS, out_dir / ORACLE_JSON
        for path in (arrays_path, json_path):
            if not path.is_file():
                raise DataError(f"{out_dir} is not a simulation directory: {path.name} is missing")
        try:
            meta = json.loads(json_path.read_text())
            with np.load(arrays_path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (ValueError, OSError, KeyError) as e:
            raise DataError(f"cannot read the oracle in {out_dir}: {e}") from None
        return cls(arrays, meta["coefficients"])

    # ---- relevance
    def logit_index(self, user_index: np.ndarray, item_index: np.ndarray,
                    timestamp: np.ndarray | int | None = None) -> np.ndarray:
        """True relevance logit ``z`` of pairs given by internal indices.

        Args:
            user_index: (N,) int user indices (``u<n>`` has index n).
            item_index: (N,) int item indices.
            timestamp: unix seconds, scalar or (N,); freshness is measured at this time.
                Default: the end of the simulation.

        Returns:
            (N,) float64 logits.
        """
        user_index = np.asarray(user_index, dtype=np.int64)
        item_index = np.asarray(item_index, dtype=np.int64)
        if user_index.shape != item_index.shape or user_index.ndim != 1:
            raise ValueError(f"user_index {user_index.shape} and item_index {item_index.shape} must be equal 1-d shapes")
        if timestamp is None:
            timestamp = self.end_time
        timestamp = np.broadcast_to(np.asarray(timestamp, dtype=np.int64), user_index.shape)
        out = np.empty(len(user_index), dtype=np.float64)
        for lo in range(0, len(user_index), _CHUNK):
            hi = lo + _CHUNK
            out[lo:hi] = self._logit(user_index[lo:hi], item_index[lo:hi], timestamp[lo:hi])
        return out

    def _logit(self, u: np.ndarray, i: np.ndarray, t: np.ndarray) -> np.ndarray:
        a, c = self.arrays, self.coefficients
        affinity = np.einsum("nd,nd->n", a["user_latent"][u].astype(np.float64),
                             a["item_latent"][i].astype(np.float64))
        interest = a["user_interest"][u, a["item_category"][i]].astype(np.float64)
        age_days = np.maximum(t - a["item_publish_time"][i], 0) / 86_400.0
        z = (c["relevance_bias"]
             + c["relevance_affinity"] * affinity
             + c["relevance_interest"] * interest
             + c["relevance_quality"] * a["item_quality"][i].astype(np.float64)
             + c["relevance_freshness"] * np.exp(-age_days / c["freshness_tau_days"])
             + a["user_video_affinity"][u].astype(np.float64) * a["item_is_video"][i]
             + c["relevance_promoted"] * a["item_promoted"][i])
        return z

    def relevance(self, user_ids: np.ndarray | list[str], item_ids: np.ndarray | list[str],
                  timestamp: np.ndarray | int | None = None) -> np.ndarray:
        """True relevance: the probability of a click at position 0.

        Args:
            user_ids: (N,) str user ids (``"u12"``).
            item_ids: (N,) str item ids (``"i345"``), paired with ``user_ids``.
            timestamp: unix seconds (scalar or (N,)) at which freshness is measured;
                default the end of the simulation. Defined for any pair, also for
                items not yet published at ``timestamp``.

        Returns:
            (N,) float64 in [0, 1].
        """
        u = parse_ids(USER_PREFIX, user_ids, self.n_users, "user")
        i = parse_ids(ITEM_PREFIX, item_ids, self.n_items, "item")
        if len(u) != len(i):
            raise ValueError(f"{len(u)} user ids but {len(i)} item ids")
        return sigmoid(self.logit_index(u, i, timestamp))

    def click_probability(self, user_ids: np.ndarray | list[str], item_ids: np.ndarray | list[str],
                          positions: np.ndarray, timestamp: np.ndarray | int | None = None) -> np.ndarray:
        """Probability of a click when shown at ``positions``: examine(p) * relevance.

        Args:
            user_ids, item_ids: (N,) str ids.
            positions: (N,) int slate positions (0 = top).
            timestamp: as in :meth:`relevance`.

        Returns:
            (N,) float64.
        """
        examine = (1.0 + np.asarray(positions, dtype=np.float64)) ** -self.coefficients["position_bias_exponent"]
        return examine * self.relevance(user_ids, item_ids, timestamp)

    def top_items(self, user_id: str, k: int, candidates: np.ndarray | list[str] | None = None,
                  timestamp: int | None = None) -> TopItems:
        """The ``k`` most relevant items for one user.

        Args:
            user_id: e.g. ``"u12"``.
            k: how many items.
            candidates: item ids to choose from; default every item published by ``timestamp``.
            timestamp: unix seconds; default the end of the simulation.

        Returns:
            ``TopItems(item_ids, relevance)``, best first, ties broken by the smaller item index;
            fewer than ``k`` when there are fewer candidates.
        """
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        t = self.end_time if timestamp is None else int(timestamp)
        if candidates is None:
            item_index = np.flatnonzero(self.arrays["item_publish_time"] <= t)
        else:
            item_index = np.unique(parse_ids(ITEM_PREFIX, candidates, self.n_items, "item"))
        user_index = parse_ids(USER_PREFIX, [user_id], self.n_users, "user")
        z = self.logit_index(np.repeat(user_index, len(item_index)), item_index, t)
        k = min(k, len(item_index))
        if k == 0:
            return TopItems(np.array([], dtype=str), np.array([], dtype=np.float64))
        best = np.argpartition(-z, k - 1)[:k] if k < len(z) else np.arange(len(z))
        # lexsort: last key is primary -> sort by -z, then by item index for stable ties
        best = best[np.lexsort((item_index[best], -z[best]))]
        return TopItems(format_ids(ITEM_PREFIX, item_index[best]), sigmoid(z[best]))
