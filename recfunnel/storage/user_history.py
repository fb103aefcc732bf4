"""Per-user interaction histories, and the requests built from them.

The store answers "the last N items of these users strictly before time t" for
a whole batch with two ``searchsorted`` calls, which is how both the offline
path (training samples as of a holdout time) and the online path (a request
now) get their :class:`~recfunnel.types.RequestBatch`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recfunnel.data.interactions import Interactions
from recfunnel.types import RequestBatch


class UserHistoryStore:
    """In-memory history of positive events, sorted by (user, time).

    Args:
        interactions: the events; ties in time keep their original order.
    """

    def __init__(self, interactions: Interactions):
        self.n_users = interactions.n_users
        self.n_items = interactions.n_items
        t = interactions.timestamp.astype(np.int64)
        self.t_min = int(t.min()) if len(t) else 0
        self.now = int(t.max()) + 1 if len(t) else 1
        self.span = self.now - self.t_min + 3
        combined = interactions.user_index.astype(np.int64) * self.span + (t - self.t_min + 1)
        order = np.argsort(combined, kind="stable")
        self._combined = combined[order]
        self.items = interactions.item_index[order].astype(np.int64)
        self.times = t[order]
        self.seen = interactions.to_csr(binary=True)  # (n_users, n_items), all stored events

    def event_users(self) -> np.ndarray:
        """(N,) user index of each stored event, in storage order."""
        return (self._combined // self.span).astype(np.int64)

    def _positions(self, users: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each (user, time): [lo, hi) range of that user's events strictly before ``time``."""
        u = np.where(users >= 0, users, 0)
        shifted = np.clip(times - self.t_min + 1, 0, self.span - 1)
        lo = np.searchsorted(self._combined, u * self.span, side="left")
        hi = np.searchsorted(self._combined, u * self.span + shifted, side="left")
        hi = np.where(users >= 0, hi, lo)
        return lo, hi

    def request(
        self,
        user_index: np.ndarray,
        *,
        time: np.ndarray | int | None = None,
        history_length: int = 100,
        exclude_seen: bool = True,
        extra_exclude: sp.csr_matrix | None = None,
        context: dict[str, np.ndarray] | None = None,
    ) -> RequestBatch:
        """Build a request batch.

        Args:
            user_index: (B,) int64, -1 for unknown users (empty history).
            time: (B,) or scalar request time; defaults to just after the newest event.
            history_length: L, the number of most recent items kept (newest first).
            exclude_seen: exclude every item the user had strictly before the request time
                (at the default time: every training item).
            extra_exclude: (B, n_items) further items to exclude (business filters).
        """
        users = np.asarray(user_index, np.int64)
        b = len(users)
        if time is None:
            times = np.full(b, self.now, np.int64)
        else:
            times = np.broadcast_to(np.asarray(time, np.int64), (b,)).copy()
        lo, hi = self._positions(users, times)
        offsets = hi[:, None] - 1 - np.arange(history_length)[None, :]
        valid = offsets >= lo[:, None]
        safe = np.where(valid, offsets, 0)
        history = np.where(valid, self.items[safe] if len(self.items) else -1, -1).astype(np.int64)
        history_time = np.where(valid, self.times[safe] if len(self.times) else 0, 0).astype(np.int64)
        if exclude_seen:
            # every item the user had strictly before the request time, segment by segment
            count = hi - lo
            indptr = np.concatenate([[0], np.cumsum(count)])
            flat = np.arange(indptr[-1]) - np.repeat(indptr[:-1] - lo, count)
            exclude = sp.csr_matrix((np.ones(len(flat), np.float32), self.items[flat], indptr),
                                    shape=(b, self.n_items))
            exclude.sum_duplicates()
            exclude.data[:] = 1.0
        else:
            exclude = sp.csr_matrix((b, self.n_items), dtype=np.float32)
        if extra_exclude is not None:
            exclude = ((exclude + extra_exclude) > 0).astype(np.float32).tocsr()
        return RequestBatch(users, times, history, history_time, exclude.tocsr(), dict(context or {}))
