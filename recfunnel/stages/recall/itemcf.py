"""Item-based collaborative filtering (ItemCF): items liked by the same users are similar.

Fit builds a sparse item-item similarity ``S`` from co-occurrence (Sarwar et al.,
WWW 2001; the IUF user-activity penalty and max-normalisation follow Xiang Liang,
*Recommender System Practice*, ch. 2.4):

* ``c_ij = sum_u x_ui x_uj / log(1 + |I_u|)``: a user with many items says little
  about any pair of them (set ``user_activity_penalty=False`` for plain counts);
* cosine ``c_ij / sqrt(n_i n_j)`` or Jaccard ``c_ij / (n_i + n_j - n'_ij)``, with
  ``n_i`` the users of item i and ``n'_ij`` the unweighted co-occurrence count;
* the diagonal is dropped, each row keeps its ``neighbours`` best entries and is
  optionally divided by its maximum (so every history item votes on the same scale).

Two fit paths compute the same ``S``. Cosine (with or without IUF, no
``min_cooccurrence``) runs through ``implicit``'s C++ item-item kernel
(``all_pairs_knn``, float64, multi-threaded, as its ``CosineRecommender``) on
``X`` scaled to ``sqrt(w_u) / sqrt(n_i)``, whose plain dot product is the cosine
above; the kernel's per-row top-k is re-cut here with the exact tie rule (rows
where a tie reaches past the kernel's cut are recomputed by the scipy path).
Jaccard, ``min_cooccurrence > 1`` and catalogues whose kernel output would exceed
``_KERNEL_MAX_SLOTS`` take the blocked scipy path: ``X^T D X`` in row blocks
bounded by their multiply-adds, each pruned with
:func:`~recfunnel.stages.recall.sparse.keep_top_k_per_row`. Both paths choose
neighbours on values rounded to float32 (the precision ``S`` is stored in), the
lower column first among equal values, so that sums equal in exact arithmetic but
rounded differently by the two paths' summation orders still tie. They give the
same neighbours and scores equal to float rounding; ``fit_path_`` says which ran.

Retrieval reads the user's point-in-time history from the request (online events
count at once): ``scores = H @ S`` with ``H`` the recency weights of the history,
then exclusions and a per-row top-k, all on sparse matrices.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> itemcf = ItemCFRetriever(ItemCFConfig(neighbours=20)).fit(data)
>>> itemcf.similarity_.shape
(30, 30)
>>> out = itemcf.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
>>> bool((out.item_index[0] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError
from recfunnel.stages.base import EventBatch, Incremental, NewItems
from recfunnel.stages.recall.item2item import ItemToItemRetriever
from recfunnel.stages.recall.sparse import keep_top_k_per_row
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter

_SECONDS_PER_DAY = 86_400.0

#: multiply-adds per block of the co-occurrence product; bounds fit memory to about 1 GB
_BLOCK_PRODUCTS = 1 << 24

#: largest output of the C++ kernel, in slots (items with users x (neighbours + 1 + margin),
#: 16 bytes each): 2**28 slots is 4 GiB (1M items with users at 200 neighbours: 3.5 GiB);
#: above it the blocked scipy path runs, whose memory is bounded by its blocks
_KERNEL_MAX_SLOTS = 1 << 28
#: cells of the kernel's output cut to top-k at once (bounds the temporaries to ~300 MB)
_KERNEL_BLOCK_CELLS = 1 << 22
#: extra neighbours asked of the kernel beyond ``neighbours + 1`` (at least; ``neighbours // 8``
#: otherwise), so that ties at the cut rarely reach past what it returns
_KERNEL_MIN_MARGIN = 32
#: relative rounding slack between the kernel's and the scipy path's float64 sums
_TIE_TOLERANCE = 1e-9


def _stored_precision(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float32 (the precision ``similarity_`` is stored in), as float64.

    Neighbours are chosen on these values, so entries equal in exact arithmetic, whose
    float64 sums differ in the last bits with the order of summation (the scipy path and
    the kernel add the same terms in different orders and scalings), are ties in both
    paths, broken by the lower column.
    """
    return np.asarray(values, np.float64).astype(np.float32).astype(np.float64)


@dataclass(frozen=True)
class ItemCFConfig:
    """Options of :class:`ItemCFRetriever`.

    Attributes:
        similarity: "cosine" or "jaccard".
        neighbours: similar items kept per item (top-k pruning of each row of S).
        user_activity_penalty: weight each user's co-occurrences by 1 / log(1 + |I_u|) (IUF).
        recency: weight of a history item: "position" 1 / (1 + recency_decay * pos)
            (pos 0 = newest), "time" 2 ** (-age_days / half_life_days), "none" 1.
        recency_decay: slope of the "position" weights.
        half_life_days: half-life of the "time" weights.
        normalize: divide each row of S by its maximum.
        min_cooccurrence: drop pairs seen together by fewer users than this.
        use_kernel: compute cosine similarity with ``implicit``'s C++ item-item kernel when
            it can express the config (cosine, ``min_cooccurrence == 1``) and the catalogue
            fits its memory budget; the result is the same as the scipy path's (same
            neighbours, scores equal to float64 rounding). False: always the scipy path.
    """

    similarity: Literal["cosine", "jaccard"] = "cosine"
    neighbours: int = 200
    user_activity_penalty: bool = True
    recency: Literal["position", "time", "none"] = "position"
    recency_decay: float = 0.1
    half_life_days: float = 7.0
    normalize: bool = True
    min_cooccurrence: int = 1
    use_kernel: bool = True


class ItemCFRetriever(ItemToItemRetriever, Incremental):
    """Items similar to the user's recent history.

    Learned attributes:
        similarity_: (n_items, n_items) CSR float32, sorted indices; row i holds
            item i's neighbours (at most ``neighbours``, no diagonal).
        user_items_: (n_users, n_items) CSR float32 binary ``X``, the training positives
            ``similarity_`` was computed from (kept for the nearline updates).
        fit_path_: "kernel" or "scipy", the path that computed ``similarity_``.
        kernel_recomputed_rows_: rows the kernel path handed to the scipy path (ties at its cut).

    As an :class:`~recfunnel.stages.base.Incremental` stage, :meth:`publish` grows the
    catalogue and :meth:`observe` adds the positive events of known users to ``X`` and
    recomputes exactly the rows of ``S`` a refit on the training data plus those events
    would change (see :meth:`observe`); ``save`` still writes the fitted ``S`` and ``X``.
    """

    kind = "itemcf"

    def __init__(self, config: ItemCFConfig | None = None, name: str | None = None):
        super().__init__(config or ItemCFConfig(), name)

    def _validate(self) -> None:
        cfg = self.config
        if cfg.similarity not in ("cosine", "jaccard"):
            raise ConfigError(f"itemcf: similarity must be 'cosine' or 'jaccard', got '{cfg.similarity}'")
        if cfg.recency not in ("position", "time", "none"):
            raise ConfigError(f"itemcf: recency must be 'position', 'time' or 'none', got '{cfg.recency}'")
        if cfg.neighbours < 1 or cfg.min_cooccurrence < 1:
            raise ConfigError("itemcf: neighbours and min_cooccurrence must be >= 1")
        if cfg.recency_decay < 0 or not cfg.half_life_days > 0:
            raise ConfigError("itemcf: recency_decay must be >= 0 and half_life_days > 0")

    def fit(self, data: TrainingData) -> Self:
        """Build the pruned item-item similarity from the training positives."""
        self._validate()
        cfg = self.config
        x = data.interactions.to_csr(binary=True)  # (n_users, n_items)
        n_items = x.shape[1]
        items_per_user = np.diff(x.indptr).astype(np.float64)
        users_per_item = np.bincount(x.indices, minlength=n_items).astype(np.float64)
        if cfg.user_activity_penalty:
            user_weight = 1.0 / np.log1p(np.maximum(items_per_user, 1.0))
        else:
            user_weight = np.ones_like(items_per_user)
        # an unweighted count is needed for Jaccard's union and the co-occurrence threshold
        need_count = cfg.user_activity_penalty and (cfg.similarity == "jaccard" or cfg.min_cooccurrence > 1)
        products: dict[str, sp.csr_matrix] = {}  # built on first use: the kernel path rarely needs them

        def exact_rows(row_items: np.ndarray) -> sp.csr_matrix:
            """Exact pruned rows ``row_items`` of S, in row blocks bounded by their multiply-adds."""
            if not products:
                products["weighted"] = sp.diags(user_weight) @ x
                products["by_item"] = x.T.tocsr()  # (n_items, n_users)
            by_item = products["by_item"]
            # a row's cost: the sum over the item's users of |I_u|
            cost = by_item[row_items] @ items_per_user
            block_id = ((np.cumsum(cost) - cost) // _BLOCK_PRODUCTS).astype(np.int64)
            bounds = np.r_[0, np.flatnonzero(np.diff(block_id)) + 1, len(row_items)]
            blocks = [  # a handful of blocks, not a loop over items
                self._similarity_rows(by_item[row_items[lo:hi]], x, products["weighted"], row_items[lo:hi],
                                      users_per_item, need_count)
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_items))

        sim = None
        self.fit_path_, self.kernel_recomputed_rows_ = "scipy", 0
        if self._kernel_applies(x, users_per_item):
            sim = self._kernel_similarity(x, user_weight, users_per_item, exact_rows)
            self.fit_path_ = "kernel" if sim is not None else "scipy"
        if sim is None:
            sim = exact_rows(np.arange(n_items))
        self.similarity_ = self._finish_rows(sim)
        self.user_items_ = x
        self._fitted = (x, self.similarity_)  # what save writes: nearline updates are not saved
        return self

    def _finish_rows(self, sim: sp.csr_matrix) -> sp.csr_matrix:
        """Pruned rows as stored: divided by their maximum (``normalize``), float32, sorted."""
        if self.config.normalize and sim.nnz:
            lengths = np.diff(sim.indptr)
            row_max = np.maximum.reduceat(sim.data, sim.indptr[:-1][lengths > 0])
            sim.data /= np.repeat(row_max, lengths[lengths > 0])
        sim = sp.csr_matrix(sim, dtype=np.float32)
        sim.sort_indices()
        return sim

    # ------------------------------------------------------------ nearline
    def _grow(self, n_items: int) -> None:
        """Extend ``similarity_`` and ``user_items_`` to ``n_items`` items (new ones: empty)."""
        sim, x = self.similarity_, self.user_items_
        if n_items <= sim.shape[0]:
            return
        indptr = np.r_[sim.indptr, np.full(n_items - sim.shape[0], sim.indptr[-1])]
        self.similarity_ = sp.csr_matrix((sim.data, sim.indices, indptr), shape=(n_items, n_items))
        self.user_items_ = sp.csr_matrix((x.data, x.indices, x.indptr), shape=(x.shape[0], n_items))

    def publish(self, items: NewItems) -> bool:
        """Make room for new items; they get neighbours from the events that follow (:meth:`observe`)."""
        if len(items):
            self._grow(int(items.item_index.max()) + 1)
        return True

    def observe(self, events: EventBatch) -> None:
        """Add known users' positive events to ``X`` and recompute the rows of ``S`` they change.

        The rows recomputed are those a refit on the training positives plus the events
        observed so far would change, so ``similarity_`` equals that refit's (scipy path;
        the kernel path agrees to float rounding): the items of every user with a new
        (user, item) pair (their co-occurrences and IUF weights change) and the items whose
        neighbour list holds an item with new users (its ``n_j`` grew, so the entry only
        falls and may leave the list). Any other row keeps its neighbours and values: its
        co-occurrences and ``n_i`` are unchanged and its entries in columns with new users
        only fall, below its cut already.

        Cost per batch: the rows' exact co-occurrence (the sum over their users of ``|I_u|``
        multiply-adds, as at fit) plus vectorised copies of ``X`` and ``S`` (linear in their
        entries). Events of users the model does not know (``user_index`` -1) are not counted:
        they have no row in ``X`` (a refit would give them one).
        """
        keep = events.positive & (events.user_index >= 0)
        if not keep.any():
            return
        users, items = events.user_index[keep], events.item_index[keep]
        self._grow(int(items.max()) + 1)
        x, sim = self.user_items_, self.similarity_
        n_items = sim.shape[0]
        inside = users < x.shape[0]  # users beyond the fitted matrix are not the model's
        users, items = users[inside], items[inside]
        if len(users) == 0:  # e.g. a model saved before X was kept: no user rows to add to
            return
        pairs = np.unique(users * n_items + items)
        users, items = pairs // n_items, pairs % n_items
        present = x[users, items]
        new = (present.toarray() if sp.issparse(present) else np.asarray(present)).ravel() == 0
        if not new.any():
            return
        users, items = users[new], items[new]
        added = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=x.shape)
        x = (x + added).tocsr()
        x.sort_indices()
        self.user_items_ = x
        # rows that change: the touched users' items, and the rows listing an item with new users
        touched = np.unique(x[np.unique(users)].indices)
        listing = sim.tocsc()[:, np.unique(items)].tocsr()
        rows = np.union1d(touched, np.unique(listing.nonzero()[0])).astype(np.int64)
        fresh = self._finish_rows(self._rows_of(x, rows))
        keep_old = np.ones(n_items, bool)
        keep_old[rows] = False
        old = sp.diags(keep_old.astype(np.float32)) @ sim
        placed = sp.csr_matrix((fresh.data, fresh.indices, np.r_[0, np.cumsum(np.bincount(
            np.repeat(rows, np.diff(fresh.indptr)), minlength=n_items))]), shape=sim.shape)
        merged = (old + placed).tocsr()
        merged.eliminate_zeros()
        merged.sort_indices()
        self.similarity_ = merged  # swapped whole: a retrieval may be reading the old one

    def _rows_of(self, x: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
        """Pruned (unnormalised) rows ``rows`` of S computed from ``x`` as the fit's scipy path does."""
        cfg = self.config
        by_item = x.T.tocsr()
        users = np.unique(by_item[rows].indices)
        sub = x[users]  # the rows' users only: their items are all the co-occurrences needed
        items_per_user = np.diff(x.indptr).astype(np.float64)[users]
        users_per_item = np.diff(by_item.indptr).astype(np.float64)
        if cfg.user_activity_penalty:
            user_weight = 1.0 / np.log1p(np.maximum(items_per_user, 1.0))
        else:
            user_weight = np.ones_like(items_per_user)
        need_count = cfg.user_activity_penalty and (cfg.similarity == "jaccard" or cfg.min_cooccurrence > 1)
        return self._similarity_rows(by_item[rows][:, users], sub, sp.diags(user_weight) @ sub, rows,
                                     users_per_item, need_count)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        x, s = self._fitted
        writer.write_arrays(f"{prefix}similarity.npz", {
            "data": s.data, "indices": s.indices, "indptr": s.indptr, "shape": np.array(s.shape, np.int64),
        })
        writer.write_arrays(f"{prefix}itemcf_users.npz", {
            "indices": x.indices, "indptr": x.indptr, "shape": np.array(x.shape, np.int64)})

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: ItemCFConfig | None,
             name: str | None = None) -> Self:
        stage = super().load(reader, prefix, config, name)
        n_items = stage.similarity_.shape[0]
        if reader.has(f"{prefix}itemcf_users.npz"):
            arrays = reader.read_arrays(f"{prefix}itemcf_users.npz")
        else:  # artifacts written before X was kept: nearline events start from no user rows
            arrays = {"indices": np.zeros(0, np.int32), "indptr": np.zeros(1, np.int64),
                      "shape": np.array([0, n_items])}
        shape = tuple(int(v) for v in arrays["shape"])
        stage.user_items_ = sp.csr_matrix((np.ones(len(arrays["indices"]), np.float32), arrays["indices"],
                                           arrays["indptr"]), shape=shape)
        stage._fitted = (stage.user_items_, stage.similarity_)
        return stage

    def _kernel_applies(self, x: sp.csr_matrix, users_per_item: np.ndarray) -> bool:
        """Whether :meth:`_kernel_similarity` can express the config and its output fits the budget."""
        cfg = self.config
        if cfg.similarity != "cosine" or cfg.min_cooccurrence > 1 or not cfg.use_kernel:
            return False
        n_active = int((users_per_item > 0).sum())
        slots = n_active * self._kernel_width(n_active)
        return 0 < n_active and slots <= _KERNEL_MAX_SLOTS and x.nnz < np.iinfo(np.int32).max

    def _kernel_width(self, n_items: int) -> int:
        """Neighbours asked of the kernel per item: the diagonal, ``neighbours`` and a margin."""
        k = self.config.neighbours
        return min(n_items, k + 1 + max(_KERNEL_MIN_MARGIN, k // 8))

    def _kernel_similarity(self, x: sp.csr_matrix, user_weight: np.ndarray, users_per_item: np.ndarray,
                           exact_rows: Callable[[np.ndarray], sp.csr_matrix]) -> sp.csr_matrix | None:
        """Cosine-IUF similarity rows through ``implicit``'s C++ item-item kernel (float64).

        The kernel runs on the items that have users (the others have no neighbours and are
        nobody's), re-indexed in order. With ``x_ui`` scaled to ``sqrt(w_u) / sqrt(n_i)`` its
        plain dot product ``sum_u sqrt(w_u / n_i) sqrt(w_u / n_j)`` is exactly
        ``c_ij / sqrt(n_i n_j)``. It keeps each row's ``width`` best entries (diagonal
        included) with an arbitrary order among ties, so the exact tie rule (lower column
        first) is applied here, in blocks of rows: a row whose ``neighbours``-th off-diagonal
        value is above the lowest value the kernel returned holds every entry that can tie
        with it, and is cut exactly; a full row where the two meet (a tie reaching past the
        kernel's cut) is recomputed by the scipy path (``exact_rows``). Every row keeps
        ``min(neighbours, its off-diagonal entries)``, so the output is allocated once.

        Returns:
            (n_items, n_items) CSR float64 with sorted indices, or None when the kernel is
            unavailable or its output is not laid out as expected (the scipy path runs then).
        """
        try:
            from implicit.nearest_neighbours import all_pairs_knn
        except ImportError:  # pragma: no cover - implicit is a runtime dependency
            return None
        k = self.config.neighbours
        n_users, n_items = x.shape
        active = np.flatnonzero(users_per_item > 0)
        n_active = len(active)
        width = self._kernel_width(n_active)
        position = np.full(n_items, -1, np.int64)
        position[active] = np.arange(n_active)
        user_of = np.repeat(np.arange(n_users), np.diff(x.indptr))
        scale = np.sqrt(user_weight)[user_of] / np.sqrt(users_per_item[x.indices])
        scaled = sp.csr_matrix((scale.astype(np.float64), position[x.indices].astype(np.int32),
                                x.indptr.astype(np.int32)), shape=(n_users, n_active))
        del user_of, scale
        knn = all_pairs_knn(scaled, width, num_threads=0, show_progress=False)
        del scaled
        row, col, value = knn.row, knn.col, knn.data
        del knn
        if row.shape != (n_active * width,):
            return None
        # the kernel writes item r's entries to slots [r * width, (r + 1) * width), zeros after them
        block = max(1, _KERNEL_BLOCK_CELLS // width)
        kept = np.zeros(n_active, np.int64)
        for lo in range(0, n_active, block):  # a loop over row blocks: bounded temporaries
            hi = min(lo + block, n_active)
            cells = slice(lo * width, hi * width)
            found = (value[cells] > 0).reshape(hi - lo, width)
            r = np.arange(lo, hi)[:, None]
            if not ((row[cells].reshape(hi - lo, width) == r) | ~found).all():
                return None
            off_diagonal = found & (col[cells].reshape(hi - lo, width) != r)
            kept[lo:hi] = np.minimum(k, off_diagonal.sum(axis=1))
        indptr = np.r_[0, np.cumsum(kept)]
        out_data = np.empty(indptr[-1], np.float64)
        out_indices = np.empty(indptr[-1], np.int32 if n_items < np.iinfo(np.int32).max else np.int64)
        ambiguous = []
        for lo in range(0, n_active, block):
            hi = min(lo + block, n_active)
            ambiguous.append(lo + self._kernel_block(
                value[lo * width:hi * width].reshape(hi - lo, width), col[lo * width:hi * width].reshape(hi - lo, width),
                lo, active, users_per_item, indptr, out_data, out_indices))
        del row, col, value
        ambiguous = np.concatenate(ambiguous)
        self.kernel_recomputed_rows_ = len(ambiguous)
        if len(ambiguous):
            fixed = exact_rows(active[ambiguous])  # full-space columns, ascending, <= k a row
            if not (np.diff(fixed.indptr) == kept[ambiguous]).all():  # pragma: no cover - defensive
                return None
            rank = np.arange(fixed.nnz) - np.repeat(fixed.indptr[:-1], np.diff(fixed.indptr))
            target = indptr[ambiguous[np.repeat(np.arange(len(ambiguous)), np.diff(fixed.indptr))]] + rank
            out_data[target], out_indices[target] = fixed.data, fixed.indices
        counts = np.zeros(n_items, np.int64)
        counts[active] = kept
        sim = sp.csr_matrix((out_data, out_indices, np.r_[0, np.cumsum(counts)]), shape=(n_items, n_items))
        sim.has_sorted_indices = True
        return sim

    def _kernel_block(self, value: np.ndarray, col: np.ndarray, lo: int, active: np.ndarray,
                      users_per_item: np.ndarray, indptr: np.ndarray, out_data: np.ndarray,
                      out_indices: np.ndarray) -> np.ndarray:
        """Cut kernel rows ``lo ..`` (compact indices) to their exact top-k into the output arrays.

        Args:
            value, col: (b, width) the kernel's slots of the block's rows (zeros: unused).
            lo: compact index of the block's first row; ``active`` maps compact -> item index.
            users_per_item: (n_items,) ``n_i``.
            indptr, out_data, out_indices: the output CSR over the compact rows (full-space
                column indices), filled here except for the ambiguous rows.

        Returns:
            (a,) int64 block-local rows left to the scipy path (a tie at the kernel's cut).
        """
        k = self.config.neighbours
        b, width = value.shape
        n_active = len(active)
        found = value > 0
        values = np.where(found, value, -np.inf)
        columns = np.where(found, col, n_active).astype(np.int64)
        lowest = np.where(found, value, np.inf).min(axis=1)
        values[columns == np.arange(lo, lo + b)[:, None]] = -np.inf  # the diagonal is dropped
        if not self.config.user_activity_penalty:
            # plain counts: recover the integer c_ij and divide as the scipy path does, so that
            # values tied there (c / sqrt(n_i n_j) rounds the same) are tied here too
            real = np.isfinite(values)
            n_i = np.broadcast_to(users_per_item[active[lo:lo + b]][:, None], values.shape)[real]
            n_j = users_per_item[active[columns[real]]]
            values[real] = np.rint(values[real] * np.sqrt(n_i) * np.sqrt(n_j)) / np.sqrt(n_i * n_j)
        values = _stored_precision(values)
        # columns ascending (CSR order and the tie rule), then each row's k best, the lower
        # column first among equal values (as keep_top_k_per_row)
        order = np.argsort(columns, axis=1)
        values, columns = np.take_along_axis(values, order, axis=1), np.take_along_axis(columns, order, axis=1)
        keep = np.isfinite(values)
        kth = np.full(b, -np.inf)
        if width >= k:
            kth = -np.partition(-values, k - 1, axis=1)[:, k - 1]
        if width > k:
            above = values > kth[:, None]
            tie = (values == kth[:, None]) & keep
            need = k - above.sum(axis=1, keepdims=True)
            keep &= above | (tie & (np.cumsum(tie, axis=1) <= need))
        # a full row whose cut is not above (the rounding of) the kernel's lowest entry may have
        # lost a tie: an entry the kernel dropped may round to the same value as the cut
        ambiguous = np.flatnonzero(found.all(axis=1) & (width < n_active) & np.isfinite(kth)
                                   & (kth <= _stored_precision(lowest * (1 + _TIE_TOLERANCE))))
        keep[ambiguous] = False
        r, c = np.nonzero(keep)
        target = indptr[lo + r] + (np.cumsum(keep, axis=1) - 1)[r, c]
        out_data[target] = values[r, c]
        out_indices[target] = active[columns[r, c]]
        return ambiguous

    def _similarity_rows(self, x_rows: sp.csr_matrix, x: sp.csr_matrix, x_weighted: sp.csr_matrix,
                         row_items: np.ndarray, users_per_item: np.ndarray, need_count: bool) -> sp.csr_matrix:
        """Pruned similarity rows ``row_items`` of S (exact, at float32 precision), as a
        (len(row_items), n_items) float64 CSR."""
        cfg = self.config
        co = (x_rows @ x_weighted).tocsr()  # (block, n_items) weighted co-occurrence
        co.sum_duplicates()
        co.sort_indices()
        count = co
        if need_count:
            count = (x_rows @ x).tocsr()
            count.sum_duplicates()
            count.sort_indices()  # same sparsity as `co`: all products are positive
        local = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
        rows = np.asarray(row_items, np.int64)[local]
        cols = co.indices
        value = co.data.astype(np.float64)
        n_i, n_j = users_per_item[rows], users_per_item[cols]
        if cfg.similarity == "cosine":
            value = value / np.sqrt(n_i * n_j)
        else:
            value = value / (n_i + n_j - count.data)
        value = _stored_precision(value)
        keep = (rows != cols) & (value > 0)
        if cfg.min_cooccurrence > 1:  # `count` is the unweighted count whenever this matters
            keep &= count.data >= cfg.min_cooccurrence
        pruned = sp.csr_matrix((value[keep], (local[keep], cols[keep])), shape=co.shape)
        return keep_top_k_per_row(pruned, cfg.neighbours)

