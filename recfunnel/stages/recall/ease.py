"""EASE: a closed-form linear item-item model (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019).

EASE learns the item-item weight matrix ``B`` that best reconstructs the binary
user-item matrix ``X`` from itself, with an L2 penalty and a zero diagonal (an
item may not predict itself)::

    min_B ||X - X B||_F^2 + lambda ||B||_F^2   s.t. diag(B) = 0

whose solution is closed form (the paper's eq. 8)::

    P = (X^T X + lambda I)^{-1},   B = I - P diag(1 / diag(P)),   i.e. B_ij = -P_ij / P_jj, B_jj = 0.

Retrieval reads the request's point-in-time history (online events count at
once): ``scores = h B`` with ``h`` the binary history row, then exclusions and a
top-k. ``B`` is dense, so fit costs O(n_items^3) time and two n_items^2 float64
matrices of memory (about 6.4 GB at 20,000 items, the default ``max_items``
guard); retrieval costs O(|history| * n_items) per user.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> ease = EASERetriever(EASEConfig(l2=10.0)).fit(data)
>>> ease.weights_.shape
(30, 30)
>>> out = ease.retrieve(make_request(data, np.array([0]), history_length=5), k=4)
>>> bool((out.item_index[out.valid] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ConfigError
from recfunnel.stages.base import Retriever
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.types import PAD, Candidates, RequestBatch

#: users scored per block: bounds the dense (block, n_items) score matrix
_SCORE_BLOCK = 1024

#: rows per block when mirroring the inverse's upper triangle (bounded temporaries)
_SYMMETRISE_BLOCK = 2048


@dataclass(frozen=True)
class EASEConfig:
    """Options of :class:`EASERetriever`.

    Attributes:
        l2: Steck's lambda, the L2 penalty added to the diagonal of the Gram matrix
            (> 0); the paper's best values are a few hundred on ML-20M / Netflix / MSD.
        max_items: largest catalogue fitted (refused beyond with ConfigError): fit holds
            dense n_items x n_items float64 matrices (~2 x 3.2 GB at 20,000 items).
    """

    l2: float = 500.0
    max_items: int = 20_000


def dense_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best entries of each row of a dense score matrix; ``-inf`` means "not a candidate".

    Ties are ordered by the lower column, except that which of several items tied at
    the k-th place gets in is left to ``np.argpartition`` (deterministic for equal input).

    Args:
        scores: (B, n) float scores.
        k: entries per row.

    Returns:
        (B, min(k, n)) int64 columns, -1 padded, and float32 scores, -inf padded, best first.

    >>> cols, vals = dense_top_k(np.array([[0.1, 0.9, -np.inf, 0.5]]), 3)
    >>> cols.tolist(), vals.tolist()
    ([[1, 3, 0]], [[0.8999999761581421, 0.5, 0.10000000149011612]])
    """
    b, n = scores.shape
    width = min(k, n)
    if width == 0:
        return np.full((b, 0), PAD, np.int64), np.full((b, 0), -np.inf, np.float32)
    if width < n:
        cols = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    else:
        cols = np.broadcast_to(np.arange(n), (b, n))
    vals = np.take_along_axis(scores, cols, axis=1)
    order = np.lexsort((cols, -vals))  # row-wise: score descending, then lower column
    cols = np.take_along_axis(cols, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    missing = np.isneginf(vals)
    return np.where(missing, PAD, cols), np.where(missing, -np.inf, vals).astype(np.float32)


def ease_weights(user_items: sp.spmatrix, l2: float) -> np.ndarray:
    """Steck's closed form ``B = I - P diag(1 / diag(P))``, ``P = (X^T X + l2 I)^{-1}``.

    The inverse goes through a Cholesky factorisation in place (``X^T X + l2 I`` is
    symmetric positive definite for ``l2 > 0``), which needs half the flops of a
    general inverse and no second n x n buffer.

    Args:
        user_items: (n_users, n_items) sparse binary interactions.
        l2: the penalty lambda, > 0.

    Returns:
        (n_items, n_items) float32 ``B`` with a zero diagonal.
    """
    x = sp.csr_matrix(user_items, dtype=np.float64)
    gram = np.asarray((x.T @ x).todense(), dtype=np.float64, order="F")
    gram[np.diag_indices_from(gram)] += l2
    factor, info = lapack.dpotrf(gram, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: Cholesky factorisation failed (info={info})")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: inverse from the Cholesky factor failed (info={info})")
    # dpotri fills only the upper triangle: mirror it block by block (bounded temporaries)
    n = inverse.shape[0]
    for lo in range(0, n, _SYMMETRISE_BLOCK):
        hi = min(lo + _SYMMETRISE_BLOCK, n)
        inverse[lo:hi, :lo] = inverse[:lo, lo:hi].T
        block = inverse[lo:hi, lo:hi]
        inverse[lo:hi, lo:hi] = np.triu(block) + np.triu(block, 1).T
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal[None, :]  # B_ij = -P_ij / P_jj (eq. 8)
    weights = inverse.astype(np.float32, order="C")
    del inverse
    np.fill_diagonal(weights, 0.0)
    return weights


class EASERetriever(Retriever):
    """Items scored by ``h B`` for the binary point-in-time history ``h``.

    Learned attributes:
        weights_: (n_items, n_items) float32 dense ``B``, zero diagonal.
    """

    kind = "ease"

    def __init__(self, config: EASEConfig | None = None, name: str | None = None):
        super().__init__(config or EASEConfig(), name)

    def _validate(self, n_items: int) -> None:
        cfg = self.config
        if not cfg.l2 > 0:
            raise ConfigError(f"ease: l2 must be > 0, got {cfg.l2}")
        if cfg.max_items < 1:
            raise ConfigError(f"ease: max_items must be >= 1, got {cfg.max_items}")
        if n_items > cfg.max_items:
            gigabytes = 2 * 8 * n_items**2 / 1e9
            raise ConfigError(
                f"ease: the catalogue has {n_items} items, more than max_items={cfg.max_items}; EASE "
                f"fits dense {n_items} x {n_items} matrices (~{gigabytes:.1f} GB). Raise max_items "
                "if the machine has the memory, or use the 'als' or 'itemcf' channel"
            )

    def fit(self, data: TrainingData) -> Self:
        """Solve Steck's closed form on the binary training matrix."""
        self._validate(data.n_items)
        self.weights_ = ease_weights(data.interactions.to_csr(binary=True), self.config.l2)
        return self

    def retrieve(self, request: RequestBatch, k: int) -> Candidates:
        """Top-``k`` items by ``h B``, minus ``request.exclude``.

        Args:
            request: B users; ``history`` and ``exclude`` are used.
            k: items per user.

        Returns:
            (B, min(k, n_items)) candidates; users without a known history item get padding.
        """
        n_items = self.weights_.shape[0]
        b = len(request)
        history = request.history
        valid = (history >= 0) & (history < n_items)
        rows = np.broadcast_to(np.arange(b)[:, None], history.shape)
        h = sp.csr_matrix((np.ones(int(valid.sum()), np.float32), (rows[valid], history[valid])),
                          shape=(b, n_items))
        h.sum_duplicates()
        h.data[:] = 1.0  # binary: repeats of an item count once
        exclude = sp.csr_matrix(request.exclude)
        has_history = np.diff(h.indptr) > 0
        width = min(k, n_items)
        items = np.full((b, width), PAD, np.int64)
        score = np.full((b, width), -np.inf, np.float32)
        for lo in range(0, b, _SCORE_BLOCK):  # blocks of users bound the dense score matrix
            hi = min(lo + _SCORE_BLOCK, b)
            block = np.asarray(h[lo:hi] @ self.weights_)
            ex = exclude[lo:hi].tocoo()
            stored = (ex.data != 0) & (ex.col < n_items)  # items the model never saw are not scored
            block[ex.row[stored], ex.col[stored]] = -np.inf
            block[~has_history[lo:hi]] = -np.inf
            items[lo:hi], score[lo:hi] = dense_top_k(block, width)
        return Candidates(items, score, {self.name: score})

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        writer.write_arrays(f"{prefix}ease.npz", {"weights": self.weights_})

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: EASEConfig,
             name: str | None = None) -> Self:
        stage = cls(config, name)
        stage.weights_ = reader.read_arrays(f"{prefix}ease.npz")["weights"].astype(np.float32)
        return stage
