"""From ranking features to model tensors: the one path of every neural ranker.

:class:`TensorEncoder` turns the :class:`~recfunnel.types.FeatureBatch` of
:class:`~recfunnel.features.ranking.RankingFeatureBuilder` plus the request's
point-in-time history into a :class:`~recfunnel.layers.inputs.TensorBatch`.
Training rows and serving requests go through the same ``transform``, so the
model sees the same inputs offline and online, and the history is the one the
request carries (events strictly before the request time: no leakage).

Inputs it adds to the builder's features:

* ``user_id`` and ``item_id`` as sparse fields (unknown ids map to 1);
* ``item_category``: the first value of the first small categorical item column
  (genre, category), the field SIM's hard search and the history's side
  sequence read;
* bags: every multi-valued item column (genres, tags), padded id lists;
* sequences: the user's last ``max_sequence_length`` items and their categories,
  newest first, with their age in seconds at the request time.

Dense columns are squashed with sign(x)·log1p(|x|) (counts span orders of
magnitude), standardised with the training mean and deviation; missing values
become 0 with a missing-indicator column where training had both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recfunnel.data.dataset import TrainingData
from recfunnel.features.ranking import RankingFeatureBuilder, _as_lists, _column_kind
from recfunnel.features.vocab import Vocabulary
from recfunnel.layers.inputs import ModelSchema, SequenceField, SparseField, TensorBatch
from recfunnel.types import Candidates, FeatureBatch, RequestBatch


@dataclass(frozen=True)
class TensorEncoderConfig:
    """What the neural rankers read besides the ranking features.

    Attributes:
        max_sequence_length: behaviour slots per row (the newest items of the history).
        id_features: add ``user_id`` and ``item_id`` embeddings.
        max_bag_values: slots of a multi-valued field per item.
        max_category_values: largest vocabulary of the ``item_category`` field and of bags.
        dense_buckets: when > 0, every dense column also becomes a sparse field ``<name>_bucket``
            of up to this many equal-frequency buckets (edges from the training rows; missing
            values get their own id). Networks then learn thresholds as trees do, while keeping
            the raw value too.
    """

    max_sequence_length: int = 50
    id_features: bool = True
    max_bag_values: int = 8
    max_category_values: int = 5000
    dense_buckets: int = 0


class TensorEncoder:
    """Fit on training features once; transform any request afterwards (see module docstring)."""

    def __init__(self, config: TensorEncoderConfig | None = None):
        self.config = config or TensorEncoderConfig()

    # ------------------------------------------------------------------ fit
    def fit(self, data: TrainingData, features: FeatureBatch,
            builder: RankingFeatureBuilder | None = None) -> TensorEncoder:
        """Vocabularies from ``data``'s tables; dense normalisation from training ``features``."""
        cfg = self.config
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        # vocabulary sizes from the builder's full tables when given: a profile value absent from the
        # sampled training rows must still get its own embedding row at serving time
        tables = {} if builder is None else {**builder.user_sparse_, **builder.item_sparse_}
        self.sparse_sizes_ = {name: max(int(np.max(tables.get(name, v), initial=1)) + 1, 2)
                              for name, v in features.sparse.items()}
        self.bag_codes_: dict[str, np.ndarray] = {}
        self.bag_sizes_: dict[str, int] = {}
        self.category_: np.ndarray | None = None
        self.category_size_ = 0
        for col in data.item_features.columns:
            series = data.item_features[col]
            kind = _column_kind(series)
            if kind == "dense":
                continue
            lists = _as_lists(series)
            vocab = Vocabulary().fit([v for row in lists for v in row])
            if not 1 <= len(vocab) - 2 <= cfg.max_category_values or len(vocab) - 2 >= 0.5 * len(series):
                continue  # ids or free text, not categories
            width = min(max((len(r) for r in lists), default=0), cfg.max_bag_values)
            codes = np.zeros((len(lists), max(width, 1)), np.int64)
            lengths = np.fromiter((min(len(r), width) for r in lists), np.int64, len(lists))
            flat = [v for r in lists for v in r[:width]]
            if flat:
                rows = np.repeat(np.arange(len(lists)), lengths)
                slots = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
                codes[rows, slots] = vocab.transform(np.asarray(flat, dtype=object))
            if self.category_ is None:
                self.category_, self.category_size_ = codes[:, 0].copy(), len(vocab)
            if kind == "multi":
                self.bag_codes_[f"item_{col}"] = codes
                self.bag_sizes_[f"item_{col}"] = len(vocab)
        # dense normalisation
        self.dense_names_: list[str] = []
        self.dense_mean_: list[float] = []
        self.dense_std_: list[float] = []
        self.missing_names_: list[str] = []
        for name, values in features.dense.items():
            x = _squash(np.asarray(values, np.float64))
            ok = np.isfinite(x)
            if not ok.any():
                continue
            mean, std = float(x[ok].mean()), float(x[ok].std())
            if std < 1e-12 and ok.all():
                continue  # a constant column carries nothing
            self.dense_names_.append(name)
            self.dense_mean_.append(mean)
            self.dense_std_.append(max(std, 1e-6))
            if not ok.all():
                self.missing_names_.append(name)
        self.bucket_edges_: dict[str, np.ndarray] = {}
        if cfg.dense_buckets > 0:
            qs = np.linspace(0.0, 1.0, cfg.dense_buckets + 1)[1:-1]
            for name in self.dense_names_:
                x = np.asarray(features.dense[name], np.float64)
                x = x[np.isfinite(x)]
                edges = np.unique(np.quantile(x, qs)) if len(x) else np.zeros(0)
                self.bucket_edges_[name] = edges
        return self

    def schema(self) -> ModelSchema:
        """The inputs of models trained on this encoder's batches."""
        sparse = []
        if self.config.id_features:
            sparse += [SparseField("user_id", self.n_users_ + 2), SparseField("item_id", self.n_items_ + 2)]
        if self.category_ is not None:
            sparse.append(SparseField("item_category", self.category_size_))
        sparse += [SparseField(_profile_name(n), s) for n, s in self.sparse_sizes_.items()]
        # ids: 0 missing, 1 unused (the unknown slot of every vocabulary), 2.. buckets
        sparse += [SparseField(f"{n}_bucket", len(e) + 3) for n, e in self.bucket_edges_.items()]
        dense = tuple(self.dense_names_) + tuple(f"{n}_missing" for n in self.missing_names_)
        bags = tuple(SparseField(n, s) for n, s in self.bag_sizes_.items())
        sequences: tuple[SequenceField, ...] = ()
        if self.config.max_sequence_length > 0:
            if not self.config.id_features:
                raise ValueError("behaviour sequences need id_features=True (they share the item_id table)")
            sequences = (SequenceField("hist_item_id", "item_id"),)
            if self.category_ is not None:
                sequences += (SequenceField("hist_item_category", "item_category"),)
        return ModelSchema(tuple(sparse), dense, bags, sequences,
                           self.config.max_sequence_length if sequences else 0)

    # ------------------------------------------------------------ transform
    def transform(self, request: RequestBatch, candidates: Candidates, features: FeatureBatch,
                  rows: np.ndarray, cols: np.ndarray) -> TensorBatch:
        """The tensors of the N feature rows (``rows``/``cols``: their request row and candidate slot)."""
        items = candidates.item_index[rows, cols]
        users = request.user_index[rows]
        n = len(rows)
        sparse_cols = []
        if self.config.id_features:
            sparse_cols += [_ids(users, self.n_users_), _ids(items, self.n_items_)]
        if self.category_ is not None:
            sparse_cols.append(_lookup(self.category_, items))
        for name in self.sparse_sizes_:
            v = np.asarray(features.sparse[name], np.int64)
            sparse_cols.append(np.where(v < self.sparse_sizes_[name], v, 1))
        for name, edges in self.bucket_edges_.items():
            x = np.asarray(features.dense[name], np.float64)
            bucket = np.searchsorted(edges, x, side="right") + 2
            sparse_cols.append(np.where(np.isfinite(x), bucket, 0).astype(np.int64))
        sparse = np.stack(sparse_cols, 1) if sparse_cols else np.zeros((n, 0), np.int64)

        # filled column by column into the float32 result: stacking float64 columns first would hold
        # three copies of the matrix at once (the columns, the float64 stack, the float32 cast)
        dense = np.empty((n, len(self.dense_names_) + len(self.missing_names_)), np.float32)
        for j, (name, mean, std) in enumerate(zip(self.dense_names_, self.dense_mean_, self.dense_std_,
                                                  strict=True)):
            x = (_squash(np.asarray(features.dense[name], np.float64)) - mean) / std
            dense[:, j] = np.where(np.isfinite(x), np.clip(x, -10, 10), 0.0)
        for j, name in enumerate(self.missing_names_, start=len(self.dense_names_)):
            dense[:, j] = ~np.isfinite(np.asarray(features.dense[name], np.float64))

        bags = {name: torch.as_tensor(_lookup(codes, items)) for name, codes in self.bag_codes_.items()}
        sequences: dict[str, torch.Tensor] = {}
        age = None
        length = self.config.max_sequence_length
        if length > 0 and self.config.id_features:
            hist = request.history[:, :length]
            hist_time = request.history_time[:, :length]
            if hist.shape[1] < length:
                pad = length - hist.shape[1]
                hist = np.pad(hist, ((0, 0), (0, pad)), constant_values=-1)
                hist_time = np.pad(hist_time, ((0, 0), (0, pad)))
            per_request = _ids(hist, self.n_items_)
            per_request[hist < 0] = 0
            sequences["hist_item_id"] = torch.as_tensor(per_request[rows])
            if self.category_ is not None:
                cat = _lookup(self.category_, hist)
                cat[hist < 0] = 0
                sequences["hist_item_category"] = torch.as_tensor(cat[rows])
            ages = np.where(hist >= 0, np.maximum(request.time[:, None] - hist_time, 0), 0).astype(np.float32)
            age = torch.as_tensor(ages[rows])
        return TensorBatch(sparse=torch.as_tensor(sparse), dense=torch.as_tensor(dense), bags=bags,
                           sequences=sequences, sequence_age=age)

    # ---------------------------------------------------------- persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"bag:{k}": v for k, v in self.bag_codes_.items()}
        if self.category_ is not None:
            arrays["category"] = self.category_
        for k, v in self.bucket_edges_.items():
            arrays[f"bucket:{k}"] = v
        arrays["dense_mean"] = np.asarray(self.dense_mean_, np.float64)
        arrays["dense_std"] = np.asarray(self.dense_std_, np.float64)
        return arrays

    def meta(self) -> dict:
        # lists of pairs, not objects: the manifest writer sorts object keys and field order is the schema
        return {"n_users": self.n_users_, "n_items": self.n_items_,
                "sparse_sizes": [[k, v] for k, v in self.sparse_sizes_.items()],
                "bag_sizes": [[k, v] for k, v in self.bag_sizes_.items()], "category_size": self.category_size_,
                "dense_names": self.dense_names_, "missing_names": self.missing_names_,
                "bucket_names": list(self.bucket_edges_)}

    @classmethod
    def from_arrays(cls, config: TensorEncoderConfig, arrays: dict[str, np.ndarray], meta: dict) -> TensorEncoder:
        enc = cls(config)
        enc.n_users_, enc.n_items_ = int(meta["n_users"]), int(meta["n_items"])
        enc.sparse_sizes_ = {str(k): int(v) for k, v in meta["sparse_sizes"]}
        enc.bag_sizes_ = {str(k): int(v) for k, v in meta["bag_sizes"]}
        enc.bag_codes_ = {k: arrays[f"bag:{k}"] for k in enc.bag_sizes_}
        enc.category_size_ = int(meta["category_size"])
        enc.category_ = arrays.get("category")
        enc.dense_names_ = list(meta["dense_names"])
        enc.missing_names_ = list(meta["missing_names"])
        enc.dense_mean_ = arrays["dense_mean"].tolist()
        enc.dense_std_ = arrays["dense_std"].tolist()
        enc.bucket_edges_ = {k: arrays[f"bucket:{k}"] for k in meta.get("bucket_names", [])}
        return enc


#: fields the encoder makes itself; a profile column that would take one of these names is renamed
RESERVED_FIELDS = frozenset({"user_id", "item_id", "item_category"})


def _profile_name(name: str) -> str:
    """Schema name of a ranking-feature column (``item_category`` from an item column ``category``
    would collide with the encoder's own field)."""
    return f"{name}_profile" if name in RESERVED_FIELDS else name


def _squash(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _ids(index: np.ndarray, n: int) -> np.ndarray:
    """Embedding rows of indices: i + 2 for 0 <= i < n, 1 (unknown) otherwise."""
    index = np.asarray(index, np.int64)
    return np.where((index >= 0) & (index < n), index + 2, 1)


def _lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """table[index] with 1 (unknown) rows for indices outside the table."""
    index = np.asarray(index, np.int64)
    ok = (index >= 0) & (index < len(table))
    out = table[np.where(ok, index, 0)]
    unknown = np.ones_like(out)
    if out.ndim > index.ndim:
        unknown[..., 1:] = 0
        ok = ok[..., None]
    return np.where(ok, out, unknown)


__all__ = ["TensorEncoder", "TensorEncoderConfig"]
