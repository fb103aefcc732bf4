"""User-based collaborative filtering (UserCF): items liked by users who look like you.

The similarity of two users is a cosine over their items with the item-popularity
penalty of Xiang Liang, *Recommender System Practice*, ch. 2.2.2 ("User-IIF"),
which says that sharing a niche item means more than sharing a blockbuster:

    sim(u, v) = sum_{i in I_u ∩ I_v} h_ui * p_i / (||h_u|| * ||x_v||),   p_i = 1 / log(1 + |U_i|)

and a user's score for an item is ``score(u, i) = sum_{v in N(u)} sim(u, v) * x_vi``
over the ``neighbours`` most similar users ``N(u)`` (Resnick et al., CSCW 1994).

Neighbours are found **at request time**: ``h_u`` is built from ``request.history``
(binary or recency-weighted, newest first), never from the training matrix, so an
online event changes the neighbours at once and a point-in-time request never sees
the user's own future. The requesting user's own training row is never its own
neighbour (it would leak that future). Against the fitted user-item matrix ``X``:

1. ``sim = (H @ P_idx) / ||h||`` with ``P_idx[i, v] = p_i / ||x_v||`` for the (at most
   ``max_item_users`` most recent) users of item i: a sparse (B, n_users) product;
2. keep the top ``neighbours`` per row;
3. ``scores = sim_top @ X``, drop ``request.exclude``, top-k per row.

Cost per request row: step 1 multiplies ``sum_{h in history} min(|U_h|, max_item_users)``
pairs (history items x their users), step 3 ``neighbours * max_user_items``; rows are
processed in chunks whose cost is bounded (about 2**24 multiply-adds), so memory stays
at tens of MB per chunk whatever the batch size; picking the neighbours is linear in the
users a row reached (a dense partition once a row reaches a quarter of all users). Fit is
linear in the events (a sort and two sparse matrices); the stored state is ``X`` (CSR,
binary: event weights are not used), its norms, the item penalties and the search index.
Measured on 2 shared cores, 20k users x 10k items x 500k power-law events: fit 0.5 s,
about 1 ms per request (batches of 2000, 50 history items, k = 200).

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> usercf = UserCFRetriever(UserCFConfig(neighbours=10)).fit(data)
>>> usercf.user_items_.shape
(40, 30)
>>> out = usercf.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
>>> bool((out.item_index[out.valid] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.data.interactions import Interactions
from recfunnel.errors import ConfigError
from recfunnel.stages.base import EventBatch, Incremental, NewItems, Retriever
from recfunnel.stages.recall.sparse import exclusion_mask, keep_top_k_per_row, sparse_top_k
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import Candidates, RequestBatch

_SECONDS_PER_DAY = 86_400.0

#: multiply-adds per chunk of request rows; bounds retrieval memory to tens of MB
_CHUNK_PRODUCTS = 1 << 24
#: entries of one dense row block in :func:`top_k_rows` (32 MB of float64)
_DENSE_ENTRIES = 1 << 22
#: history items read (``EventBatch.history_before``) for the row of a nearline-only user
_EVENT_HISTORY = 1000


def item_set_hash(sets: sp.csr_matrix) -> np.ndarray:
    """(R,) uint64 hash of each row's set of columns: the XOR of a splitmix64 code per column.

    Order-free and additive under XOR (adding column j to a set XORs its code in), so the
    row a nearline-only user had before an event is found from the history before it.
    """
    codes = _splitmix64(sets.indices.astype(np.uint64))
    out = np.zeros(sets.shape[0], np.uint64)
    filled = np.diff(sets.indptr) > 0
    if filled.any():
        out[filled] = np.bitwise_xor.reduceat(codes, sets.indptr[:-1][filled])
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al., OOPSLA 2014): well-mixed 64-bit codes of ``x``."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class UserCFConfig:
    """Options of :class:`UserCFRetriever`.

    Attributes:
        neighbours: most similar training users that vote for each request.
        recency: weight of a history item in the request's profile: "none" 1 (binary,
            the classic UserCF), "position" 1 / (1 + recency_decay * pos) (pos 0 = newest),
            "time" 2 ** (-age_days / half_life_days). A repeated item keeps its newest weight.
        recency_decay: slope of the "position" weights.
        half_life_days: half-life of the "time" weights.
        item_popularity_penalty: weight shared items by 1 / log(1 + |U_i|) (User-IIF).
        max_user_items: keep each training user's most recent items only (None: all);
            bounds the cost of step 3 to ``neighbours * max_user_items`` per request.
        max_item_users: search each item's most recent users only (None: all); bounds the
            neighbour search of a history item to this many users.
    """

    neighbours: int = 50
    recency: Literal["position", "time", "none"] = "none"
    recency_decay: float = 0.1
    half_life_days: float = 7.0
    item_popularity_penalty: bool = True
    max_user_items: int | None = 1000
    max_item_users: int | None = 1000


def latest_unique_events(interactions: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs with the time of their newest event, newest first per user.

    Returns:
        (user, item, timestamp): (E,) int64 arrays sorted by user, then time descending
        (ties: higher item first, so the order is deterministic).
    """
    user = interactions.user_index.astype(np.int64)
    item = interactions.item_index.astype(np.int64)
    time = interactions.timestamp.astype(np.int64)
    order = np.lexsort((-item, -time, user))
    user, item, time = user[order], item[order], time[order]
    # the first row of each (user, item) in this order is its newest event
    key = user * max(interactions.n_items, 1) + item
    _, first = np.unique(key, return_index=True)
    first.sort()
    return user[first], item[first], time[first]


def rank_within(groups: np.ndarray) -> np.ndarray:
    """0-based position of every element inside its run of equal ``groups`` values.

    >>> rank_within(np.array([3, 3, 5, 5, 5, 7])).tolist()
    [0, 1, 0, 1, 2, 0]
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, lengths)


def request_profile(request: RequestBatch, n_items: int, recency: str, recency_decay: float,
                    half_life_days: float) -> sp.csr_matrix:
    """(B, n_items) CSR profile of each request's point-in-time history.

    Weights follow ``recency`` (see :class:`UserCFConfig`); a repeated item keeps the
    weight of its newest occurrence; items outside ``0..n_items-1`` and padding are dropped.
    """
    history = request.history
    valid = (history >= 0) & (history < n_items)
    if recency == "position":
        weight = np.broadcast_to(1.0 / (1.0 + recency_decay * np.arange(history.shape[1])), history.shape)
    elif recency == "time":
        age_days = np.maximum(request.time[:, None] - request.history_time, 0) / _SECONDS_PER_DAY
        weight = np.exp2(-age_days / half_life_days)
    else:
        weight = np.ones(history.shape)
    rows = np.broadcast_to(np.arange(len(request), dtype=np.int64)[:, None], history.shape)
    rows, items, weight = rows[valid], history[valid].astype(np.int64), weight[valid]
    # row-major order puts the newest occurrence first: np.unique keeps its index
    _, first = np.unique(rows * max(n_items, 1) + items, return_index=True)
    return sp.csr_matrix((weight[first], (rows[first], items[first])), shape=(len(request), n_items))


def top_k_rows(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """:func:`keep_top_k_per_row` for positive scores, fast on dense and on skewed rows.

    Same result and tie rule (lower column first). Two cases would otherwise be slow:

    * rows filled at least a quarter (a request's similar users or scored items often
      cover much of the catalogue): each row is first cut at its k-th largest value
      with a dense ``np.partition`` (linear), in row blocks of ``_DENSE_ENTRIES``;
    * rows of very different lengths (a similarity block: a few popular items with
      thousands of entries, most with none): the blocked top-k pads every row to the
      widest of its block, so the rows are handed over sorted by length.
    """
    m = sp.csr_matrix(matrix)
    n_rows, n_cols = m.shape
    if k <= 0 or m.nnz == 0:
        return sp.csr_matrix(m.shape, dtype=m.dtype)
    if k < n_cols and 4 * m.nnz >= n_rows * n_cols:
        step = max(1, _DENSE_ENTRIES // n_cols)
        threshold = np.concatenate([  # a loop over row blocks
            np.partition(m[lo:lo + step].toarray(), n_cols - k, axis=1)[:, n_cols - k]
            for lo in range(0, n_rows, step)
        ])
        rows = np.repeat(np.arange(n_rows), np.diff(m.indptr))
        keep = m.data >= threshold[rows]  # ties at the threshold survive: the exact pass breaks them
        indptr = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=n_rows))]
        m = sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)
    by_length = np.argsort(np.diff(m.indptr), kind="stable")
    pruned = keep_top_k_per_row(m[by_length], k)
    return pruned[np.argsort(by_length)]


class UserCFRetriever(Retriever, Incremental):
    """Items of the training users most similar to the request's history.

    Nearline (:class:`~recfunnel.stages.base.Incremental`, :meth:`observe`): known users'
    positive events add their items to their rows of ``X``, a nearline-only user gets a
    row of their own (their history), and the norms, penalties and search index follow,
    so a new item is reachable through the users who took it and new users are
    neighbours at once. ``save`` writes the fitted state only.

    Learned attributes:
        user_items_: (n_users, n_items) CSR float32 binary ``X`` (each user's most recent
            ``max_user_items`` distinct items).
        user_norms_: (n_users,) float32 ``||x_v|| = sqrt(|I_v|)`` (0 for users without items).
        item_penalty_: (n_items,) float32 ``p_i`` (1 when the penalty is off).
        item_users_: (n_items, n_users) CSR float32 search index, ``p_i / ||x_v||`` for the
            ``max_item_users`` most recent users of item i.
    """

    kind = "usercf"

    def __init__(self, config: UserCFConfig | None = None, name: str | None = None):
        super().__init__(config or UserCFConfig(), name)

    def _validate(self) -> None:
        cfg = self.config
        if cfg.recency not in ("position", "time", "none"):
            raise ConfigError(f"usercf: recency must be 'position', 'time' or 'none', got '{cfg.recency}'")
        if cfg.neighbours < 1:
            raise ConfigError(f"usercf: neighbours must be >= 1, got {cfg.neighbours}")
        for field in ("max_user_items", "max_item_users"):
            value = getattr(cfg, field)
            if value is not None and value < 1:
                raise ConfigError(f"usercf: {field} must be >= 1 or None, got {value}")
        if cfg.recency_decay < 0 or not cfg.half_life_days > 0:
            raise ConfigError("usercf: recency_decay must be >= 0 and half_life_days > 0")

    def fit(self, data: TrainingData) -> Self:
        """Store the capped user-item matrix, its norms and the item -> users search index."""
        self._validate()
        cfg = self.config
        n_users, n_items = data.n_users, data.n_items
        user, item, time = latest_unique_events(data.interactions)
        if cfg.max_user_items is not None:  # rows are newest first per user
            keep = rank_within(user) < cfg.max_user_items
            user, item, time = user[keep], item[keep], time[keep]
        x = sp.csr_matrix((np.ones(len(user), np.float32), (user, item)), shape=(n_users, n_items))
        x.sort_indices()
        norms = np.sqrt(np.diff(x.indptr).astype(np.float64))
        users_per_item = np.bincount(item, minlength=n_items).astype(np.float64)
        if cfg.item_popularity_penalty:
            penalty = 1.0 / np.log1p(np.maximum(users_per_item, 1.0))
        else:
            penalty = np.ones(n_items)
        # the search index keeps each item's most recent users: a blockbuster's millionth
        # fan adds cost but (with the penalty) almost nothing to anyone's similarity
        order = np.lexsort((user, -time, item))
        item_sorted, user_sorted = item[order], user[order]
        if cfg.max_item_users is not None:
            keep = rank_within(item_sorted) < cfg.max_item_users
            item_sorted, user_sorted = item_sorted[keep], user_sorted[keep]
        self.user_items_ = x
        self.user_norms_ = norms.astype(np.float32)
        self.item_penalty_ = penalty.astype(np.float32)
        self.item_users_ = self._search_index(item_sorted, user_sorted)
        self._set_fitted(item_sorted, user_sorted)
        return self

    def _set_fitted(self, index_item: np.ndarray, index_user: np.ndarray) -> None:
        """Remember the fitted state (what :meth:`save` writes) and start with no nearline rows."""
        self._fitted = (self.user_items_, self.user_norms_, self.item_penalty_, self.item_users_)
        self._n_fitted_users = self.user_items_.shape[0]
        self._index_pairs = (index_item.astype(np.int64), index_user.astype(np.int64))  # fitted (item, user)
        self._added = (np.zeros(0, np.int64), np.zeros(0, np.int64))  # known users' nearline (user, item)
        self._row_hash = np.zeros(0, np.uint64)  # item-set hash of each nearline-only row

    # ------------------------------------------------------------ nearline
    def publish(self, items: NewItems) -> bool:
        """New items are taken; they are reached through the users whose events take them."""
        return True

    def observe(self, events: EventBatch) -> None:
        """Add positive events to ``X``: known users' rows grow, nearline-only users get rows.

        A nearline-only user (``user_index`` -1) is the set of their items: an event replaces
        the row equal to their history before it (found by :func:`item_set_hash`; none for a
        first event) by that history plus the item, so a chain of events leaves one row per
        user, equal to the row a refit would give them (up to ``max_user_items``). Norms,
        penalties and the search index are recomputed as at fit, except that the caps
        (``max_user_items``, ``max_item_users``) keep the fitted rows and add the nearline
        entries on top (the event times that would choose the most recent are not kept).
        Such users need ``history_before`` (without it their events are skipped).

        Cost per batch: the batch's history rows plus vectorised rebuilds of ``X``, the
        norms, penalties and search index (linear in their entries).
        """
        events = events.take(events.positive)
        if len(events) == 0:
            return
        x = self.user_items_
        n_items = max(x.shape[1], int(events.item_index.max()) + 1)
        x = sp.csr_matrix((x.data, x.indices, x.indptr), shape=(x.shape[0], n_items))
        user, item = events.user_index, events.item_index
        known = (user >= 0) & (user < self._n_fitted_users)
        pairs = np.unique(user[known] * n_items + item[known])
        new_user, new_item = pairs // n_items, pairs % n_items
        fresh = np.asarray(x[new_user, new_item]).ravel() == 0 if len(pairs) else np.zeros(0, bool)
        new_user, new_item = new_user[fresh], new_item[fresh]
        drop, rows = self._nearline_rows(events.take(user < 0), n_items)
        if len(new_user) == 0 and len(drop) == 0 and rows.shape[0] == 0:
            return
        alive = np.ones(x.shape[0], np.float32)
        alive[drop] = 0.0
        # a replaced row keeps its slot; rows beyond the replaced ones are appended
        reused = min(len(drop), rows.shape[0])
        placed = rows[:reused].tocoo()
        added = sp.csr_matrix((np.ones(len(new_user) + placed.nnz, np.float32),
                               (np.r_[new_user, drop[:reused][placed.row]], np.r_[new_item, placed.col])),
                              shape=x.shape)
        x = sp.vstack([sp.diags(alive) @ x + added, rows[reused:]], format="csr")
        x.data[:] = 1.0
        x.sort_indices()
        self._added = (np.r_[self._added[0], new_user], np.r_[self._added[1], new_item])
        row_hash = np.where(alive[self._n_fitted_users:] > 0, self._row_hash, 0).astype(np.uint64)
        row_hash[drop[:reused] - self._n_fitted_users] = item_set_hash(rows[:reused])
        self._row_hash = np.r_[row_hash, item_set_hash(rows[reused:])].astype(np.uint64)
        self._swap(x)

    def _nearline_rows(self, events: EventBatch, n_items: int) -> tuple[np.ndarray, sp.csr_matrix]:
        """Rows of nearline-only users to drop, and the (r, n_items) rows that replace them."""
        empty = np.zeros(0, np.int64), sp.csr_matrix((0, n_items), dtype=np.float32)
        if len(events) == 0 or events.history_before is None:
            return empty
        history = events.history_before(np.arange(len(events)), _EVENT_HISTORY).history
        valid = (history >= 0) & (history < n_items)
        rows = np.broadcast_to(np.arange(len(events))[:, None], history.shape)
        before = sp.csr_matrix((np.ones(int(valid.sum()), np.float32), (rows[valid], history[valid])),
                               shape=(len(events), n_items))
        before.sum_duplicates()
        before.data[:] = 1.0
        grows = np.asarray(before[np.arange(len(events)), events.item_index]).ravel() == 0
        if not grows.any():
            return empty
        before, item = before[grows], events.item_index[grows]
        after = (before + sp.csr_matrix((np.ones(len(item), np.float32), (np.arange(len(item)), item)),
                                        shape=before.shape)).tocsr()
        old_hash, new_hash = item_set_hash(before), item_set_hash(after)
        # a chain inside the batch: a row added by one event and replaced by the next cancels out
        had_row = np.diff(before.indptr) > 0
        values = np.r_[new_hash, old_hash[had_row]]
        signs = np.r_[np.ones(len(new_hash), np.int64), -np.ones(int(had_row.sum()), np.int64)]
        unique, inverse = np.unique(values, return_inverse=True)
        net = np.bincount(inverse, weights=signs, minlength=len(unique))
        first_of = np.full(len(unique), -1, np.int64)
        first_of[inverse[:len(new_hash)][::-1]] = np.arange(len(new_hash))[::-1]
        keep = net[inverse[:len(new_hash)]] > 0
        keep &= first_of[inverse[:len(new_hash)]] == np.arange(len(new_hash))
        gone = unique[net < 0]
        stored = self._row_hash
        found = np.flatnonzero(np.isin(stored, gone) & (stored != 0))
        # one stored row per hash that left (equal sets are equal rows: any one will do)
        _, one = np.unique(stored[found], return_index=True)
        return self._n_fitted_users + found[one], after[np.flatnonzero(keep)].astype(np.float32)

    def _swap(self, x: sp.csr_matrix) -> None:
        """Recompute the norms, penalties and search index for ``x`` and swap them in."""
        cfg = self.config
        n_rows, n_items = x.shape
        users_per_item = np.bincount(x.indices, minlength=n_items).astype(np.float64)
        penalty = 1.0 / np.log1p(np.maximum(users_per_item, 1.0)) if cfg.item_popularity_penalty else np.ones(n_items)
        pseudo = x[self._n_fitted_users:].tocoo()
        item = np.r_[self._index_pairs[0], self._added[1], pseudo.col]
        user = np.r_[self._index_pairs[1], self._added[0], pseudo.row + self._n_fitted_users]
        index = sp.csr_matrix((np.ones(len(item), np.float32), (item, user)), shape=(n_items, n_rows))
        index.sum_duplicates()
        index_item = np.repeat(np.arange(n_items), np.diff(index.indptr))
        norms = np.sqrt(np.diff(x.indptr).astype(np.float64)).astype(np.float32)
        value = penalty[index_item] / np.maximum(norms[index.indices], 1e-12)
        index.data = value.astype(np.float32)
        self.user_items_, self.user_norms_, self.item_penalty_ = x, norms, penalty.astype(np.float32)
        self.item_users_ = index

    def _search_index(self, item: np.ndarray, user: np.ndarray) -> sp.csr_matrix:
        """(n_items, n_users) CSR with ``p_i / ||x_v||`` at each kept (item, user)."""
        n_users, n_items = self.user_items_.shape
        value = self.item_penalty_[item].astype(np.float64) / self.user_norms_[user]
        index = sp.csr_matrix((value.astype(np.float32), (item, user)), shape=(n_items, n_users))
        index.sort_indices()
        return index

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Items of each request's nearest training users, minus ``request.exclude``.

        Args:
            request: B users; ``history``, ``history_time``, ``time``, ``user_index`` and
                ``exclude`` are used.
            k: items per user.

        Returns:
            (B, <=k) candidates scored by ``sum_v sim(u, v) x_vi``; users whose history
            finds no neighbour get padding.
        """
        cfg = self.config
        n_users, n_items = self.user_items_.shape
        if k <= 0 or len(request) == 0:
            empty = np.zeros((len(request), 0), np.float32)
            return Candidates(np.zeros((len(request), 0), np.int64), empty, {self.name: empty})
        profile = request_profile(request, n_items, cfg.recency, cfg.recency_decay, cfg.half_life_days)
        # chunk the rows so each chunk's two products stay near _CHUNK_PRODUCTS multiply-adds
        search_cost = (profile != 0).astype(np.float64) @ np.diff(self.item_users_.indptr).astype(np.float64)
        max_items = float(np.diff(self.user_items_.indptr).max(initial=0))
        row_cost = search_cost + cfg.neighbours * max_items + 1.0
        chunk = ((np.cumsum(row_cost) - row_cost) // _CHUNK_PRODUCTS).astype(np.int64)
        bounds = np.r_[0, np.flatnonzero(np.diff(chunk)) + 1, len(request)]
        blocks = [
            self._score_rows(profile[lo:hi], request.user_index[lo:hi], request.exclude[lo:hi], k)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo
        ]
        scores = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((len(request), n_items))
        items, score = sparse_top_k(scores, k)
        return Candidates(items, score, {self.name: score})

    def _score_rows(self, profile: sp.csr_matrix, user_index: np.ndarray, exclude: sp.csr_matrix,
                    k: int) -> sp.csr_matrix:
        """(b, n_items) CSR of the best ``k`` non-excluded item scores of a chunk of rows."""
        profile = sp.csr_matrix(profile, dtype=np.float64)
        norm = np.sqrt(np.asarray(profile.multiply(profile).sum(axis=1)).ravel())
        sim = (sp.diags(1.0 / np.maximum(norm, 1e-12)) @ profile @ self.item_users_).tocsr()
        rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        # a training user is never their own neighbour: their row holds their future
        own = sim.indices == user_index[rows]
        row_hash = self._row_hash
        if len(row_hash) and (user_index < 0).any():
            # nor is a nearline-only user, whose row is the set of their history items
            pseudo = sim.indices - self._n_fitted_users
            candidate = (pseudo >= 0) & (user_index[rows] < 0)
            history_hash = item_set_hash(profile)[rows[candidate]]
            own[candidate] = row_hash[np.minimum(pseudo[candidate], len(row_hash) - 1)] == history_hash
        sim.data[own] = 0.0
        sim.eliminate_zeros()
        neighbours = top_k_rows(sim, self.config.neighbours)
        scores = (neighbours @ self.user_items_).tocsr()  # a product has no duplicates
        rows = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
        scores.data[exclusion_mask(exclude, rows, scores.indices)] = 0.0
        scores.eliminate_zeros()
        return top_k_rows(scores, k)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        x, norms, penalty, index = self._fitted
        writer.write_arrays(f"{prefix}usercf.npz", {
            "user_items_indices": x.indices, "user_items_indptr": x.indptr,
            "item_users_indices": index.indices, "item_users_indptr": index.indptr,
            "shape": np.array(x.shape, np.int64),
            "user_norms": norms, "item_penalty": penalty,
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any,
             name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}usercf.npz")
        n_users, n_items = (int(v) for v in arrays["shape"])
        stage = cls(config, name)
        indices = arrays["user_items_indices"]
        stage.user_items_ = sp.csr_matrix((np.ones(len(indices), np.float32), indices,
                                           arrays["user_items_indptr"]), shape=(n_users, n_items))
        stage.user_norms_ = arrays["user_norms"].astype(np.float32)
        stage.item_penalty_ = arrays["item_penalty"].astype(np.float32)
        indptr = arrays["item_users_indptr"]
        item = np.repeat(np.arange(n_items), np.diff(indptr))
        stage.item_users_ = stage._search_index(item, arrays["item_users_indices"].astype(np.int64))
        stage._set_fitted(item, arrays["item_users_indices"])
        return stage
