"""Embedding channels: item vectors from behaviour, retrieved item-to-item.

Four channels learn one vector per item with skip-gram and negative sampling
(:mod:`recfunnel.training.skipgram`), L2-normalise them and keep each item's
``neighbours`` most cosine-similar items as the sparse ``similarity_`` that
:class:`~recfunnel.stages.recall.item2item.ItemToItemRetriever` retrieves from:
the user's recent history (``request.history``, newest first) votes for its
neighbours with recency weights.

* ``item2vec`` (Barkan & Koenigstein, 2016): SGNS over each user's positive items
  in time order, cut into sessions at gaps over ``session_gap_hours`` (Airbnb
  listing embeddings, Grbovic & Cheng KDD 2018, cut click sessions at 30 minutes;
  ratings and purchases are sparser, hence 24 hours by default).
* ``deepwalk`` (Perozzi et al., KDD 2014): SGNS over weighted random walks on the
  item graph of consecutive behaviour (edge ``i -> j`` weighted by how often ``j``
  followed ``i`` in a session; symmetrised unless ``directed``).
* ``node2vec`` (Grover & Leskovec, KDD 2016): the same with second-order walks;
  ``q < 1`` walks outward (DFS-like), so vectors reflect communities (homophily),
  what item-to-item recall wants, hence ``q = 0.5`` by default.
* ``eges`` (Wang et al., *Billion-scale Commodity Embedding*, KDD 2018): DeepWalk
  walks, but an item's input vector is ``H_v = sum_j softmax(a_v)_j W_j[s_j(v)]``
  over its id and side-information columns (eq. 5-6). An item without training
  pairs (a new item in ``data.item_features`` that nobody interacted with) gets a
  vector from its side information alone: the side embeddings weighted by the
  softmax of the *mean* learned attention logits over the present columns (its own
  logits and id vector were never trained). :meth:`EGESRetriever.vector_from_side_info`
  does the same for items that arrive after fit.

Every channel keeps ``item_vectors_`` ((n_items, dim) float32, unit rows, zero
rows for items it has no vector for) in its artifact, for look-alike recall, MMR
and new-item indexing.

>>> from recfunnel.testing.synthetic import make_planted_data, make_request
>>> data = make_planted_data()
>>> config = Item2VecConfig(session_gap_hours=None, subsample=0, epochs=10, optimizer="sgd")
>>> item2vec = Item2VecRetriever(config).fit(data)  # tiny data: one sequence per user
>>> item2vec.item_vectors_.shape, item2vec.similarity_.shape
((30, 32), (30, 30))
>>> out = item2vec.retrieve(make_request(data, np.array([0]), history_length=5), k=3)
>>> bool((out.item_index[0] < 15).all())  # user 0 is in group 0, items 0..14
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recfunnel.data.dataset import TrainingData
from recfunnel.data.graph import Sequences, item_graph, user_sequences, walk_corpus
from recfunnel.errors import ConfigError, DataError
from recfunnel.features.specs import infer_feature_specs
from recfunnel.features.vocab import UNKNOWN, Vocabulary
from recfunnel.stages.base import Incremental, NewItems
from recfunnel.stages.recall.item2item import ItemToItemRetriever, neighbours_from_vectors
from recfunnel.stages.recall.sparse import keep_top_k_per_row
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.training.skipgram import (
    ItemEmbedding,
    SideInfoEmbedding,
    SideInformation,
    SkipGramConfig,
    SkipGramModel,
    train_skipgram,
)

#: longest list kept of a multi-value side column (longer lists keep their first values)
_MAX_SIDE_VALUES = 32


@dataclass(frozen=True)
class Item2VecConfig:
    """Options of :class:`Item2VecRetriever` (shared by every embedding channel).

    Attributes:
        dim: vector size.
        window: context items on each side (dynamic window, see
            :class:`~recfunnel.training.skipgram.SkipGramConfig`).
        negatives: negatives per positive pair (unigram ** 0.75).
        epochs: passes over the sequences.
        batch_size: positive pairs per optimiser step.
        learning_rate: step size; None: 0.01 for "adam" / "sparse_adam", 0.025 per pair
            for "sgd" (word2vec, decayed linearly).
        optimizer: "adam" (dense: every row moves every step, so use it up to ~10^5
            items), "sparse_adam", or "sgd" (word2vec's update, fastest, cost independent
            of the catalogue); see :class:`~recfunnel.training.skipgram.SkipGramConfig`.
        subsample: word2vec's frequent-item threshold (0 disables it); on catalogues of
            a few hundred items every item is "frequent", so use 0 there.
        session_gap_hours: a user's sequence is cut where two events are further apart
            than this; None keeps one sequence per user.
        neighbours: similar items kept per item.
        recency: history weights: "position" 1 / (1 + recency_decay * pos), "time"
            2 ** (-age_days / half_life_days), or "none".
        recency_decay: slope of the "position" weights.
        half_life_days: half-life of the "time" weights.
        seed: seeds walks, sampling and initialisation.
    """

    dim: int = 32
    window: int = 5
    negatives: int = 5
    epochs: int = 5
    batch_size: int = 1024
    learning_rate: float | None = None
    optimizer: Literal["adam", "sparse_adam", "sgd"] = "adam"
    subsample: float = 1e-3
    session_gap_hours: float | None = 24.0
    neighbours: int = 100
    recency: Literal["position", "time", "none"] = "position"
    recency_decay: float = 0.1
    half_life_days: float = 7.0
    seed: int = 0


@dataclass(frozen=True)
class DeepWalkConfig(Item2VecConfig):
    """Options of :class:`DeepWalkRetriever`: those of :class:`Item2VecConfig` plus the walks.

    Attributes:
        epochs: passes over the walk corpus (it is ``walks_per_node`` times the catalogue,
            so fewer passes than Item2Vec are needed).
        walks_per_node: walks started at every item with edges.
        walk_length: items per walk.
        directed: walk the directed graph (``i -> j`` only when j followed i); by
            default the graph is symmetrised so that walks do not die at items that
            only end sessions.
        weighted: pick the next item by edge weight (otherwise uniformly).
    """

    epochs: int = 2
    walks_per_node: int = 10
    walk_length: int = 20
    directed: bool = False
    weighted: bool = True


@dataclass(frozen=True)
class Node2VecConfig(DeepWalkConfig):
    """Options of :class:`Node2VecRetriever`: those of :class:`DeepWalkConfig` plus p and q.

    Attributes:
        p: return parameter; low p makes a walk step back to the item it came from.
        q: in-out parameter; q < 1 moves away (DFS-like, community structure),
            q > 1 stays near the previous item (BFS-like, structural roles).
    """

    p: float = 1.0
    q: float = 0.5


@dataclass(frozen=True)
class EGESConfig(DeepWalkConfig):
    """Options of :class:`EGESRetriever`: those of :class:`DeepWalkConfig` plus side information.

    Attributes:
        side_columns: item feature columns used as side information; None takes every
            categorical and multi-value column of ``data.item_features`` except free
            text (titles, names, see :func:`~recfunnel.features.specs.is_free_text_column`).
            Numeric columns are used only when named here, cut into quantile buckets.
        numeric_buckets: quantile buckets of a named numeric column.
    """

    side_columns: tuple[str, ...] | None = None
    numeric_buckets: int = 10


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (float32); zero rows stay zero."""
    vectors = np.asarray(vectors, np.float32)
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norm > 0, vectors / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


class _EmbeddingRetriever(ItemToItemRetriever):
    """Shared fit / save / load of the embedding channels.

    Subclasses implement :meth:`_learn_vectors`.

    Learned attributes:
        item_vectors_: (n_items, dim) float32 unit vectors (zero rows: no vector).
        similarity_: (n_items, n_items) CSR float32 cosine of each item's ``neighbours``
            nearest items (no diagonal, only positive similarities).
    """

    item_vectors_: np.ndarray

    def add_item_vectors(self, item_index: np.ndarray, vectors: np.ndarray) -> None:
        """Append item vectors and link them into the similarity graph (new or re-published items).

        The graph is what a fit over the grown catalogue would give, as far as the new
        items go: a new item's row holds its ``config.neighbours`` most similar items
        (positive inner product, self excluded), and a new item enters the row of every
        other item whose ``neighbours`` best it now belongs to (that row drops its weakest
        entry when full). Zero vectors link to nothing. ``similarity_`` is replaced as a
        whole (assigned last), so a retrieval running meanwhile sees the old or the new graph.
        """
        item_index = np.asarray(item_index, np.int64)
        old_vectors = np.asarray(self.item_vectors_, np.float32)
        old_sim = self.similarity_.tocsr()
        n_old = old_sim.shape[0]
        n = max(n_old, int(item_index.max(initial=-1)) + 1)
        all_vectors = np.zeros((n, old_vectors.shape[1]), np.float32)
        all_vectors[:len(old_vectors)] = old_vectors
        all_vectors[item_index] = vectors
        k = int(self.config.neighbours)
        score = vectors @ all_vectors.T  # (N, n): a few published items against the catalogue
        score = np.where(np.isfinite(score) & (score > 0), score, 0.0).astype(np.float32)
        score[np.arange(len(item_index)), item_index] = 0.0
        # rows of the new items: their k nearest
        rows = keep_top_k_per_row(sp.csr_matrix(score), k).tocoo()
        new_r, new_c, new_v = item_index[rows.row], rows.col.astype(np.int64), rows.data
        # columns: other items take a new item when it beats their k-th neighbour
        old = old_sim.copy()
        old.sum_duplicates()
        counts = np.diff(old.indptr)
        kth = np.zeros(n, np.float32)
        filled = np.flatnonzero(counts > 0)
        if len(filled):
            # consecutive non-empty rows: each segment is exactly one row's entries
            row_min = np.minimum.reduceat(old.data, old.indptr[:-1][filled])
            full = counts[filled] >= k
            kth[filled[full]] = row_min[full]
        others = np.ones(n, bool)
        others[item_index] = False
        hit_new, hit_item = np.nonzero((score > kth[None, :]) & (score > 0) & others[None, :])
        col_r, col_c, col_v = hit_item.astype(np.int64), item_index[hit_new], score[hit_new, hit_item]
        # the old graph without the rows of re-published items
        old = old.tocoo()
        keep_old = ~np.isin(old.row, item_index)
        r = np.concatenate([old.row[keep_old].astype(np.int64), new_r, col_r])
        c = np.concatenate([old.col[keep_old].astype(np.int64), new_c, col_c])
        v = np.concatenate([old.data[keep_old], new_v, col_v]).astype(np.float32)
        sim = sp.csr_matrix((v, (r, c)), shape=(n, n))
        sim.sum_duplicates()
        # rows that took a new item keep their k best
        grown = np.unique(col_r)
        grown = grown[np.diff(sim.indptr)[grown] > k]
        if len(grown):
            trimmed = keep_top_k_per_row(sim[grown], k).tocoo()
            sim = sim.tocoo()
            stay = ~np.isin(sim.row, grown)
            sim = sp.csr_matrix((np.concatenate([sim.data[stay], trimmed.data]),
                                 (np.concatenate([sim.row[stay], grown[trimmed.row]]),
                                  np.concatenate([sim.col[stay], trimmed.col]))), shape=(n, n))
        self.item_vectors_ = all_vectors
        self.similarity_ = sim

    def _validate(self) -> None:
        cfg = self.config
        self._skipgram_config().validate(self.kind)
        if cfg.recency not in ("position", "time", "none"):
            raise ConfigError(f"{self.kind}: recency must be 'position', 'time' or 'none', got '{cfg.recency}'")
        if cfg.neighbours < 1:
            raise ConfigError(f"{self.kind}: neighbours must be >= 1, got {cfg.neighbours}")
        if cfg.recency_decay < 0 or not cfg.half_life_days > 0:
            raise ConfigError(f"{self.kind}: recency_decay must be >= 0 and half_life_days > 0")
        if cfg.session_gap_hours is not None and not cfg.session_gap_hours > 0:
            raise ConfigError(f"{self.kind}: session_gap_hours must be > 0 or null, got {cfg.session_gap_hours}")

    def _skipgram_config(self) -> SkipGramConfig:
        cfg = self.config
        return SkipGramConfig(
            dim=cfg.dim, window=cfg.window, negatives=cfg.negatives, epochs=cfg.epochs,
            batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, optimizer=cfg.optimizer,
            subsample=cfg.subsample, seed=cfg.seed,
        )

    def _learn_vectors(self, data: TrainingData) -> np.ndarray:
        """(n_items, dim) raw item vectors; zero rows for items without one."""
        raise NotImplementedError

    def fit(self, data: TrainingData) -> Self:
        """Learn item vectors and their nearest-neighbour similarity from the positives."""
        self._validate()
        self.item_vectors_ = _l2_normalise(self._learn_vectors(data))
        self.similarity_ = neighbours_from_vectors(self.item_vectors_, self.config.neighbours)
        return self

    def _train_id_vectors(self, data: TrainingData, sequences: Sequences) -> np.ndarray:
        """Plain SGNS input vectors; items never a centre get zero rows."""
        model = SkipGramModel(ItemEmbedding(data.n_items, self.config.dim, self._sparse),
                              data.n_items, self.config.dim, self._sparse)
        result = train_skipgram(model, sequences, self._skipgram_config())
        vectors = model.encoder.embedding.weight.detach().numpy().copy()
        vectors[result.centre_counts == 0] = 0.0  # still at their random initialisation
        return vectors

    @property
    def _sparse(self) -> bool:
        # only dense Adam needs dense gradients; SGD and SparseAdam want sparse ones
        return self.config.optimizer != "adam"

    def _walks(self, data: TrainingData, p: float = 1.0, q: float = 1.0) -> Sequences:
        cfg = self.config
        graph = item_graph(user_sequences(data.interactions, cfg.session_gap_hours), data.n_items,
                           directed=cfg.directed)
        # an independent stream for the walks, so walks and training do not share draws
        rng = np.random.default_rng([cfg.seed, 1])
        return walk_corpus(graph, cfg.walks_per_node, cfg.walk_length, rng, weighted=cfg.weighted, p=p, q=q)

    def _validate_walks(self) -> None:
        cfg = self.config
        if cfg.walks_per_node < 1 or cfg.walk_length < 2:
            raise ConfigError(f"{self.kind}: walks_per_node must be >= 1 and walk_length >= 2")

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        super().save(writer, prefix)
        writer.write_arrays(f"{prefix}item_vectors.npz", {"vectors": self.item_vectors_})

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any, name: str | None = None) -> Self:
        stage = super().load(reader, prefix, config, name)
        stage.item_vectors_ = reader.read_arrays(f"{prefix}item_vectors.npz")["vectors"].astype(np.float32)
        return stage


class Item2VecRetriever(_EmbeddingRetriever):
    """Item2Vec: SGNS over each user's time-ordered sessions."""

    kind = "item2vec"

    def __init__(self, config: Item2VecConfig | None = None, name: str | None = None):
        super().__init__(config or Item2VecConfig(), name)

    def _learn_vectors(self, data: TrainingData) -> np.ndarray:
        return self._train_id_vectors(data, user_sequences(data.interactions, self.config.session_gap_hours))


class DeepWalkRetriever(_EmbeddingRetriever):
    """DeepWalk: SGNS over weighted random walks on the item graph."""

    kind = "deepwalk"

    def __init__(self, config: DeepWalkConfig | None = None, name: str | None = None):
        super().__init__(config or DeepWalkConfig(), name)

    def _validate(self) -> None:
        super()._validate()
        self._validate_walks()

    def _learn_vectors(self, data: TrainingData) -> np.ndarray:
        return self._train_id_vectors(data, self._walks(data))


class Node2VecRetriever(_EmbeddingRetriever):
    """Node2vec: SGNS over second-order (p, q) biased walks on the item graph."""

    kind = "node2vec"

    def __init__(self, config: Node2VecConfig | None = None, name: str | None = None):
        super().__init__(config or Node2VecConfig(), name)

    def _validate(self) -> None:
        super()._validate()
        self._validate_walks()
        if not (self.config.p > 0 and self.config.q > 0):
            raise ConfigError(f"node2vec: p and q must be > 0, got p={self.config.p}, q={self.config.q}")

    def _learn_vectors(self, data: TrainingData) -> np.ndarray:
        return self._train_id_vectors(data, self._walks(data, self.config.p, self.config.q))


@dataclass(frozen=True)
class _SideColumn:
    """How one side-information column is encoded.

    ``kind`` is "sparse" (one category), "sequence" (a tuple of categories) or "dense"
    (a number cut at ``edges``); codes are 0 for missing or unknown values, 2.. known.
    """

    name: str
    kind: str
    max_len: int
    vocabulary: Vocabulary | None = None
    edges: np.ndarray | None = None

    @property
    def size(self) -> int:
        if self.vocabulary is not None:
            return len(self.vocabulary)
        return len(self.edges) + 3  # 0 missing, 1 unused, 2.. the len(edges) + 1 buckets

    def encode(self, values: pd.Series) -> np.ndarray:
        """(N, max_len) int64 codes of ``values``; an unknown value counts as missing
        (its embedding row was never trained)."""
        if self.kind == "dense":
            x = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
            codes = np.where(np.isnan(x), 0, np.searchsorted(self.edges, x, side="right") + 2)
            return codes.astype(np.int64)[:, None]
        raw = values.to_numpy(dtype=object)
        if self.kind == "sparse":
            codes = self.vocabulary.transform(raw)[:, None]
        else:
            codes = self.vocabulary.transform_lists(raw, self.max_len)
        return np.where(codes == UNKNOWN, 0, codes)

    @classmethod
    def fit(cls, name: str, kind: str, values: pd.Series, buckets: int) -> _SideColumn:
        if kind == "dense":
            x = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
            x = x[~np.isnan(x)]
            edges = np.unique(np.quantile(x, np.linspace(0, 1, buckets + 1)[1:-1])) if len(x) else np.zeros(0)
            return cls(name, kind, 1, edges=edges.astype(np.float64))
        raw = values.to_numpy(dtype=object)
        vocabulary = Vocabulary().fit(raw)
        if kind == "sparse":
            return cls(name, kind, 1, vocabulary=vocabulary)
        lengths = values.map(lambda v: len(v) if isinstance(v, tuple | list) else 1).to_numpy()
        return cls(name, kind, int(min(max(lengths.max(initial=1), 1), _MAX_SIDE_VALUES)), vocabulary=vocabulary)


class EGESRetriever(_EmbeddingRetriever, Incremental):
    """EGES: walk embeddings enhanced with side information; cold items get vectors.

    Learned attributes (besides ``item_vectors_`` and ``similarity_``):
        side_columns_: the encoded side-information columns, in slot order.
        side_tables_: per column, (vocab, dim) float32 side embeddings ``W_j``.
        side_attention_: (m,) float32 mean learned attention logit of each side column
            over the trained items (the weights of a cold item's vector).
    """

    kind = "eges"
    side_columns_: list[_SideColumn]
    side_tables_: list[np.ndarray]
    side_attention_: np.ndarray

    def __init__(self, config: EGESConfig | None = None, name: str | None = None):
        super().__init__(config or EGESConfig(), name)

    def _validate(self) -> None:
        super()._validate()
        self._validate_walks()
        if self.config.numeric_buckets < 1:
            raise ConfigError(f"eges: numeric_buckets must be >= 1, got {self.config.numeric_buckets}")

    def _fit_side_columns(self, table: pd.DataFrame, catalogue: pd.DataFrame) -> list[_SideColumn]:
        """Side columns fitted on ``table`` (the warm items); kinds read from the whole ``catalogue``."""
        specs = {s.name: s.kind for s in infer_feature_specs(catalogue, "item")}
        requested = self.config.side_columns
        if requested is None:
            names = [n for n, kind in specs.items() if kind in ("sparse", "sequence")]
        else:
            missing = [n for n in requested if n not in table.columns]
            if missing:
                raise DataError(f"eges: side_columns {missing} are not item feature columns; "
                                f"found {list(catalogue.columns)}")
            names = list(requested)
        columns = []
        for name in names:
            kind = specs.get(name)
            if kind is None:  # a named free-text column is taken as a category
                kind = "sparse"
            columns.append(_SideColumn.fit(name, kind, table[name], self.config.numeric_buckets))
        return columns

    def _encode(self, table: pd.DataFrame) -> list[np.ndarray]:
        codes = []
        for column in self.side_columns_:
            values = table[column.name] if column.name in table.columns else pd.Series([None] * len(table))
            codes.append(column.encode(values.reset_index(drop=True)))
        return codes

    def _learn_vectors(self, data: TrainingData) -> np.ndarray:
        cfg = self.config
        walks = self._walks(data)
        # vocabularies from the items the walks visit: a value that only untrained items carry
        # would keep a random embedding row, so it must map to "unknown" (no information)
        in_walks = np.bincount(walks.items, minlength=data.n_items) > 0
        self.side_columns_ = self._fit_side_columns(data.item_features.loc[in_walks], data.item_features)
        side = SideInformation(
            tuple(c.name for c in self.side_columns_), tuple(self._encode(data.item_features)),
            tuple(c.size for c in self.side_columns_),
        )
        encoder = SideInfoEmbedding(data.n_items, cfg.dim, side, self._sparse)
        model = SkipGramModel(encoder, data.n_items, cfg.dim, self._sparse)
        result = train_skipgram(model, walks, self._skipgram_config())
        trained = result.centre_counts > 0
        self.side_tables_ = [bag.weight.detach().numpy().astype(np.float32) for bag in encoder.columns]
        # mean logit of each side column over the trained items that have it (a missing
        # column's logit is masked out of the softmax and never moves from 0)
        logits = encoder.attention.weight.detach().numpy()[:, 1:].astype(np.float64)
        present = np.stack([(c > 0).any(axis=1) for c in side.codes], axis=1) if side.codes \
            else np.zeros((data.n_items, 0), bool)
        counted = present & trained[:, None]
        self.side_attention_ = ((logits * counted).sum(axis=0) / np.maximum(counted.sum(axis=0), 1)).astype(np.float32)
        with torch.no_grad():
            vectors = encoder(torch.arange(data.n_items)).numpy()
        # items without training pairs: their id vector and logits are untrained, use side info only
        vectors[~trained] = self._side_only(list(side.codes), data.n_items)[~trained]
        return vectors

    def _side_only(self, codes: list[np.ndarray], n: int) -> np.ndarray:
        """(n, dim) ``sum_j softmax(side_attention_ over present columns)_j W_j[s_j]`` (zeros
        where an item has no side information)."""
        out = np.zeros((n, self.config.dim), np.float32)
        if not codes:
            return out
        present = np.stack([(c > 0).any(axis=1) for c in codes], axis=1)  # (N, m)
        # softmax over the present columns only; a row with none gets all-zero weights
        logits = self.side_attention_[None, :].astype(np.float64) - self.side_attention_.max(initial=0.0)
        shifted = np.where(present, np.exp(logits), 0.0)
        weight = shifted / np.maximum(shifted.sum(axis=1, keepdims=True), 1e-300)
        for j, (c, table) in enumerate(zip(codes, self.side_tables_, strict=True)):  # a loop over columns
            # mean of the present values' embeddings (EmbeddingBag "mean" without padding)
            count = np.maximum((c > 0).sum(axis=1, keepdims=True), 1)
            column_vector = table[c].sum(axis=1) / count  # row 0 of the table is zero padding
            out += weight[:, j:j + 1] * column_vector
        return out

    def publish(self, items: NewItems) -> bool:
        """Give published items vectors from their side information and link them into ``similarity_``.

        See :meth:`vector_from_side_info` and :meth:`add_item_vectors`: a history holding one
        of a new item's neighbours retrieves it, and a history holding it its neighbours.
        """
        self.add_item_vectors(items.item_index, self.vector_from_side_info(items.attributes))
        return True

    def vector_from_side_info(self, side_features_table_rows: pd.DataFrame) -> np.ndarray:
        """Unit vectors of (new) items from their side information alone.

        Args:
            side_features_table_rows: N rows with the item feature columns (as in
                ``data.item_features``); absent columns and unknown values count as missing.

        Returns:
            (N, dim) float32 unit vectors, comparable with ``item_vectors_``; zero rows
            for items with no known side information.
        """
        return _l2_normalise(self._side_only(self._encode(side_features_table_rows), len(side_features_table_rows)))

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        super().save(writer, prefix)
        arrays: dict[str, np.ndarray] = {"attention": self.side_attention_}
        meta = []
        for j, (column, table) in enumerate(zip(self.side_columns_, self.side_tables_, strict=True)):
            arrays[f"table_{j}"] = table
            if column.vocabulary is not None:
                arrays.update({f"vocab_{j}_{k}": v for k, v in column.vocabulary.to_arrays().items()})
            else:
                arrays[f"edges_{j}"] = column.edges
            meta.append({"name": column.name, "kind": column.kind, "max_len": column.max_len})
        writer.write_arrays(f"{prefix}side_information.npz", arrays)
        writer.write_json(f"{prefix}side_information.json", {"columns": meta})

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: Any, name: str | None = None) -> Self:
        stage = super().load(reader, prefix, config, name)
        arrays = reader.read_arrays(f"{prefix}side_information.npz")
        meta = reader.read_json(f"{prefix}side_information.json")["columns"]
        stage.side_attention_ = arrays["attention"].astype(np.float32)
        stage.side_tables_ = [arrays[f"table_{j}"].astype(np.float32) for j in range(len(meta))]
        stage.side_columns_ = []
        for j, m in enumerate(meta):
            if m["kind"] == "dense":
                column = _SideColumn(m["name"], "dense", int(m["max_len"]), edges=arrays[f"edges_{j}"])
            else:
                vocab = Vocabulary.from_arrays({k: arrays[f"vocab_{j}_{k}"] for k in ("values", "counts", "min_count")})
                column = _SideColumn(m["name"], m["kind"], int(m["max_len"]), vocabulary=vocab)
            stage.side_columns_.append(column)
        return stage


__all__ = [
    "DeepWalkConfig", "DeepWalkRetriever", "EGESConfig", "EGESRetriever", "Item2VecConfig",
    "Item2VecRetriever", "Node2VecConfig", "Node2VecRetriever",
]
