"""Matrix-factorisation retrieval: implicit-feedback ALS and BPR, folded in at request time.

Both channels learn item vectors offline with the ``implicit`` library (its CPU
code, always: a GPU model would need another code path to read its factors) and
retrieve by maximum inner product through the ANN index (:mod:`recfunnel.index`),
the "offline item vectors in a vector index, online user vector" pattern.

The user vector is **never** the factor learned at fit: it is recomputed from the
request's point-in-time history (``request.history``), so an event that happened a
second ago counts at once, unknown users work, and a point-in-time request never
sees the user's future.

* ALS (Hu, Koren & Volinsky, ICDM 2008): the confidence of an observed pair is
  ``c_ui = 1 + alpha * r_ui`` (eq. 1 of the paper, ``r_ui`` = number of positive
  events), 1 for every other pair, preference ``p_ui = 1`` where observed. With the
  item factors ``Y`` fixed, the user's factor is the exact least-squares solution
  (eq. 4)::

      x_u = (Y^T C_u Y + lambda I)^{-1} Y^T C_u p_u
          = (Y^T Y + lambda I + sum_{i in H_u} (c_ui - 1) y_i y_i^T)^{-1} sum_{i in H_u} c_ui y_i

  (the ``Y^T Y`` trick of the paper's section 4, as in ``implicit``'s
  ``recalculate_user``), solved for the whole batch at once as (B, f, f) systems.
  ``r_ui`` here counts the item's events in the request history (the history holds
  no event weights), so fit counts events too and ignores a ``weight`` column.
* BPR (Rendle et al., UAI 2009) has no closed-form fold-in (its user factor is the
  end point of SGD), so the user vector is the recency-weighted mean of the history
  items' factors, scaled by one scalar fitted at training time (least squares
  between the full-history means of the training users and their learned factors)
  so that it balances ``implicit``'s item bias (the last factor column, paired with a
  constant 1 in every user vector) as the learned user factors did.

Threads: ``implicit`` warns, and runs several times slower, when a threaded BLAS
(OpenBLAS, MKL) runs inside its own thread pool, so fit runs under threadpoolctl's
``threadpool_limits(1, "blas")``; setting ``OPENBLAS_NUM_THREADS=1`` (or
``MKL_NUM_THREADS=1``) before Python starts does the same for the whole process.
BPR's SGD is lock-free across threads (Hogwild), so it is reproducible for a given
``seed`` only with ``num_threads=1``; ALS is reproducible with any thread count.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> als = ALSRetriever(ALSConfig(factors=2, iterations=10)).fit(data)
>>> als.item_factors_.shape
(30, 2)
>>> out = als.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
>>> bool((out.item_index[out.valid] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError
from recfunnel.index import INDEX_KINDS, build_index, load_index
from recfunnel.stages.base import EventBatch, Incremental, NewItems, Retriever
from recfunnel.stages.recall.sparse import exclusion_mask
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.training.progress import progress_enabled
from recfunnel.types import PAD, Candidates, RequestBatch

_SECONDS_PER_DAY = 86_400.0

#: users per block of the batched ALS fold-in: bounds the (block, f, f) systems to tens of MB
_FOLD_IN_BLOCK = 512
#: history items read (``EventBatch.history_before``) for the user vector of a nearline event
_EVENT_HISTORY = 200


@dataclass(frozen=True)
class ALSConfig:
    """Options of :class:`ALSRetriever`.

    Attributes:
        factors: latent dimension f.
        regularization: lambda, the L2 penalty of the least-squares problems (> 0).
        alpha: confidence scaling, ``c_ui = 1 + alpha * r_ui`` with ``r_ui`` the user's
            number of events on the item (Hu et al. 2008, eq. 1; they use 40 on TV data).
        iterations: alternating sweeps (users then items) at fit.
        seed: random seed of the initial factors.
        num_threads: threads of ``implicit``'s solver; 0 = all cores.
        index: ANN index of the item vectors: "flat" (exact), "ivf_flat", "ivf_pq" or
            "hnsw" (approximate, for large catalogues).
    """

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 1.0
    iterations: int = 15
    seed: int = 0
    num_threads: int = 0
    index: str = "flat"


@dataclass(frozen=True)
class BPRConfig:
    """Options of :class:`BPRRetriever`.

    Attributes:
        factors: latent dimension f (``implicit`` adds one column for the item bias).
        learning_rate: SGD step.
        regularization: L2 penalty of the SGD updates.
        iterations: epochs over the positives.
        seed: random seed of the initial factors and the negative sampling.
        num_threads: SGD threads; 0 = all cores (only ``num_threads=1`` is reproducible).
        index: ANN index of the item vectors (see :class:`ALSConfig`).
        recency: weight of a history item in the user vector: "position"
            1 / (1 + recency_decay * pos) (pos 0 = newest), "time"
            2 ** (-age_days / half_life_days), "none" 1.
        recency_decay: slope of the "position" weights.
        half_life_days: half-life of the "time" weights.
    """

    factors: int = 64
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0
    num_threads: int = 0
    index: str = "flat"
    recency: Literal["position", "time", "none"] = "position"
    recency_decay: float = 0.1
    half_life_days: float = 7.0


def _validate_common(kind: str, cfg: ALSConfig | BPRConfig) -> None:
    if cfg.factors < 1 or cfg.iterations < 1:
        raise ConfigError(f"{kind}: factors and iterations must be >= 1")
    if cfg.num_threads < 0:
        raise ConfigError(f"{kind}: num_threads must be >= 0 (0 = all cores), got {cfg.num_threads}")
    if cfg.index not in INDEX_KINDS:
        raise ConfigError(f"{kind}: index must be one of {list(INDEX_KINDS)}, got '{cfg.index}'")


def _event_counts(data: TrainingData) -> sp.csr_matrix:
    """(n_users, n_items) float32 CSR: number of positive events of each pair."""
    inter = data.interactions
    counts = sp.csr_matrix((np.ones(len(inter), np.float32), (inter.user_index, inter.item_index)),
                           shape=(data.n_users, data.n_items))
    counts.sum_duplicates()
    return counts


def _history_counts(request: RequestBatch, n_items: int) -> sp.csr_matrix:
    """(B, n_items) float64 CSR: how often each known item appears in each request history."""
    history = request.history
    valid = (history >= 0) & (history < n_items)
    rows = np.broadcast_to(np.arange(len(request))[:, None], history.shape)
    counts = sp.csr_matrix((np.ones(int(valid.sum())), (rows[valid], history[valid])),
                           shape=(len(request), n_items))
    counts.sum_duplicates()
    counts.sort_indices()
    return counts


def _single_threaded_blas():
    """Context in which every loaded BLAS runs on one thread (``implicit`` parallelises itself).

    Scans the loaded libraries afresh (a few ms), so it also limits the BLAS that
    ``implicit`` brought in with scipy; used around fit.
    """
    from threadpoolctl import threadpool_limits  # a dependency of implicit

    return threadpool_limits(1, "blas")


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _single_threaded_numpy_blas():
    """Cheap (~0.3 ms) single-thread BLAS context for the per-request fold-in.

    Thousands of tiny (f, f) products and solves gain nothing from BLAS threads and lose
    much to their hand-offs: with f = 128 a threaded OpenBLAS on 2 busy cores took 9 s for
    1,024 users, one thread 0.3 s. The controller is created once (numpy's BLAS is loaded
    by then); it changes a process-wide setting, so concurrent fold-ins in other Python
    threads also run single-threaded while one is inside.
    """
    return _blas_controller().limit(limits=1, user_api="blas")


class FactorRetriever(Retriever, Incremental):
    """Base of the channels that score items by ``<user vector, item vector>``.

    Subclasses fit ``item_factors_`` and build the user vector of a request in
    :meth:`user_vectors`; retrieval (ANN search, exclusions, top-k) and the
    artifact (npz factors + the index's own files) are shared.

    Nearline (:class:`~recfunnel.stages.base.Incremental`): a user's vector is always
    folded in from the request's history, so known users' new events count at once. An
    item beyond the fitted catalogue gets a vector from the positive events on it
    (:meth:`observe`): the least-squares item fold-in against the fixed user factors
    (Hu et al. 2008, eq. 5; ``implicit``'s ``recalculate_item``), with each event's user
    vector folded in from its history before the event, and enters the index
    (:meth:`~recfunnel.index.base.VectorIndex.update`, no rebuild). ``save`` writes the
    fitted factors and index only.

    Learned attributes:
        item_factors_: (n_items, d) float32 item vectors, the rows of the index.
        user_factors_: (n_users, d) float32 user factors learned at fit (diagnostics
            only: retrieval folds the request's history in instead).
        index_: the :class:`~recfunnel.index.base.VectorIndex` over ``item_factors_``
            (ids = item indices).
    """

    item_factors_: np.ndarray
    user_factors_: np.ndarray

    @abstractmethod
    def user_vectors(self, request: RequestBatch) -> tuple[np.ndarray, np.ndarray]:
        """Query vectors folded in from each request's history.

        Returns:
            (B, d) float32 vectors and (B,) bool, true where the history holds at
            least one item known to the model (the other rows are not searched).
        """

    def _build_index(self) -> None:
        n_items = len(self.item_factors_)
        self.index_ = build_index(self.item_factors_, ids=np.arange(n_items, dtype=np.int64),
                                  kind=self.config.index)
        self._set_fitted()

    def _set_fitted(self) -> None:
        """Remember the fitted factors and index (what :meth:`save` writes); no nearline items yet."""
        self._fitted = (self.item_factors_, self.index_)
        self._fold_in_lhs = np.zeros((0, self.item_factors_.shape[1], self.item_factors_.shape[1]))
        self._fold_in_rhs = np.zeros((0, self.item_factors_.shape[1]))
        self._user_gram: np.ndarray | None = None

    # ------------------------------------------------------------ nearline
    def _fold_in_weights(self) -> tuple[float, float]:
        """(alpha, regularization) of the item fold-in: confidence ``1 + alpha`` per positive event."""
        return float(getattr(self.config, "alpha", 1.0)), float(self.config.regularization)

    def publish(self, items: NewItems) -> bool:
        """New items are taken; each gets its vector from the positive events on it (:meth:`observe`)."""
        return True

    def observe(self, events: EventBatch) -> None:
        """Fold in the items beyond the fitted catalogue from the positive events on them.

        For item i with positive events by users of vectors ``u_e`` (each event's user vector
        folded in from the history before it; the fitted factor when the sender has no
        histories), ``x_i = (U^T U + lambda I + alpha sum_e u_e u_e^T)^-1 (1 + alpha) sum_e u_e``:
        the ALS item update with ``U`` the fitted user factors (each event counts as one
        interaction of confidence ``1 + alpha``). The sums are kept per new item, so a batch
        costs its events' ``d x d`` outer products and one ``d x d`` solve per item it touches,
        plus the index update of those items. Fitted items keep their vectors.
        """
        events = events.take(events.positive & (events.item_index >= len(self._fitted[0])))
        if len(events) == 0:
            return
        vectors, ok = self._event_user_vectors(events)
        if not ok.any():
            return
        vectors, item = vectors[ok], events.item_index[ok]
        n_fit, d = self._fitted[0].shape
        alpha, regularization = self._fold_in_weights()
        slot = item - n_fit
        size = int(slot.max()) + 1
        if size > len(self._fold_in_rhs):  # grown as a whole (a retrieval never reads these)
            grow = size - len(self._fold_in_rhs)
            self._fold_in_lhs = np.concatenate([self._fold_in_lhs, np.zeros((grow, d, d))])
            self._fold_in_rhs = np.concatenate([self._fold_in_rhs, np.zeros((grow, d))])
        np.add.at(self._fold_in_lhs, slot, alpha * vectors[:, :, None] * vectors[:, None, :])
        np.add.at(self._fold_in_rhs, slot, (1.0 + alpha) * vectors)
        if self._user_gram is None:
            u = self.user_factors_.astype(np.float64)
            self._user_gram = u.T @ u + regularization * np.eye(d)
        touched = np.unique(slot)
        solved = np.linalg.solve(self._user_gram + self._fold_in_lhs[touched],
                                 self._fold_in_rhs[touched][:, :, None])[:, :, 0].astype(np.float32)
        factors = self.item_factors_
        if n_fit + size > len(factors):
            factors = np.concatenate([factors, np.zeros((n_fit + size - len(factors), d), np.float32)])
        else:
            factors = factors.copy()
        factors[n_fit + touched] = solved
        # copy on write: a retrieval running meanwhile searches the old index (faiss may reallocate
        # an index it adds to, under a concurrent search), and the fitted one stays what save writes;
        # the copy costs a pass over the index per batch that touches new items
        index = self.index_.copy()
        index.update(n_fit + touched, solved)
        self.item_factors_ = factors  # swapped whole, before the index that may return its new rows
        self.index_ = index

    def _event_user_vectors(self, events: EventBatch) -> tuple[np.ndarray, np.ndarray]:
        """(N, d) float64 user vectors of the events and (N,) bool: whether one is known."""
        if events.history_before is not None:
            request = events.history_before(np.arange(len(events)), _EVENT_HISTORY)
            vectors, has_history = self.user_vectors(request)
            return vectors.astype(np.float64), has_history
        user = events.user_index
        known = (user >= 0) & (user < len(self.user_factors_))
        return self.user_factors_[np.where(known, user, 0)].astype(np.float64), known

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Items of largest inner product with the folded-in user vector, minus ``request.exclude``.

        Args:
            request: B users; ``history`` (and for BPR ``history_time``, ``time``) and ``exclude``.
            k: items per user.

        Returns:
            (B, min(k, n_items)) candidates scored by the inner product; users without a
            known history item get padding.
        """
        b = len(request)
        n_items = len(self.item_factors_)
        width = min(k, n_items)
        items = np.full((b, width), PAD, np.int64)
        score = np.full((b, width), -np.inf, np.float32)
        queries, has_history = self.user_vectors(request)
        users = np.flatnonzero(has_history)
        if width > 0 and len(users):
            # over-fetch by the longest exclusion list so that k items survive it (exact for "flat")
            n_excluded = int(np.diff(request.exclude.indptr).max(initial=0))
            depth = min(k + n_excluded, n_items)
            found_score, found = self.index_.search(queries[users], depth)
            keep = (found >= 0) & ~exclusion_mask(request.exclude, users[:, None], found)
            order = np.argsort(~keep, axis=1, kind="stable")[:, :width]  # kept first, rank order intact
            kept = np.take_along_axis(keep, order, axis=1)
            items[users] = np.where(kept, np.take_along_axis(found, order, axis=1), PAD)
            score[users] = np.where(kept, np.take_along_axis(found_score, order, axis=1), -np.inf)
        return Candidates(items, score, {self.name: score})

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """Learned arrays besides the factors that :meth:`save` must keep."""
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the learned attributes derived from the saved arrays (after the factors)."""

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        item_factors, index = self._fitted
        writer.write_arrays(f"{prefix}factors.npz", {
            "item_factors": item_factors, "user_factors": self.user_factors_, **self._extra_arrays(),
        })
        index.save(writer, f"{prefix}index/")

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any,
             name: str | None = None) -> Self:
        arrays = reader.read_arrays(f"{prefix}factors.npz")
        stage = cls(config, name)
        stage.item_factors_ = arrays["item_factors"].astype(np.float32)
        stage.user_factors_ = arrays["user_factors"].astype(np.float32)
        stage._restore(arrays)
        stage.index_ = load_index(reader, f"{prefix}index/")
        stage._set_fitted()
        return stage


class ALSRetriever(FactorRetriever):
    """Implicit-feedback ALS (Hu et al. 2008) with an exact least-squares fold-in per request.

    Learned attributes (besides those of :class:`FactorRetriever`, d = f):
        gram_: (f, f) float64 ``Y^T Y + lambda I``, shared by every fold-in.
    """

    kind = "als"

    def __init__(self, config: ALSConfig | None = None, name: str | None = None):
        super().__init__(config or ALSConfig(), name)

    def _validate(self) -> None:
        cfg = self.config
        _validate_common("als", cfg)
        if not cfg.regularization > 0:
            raise ConfigError(f"als: regularization must be > 0, got {cfg.regularization}")
        if cfg.alpha < 0:
            raise ConfigError(f"als: alpha must be >= 0, got {cfg.alpha}")

    def fit(self, data: TrainingData) -> Self:
        """Factorise the confidence-weighted user-item matrix with ``implicit``'s CPU ALS."""
        self._validate()
        cfg = self.config
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit reads each stored value as the confidence c_ui itself (A += (c - 1) y y^T,
        # b += c y): give it Hu et al.'s 1 + alpha * r_ui and leave its own alpha at 1
        confidence = _event_counts(data)
        confidence.data = 1.0 + np.float32(cfg.alpha) * confidence.data
        with _single_threaded_blas():
            model = AlternatingLeastSquares(
                factors=cfg.factors, regularization=cfg.regularization, alpha=1.0, dtype=np.float32,
                iterations=cfg.iterations, num_threads=cfg.num_threads, random_state=cfg.seed,
            )
            model.fit(confidence, show_progress=progress_enabled())
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self._restore({})
        self._build_index()
        return self

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        y = self.item_factors_.astype(np.float64)
        self.gram_ = y.T @ y + self.config.regularization * np.eye(y.shape[1])

    def user_vectors(self, request: RequestBatch) -> tuple[np.ndarray, np.ndarray]:
        """Exact ALS fold-in of each request's history (eq. 4 of Hu et al. 2008).

        Returns:
            (B, f) float32 least-squares user factors (0 for an empty history) and (B,) bool
            has-history mask.
        """
        y = self.item_factors_  # float32; the gathered history rows are solved in float64
        counts = _history_counts(request, len(y))
        out = np.zeros((len(request), y.shape[1]), np.float32)
        with _single_threaded_numpy_blas():
            for lo in range(0, len(request), _FOLD_IN_BLOCK):  # blocks of users, not single users
                out[lo:lo + _FOLD_IN_BLOCK] = self._solve(counts[lo:lo + _FOLD_IN_BLOCK], y)
        return out, np.diff(counts.indptr) > 0

    def _solve(self, counts: sp.csr_matrix, y: np.ndarray) -> np.ndarray:
        """(b, f) solutions of ``(gram + Y_h^T (C_h - I) Y_h) x = Y_h^T c_h`` for a block of rows."""
        b, f = counts.shape[0], y.shape[1]
        per_row = np.diff(counts.indptr)
        width = int(per_row.max(initial=0))
        if width == 0:
            return np.zeros((b, f))
        # each row's distinct history items side by side: (b, width), zero confidence at padding
        rows = np.repeat(np.arange(b), per_row)
        slot = np.arange(counts.nnz) - counts.indptr[rows]
        y_hist = np.zeros((b, width, f))
        y_hist[rows, slot] = y[counts.indices]
        extra = np.zeros((b, width))  # c_ui - 1 = alpha * r_ui
        extra[rows, slot] = self.config.alpha * counts.data
        confidence = np.zeros((b, width))
        confidence[rows, slot] = 1.0 + extra[rows, slot]
        a = self.gram_ + np.matmul(y_hist.transpose(0, 2, 1) * extra[:, None, :], y_hist)
        rhs = np.matmul(confidence[:, None, :], y_hist)[:, 0]
        return np.linalg.solve(a, rhs[:, :, None])[:, :, 0]


class BPRRetriever(FactorRetriever):
    """Bayesian Personalized Ranking (Rendle et al. 2009); the user vector is a scaled
    recency-weighted mean of the history items' factors.

    The item vectors are ``implicit``'s: f factors then the item bias; a query is
    ``[user_scale_ * mean, 1]``, so the inner product is ``user_scale_ * <mean, y_i> + b_i``.

    Learned attributes (besides those of :class:`FactorRetriever`, d = f + 1):
        user_scale_: float, least-squares fit of the learned user factors by the
            training users' full-history mean item factors.
    """

    kind = "bpr"

    def __init__(self, config: BPRConfig | None = None, name: str | None = None):
        super().__init__(config or BPRConfig(), name)

    def _validate(self) -> None:
        cfg = self.config
        _validate_common("bpr", cfg)
        if not cfg.learning_rate > 0 or cfg.regularization < 0:
            raise ConfigError("bpr: learning_rate must be > 0 and regularization >= 0")
        if cfg.recency not in ("position", "time", "none"):
            raise ConfigError(f"bpr: recency must be 'position', 'time' or 'none', got '{cfg.recency}'")
        if cfg.recency_decay < 0 or not cfg.half_life_days > 0:
            raise ConfigError("bpr: recency_decay must be >= 0 and half_life_days > 0")

    def fit(self, data: TrainingData) -> Self:
        """Learn BPR factors with ``implicit``'s CPU SGD, then the fold-in scale."""
        self._validate()
        cfg = self.config
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        positives = _event_counts(data)
        positives.data[:] = 1.0  # BPR only asks which items are positive
        with _single_threaded_blas():
            model = BayesianPersonalizedRanking(
                factors=cfg.factors, learning_rate=cfg.learning_rate, regularization=cfg.regularization,
                dtype=np.float32, iterations=cfg.iterations, num_threads=cfg.num_threads,
                random_state=cfg.seed,
            )
            model.fit(positives, show_progress=progress_enabled())
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)

        # the fold-in mean has a smaller norm than a learned user factor; one least-squares
        # scale s = <U, M> / <M, M> over the training users restores the factor/bias balance
        f = self.item_factors_.shape[1] - 1
        n_items = np.asarray(positives.sum(axis=1)).ravel()
        mean = sp.diags(1.0 / np.maximum(n_items, 1.0)) @ positives @ self.item_factors_[:, :f].astype(np.float64)
        learned = self.user_factors_[:, :f].astype(np.float64)
        denominator = float((mean * mean).sum())
        self.user_scale_ = float((mean * learned).sum()) / denominator if denominator > 0 else 1.0
        self._build_index()
        return self

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"user_scale": np.array(self.user_scale_, np.float64)}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_scale_ = float(arrays["user_scale"])

    def history_weights(self, request: RequestBatch) -> np.ndarray:
        """(B, L) recency weight of every history slot; 0 at padding and unknown items."""
        cfg = self.config
        history = request.history
        valid = (history >= 0) & (history < len(self.item_factors_))
        if cfg.recency == "position":
            weight = np.broadcast_to(1.0 / (1.0 + cfg.recency_decay * np.arange(history.shape[1])), history.shape)
        elif cfg.recency == "time":
            age_days = np.maximum(request.time[:, None] - request.history_time, 0) / _SECONDS_PER_DAY
            weight = np.exp2(-age_days / cfg.half_life_days)
        else:
            weight = np.ones(history.shape)
        return np.where(valid, weight, 0.0)

    def user_vectors(self, request: RequestBatch) -> tuple[np.ndarray, np.ndarray]:
        """``[user_scale_ * weighted mean of the history item factors, 1]`` per request.

        Returns:
            (B, f + 1) float32 query vectors and (B,) bool has-history mask.
        """
        f = self.item_factors_.shape[1] - 1
        weight = self.history_weights(request)
        total = weight.sum(axis=1)
        has_history = total > 0
        factors = self.item_factors_[np.clip(request.history, 0, len(self.item_factors_) - 1), :f]
        mean = np.einsum("bl,blf->bf", weight, factors) / np.maximum(total, 1e-12)[:, None]
        out = np.ones((len(request), f + 1), np.float32)
        out[:, :f] = self.user_scale_ * mean
        return out, has_history
