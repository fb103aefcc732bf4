"""What a ranking model reads: the schema of its inputs and one batch of them as tensors.

Every ranking model (``recfunnel.stages.rank.models``) is built from a
:class:`ModelSchema` and called on a :class:`TensorBatch`. The schema says which
columns exist; the batch holds them for ``N`` (user, item) rows:

* ``sparse``: (N, S) int64, one id per row for each sparse field (0 = missing,
  1 = unknown, as in :class:`~recfunnel.features.vocab.Vocabulary`);
* ``dense``: (N, D) float32, already normalised (no NaN: missing values are 0
  and a missing-indicator column is added upstream where it matters);
* ``bags``: name -> (N, M) int64 multi-valued fields (genres, tags), 0 = padding,
  mean-pooled into one field embedding;
* ``sequences``: name -> (N, L) int64 behaviour sequences, newest first, 0 =
  padding. Each sequence field shares the embedding table of a sparse field
  (``hist_item_id`` reads ``item_id``'s table), so the target item and the
  history live in one space, as DIN and its successors require;
* ``sequence_age``: (N, L) float32 seconds between each behaviour and the
  request time (>= 0; 0 at padding), for time-gap embeddings, session splits
  and the interval gates of the time-aware LSTM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SparseField:
    """A categorical field with its own embedding rows.

    Attributes:
        name: column name.
        vocab_size: rows of the embedding table, including 0 (missing) and 1 (unknown).
    """

    name: str
    vocab_size: int

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"field {self.name!r}: vocab_size must be >= 2 (missing and unknown), got {self.vocab_size}")


@dataclass(frozen=True)
class SequenceField:
    """A behaviour sequence whose ids index the table of sparse field ``target``.

    Attributes:
        name: column name (e.g. ``hist_item_id``).
        target: name of the sparse field it shares the embedding table with (e.g. ``item_id``).
    """

    name: str
    target: str


@dataclass(frozen=True)
class ModelSchema:
    """The inputs of a ranking model.

    Attributes:
        sparse: one-id categorical fields, in the column order of ``TensorBatch.sparse``.
        dense: names of the dense columns, in the column order of ``TensorBatch.dense``.
        bags: multi-valued categorical fields (mean-pooled).
        sequences: behaviour sequences; the first one is the main behaviour
            sequence (the user's items) that attention models attend over.
        max_sequence_length: L, the slots of every sequence.
    """

    sparse: tuple[SparseField, ...]
    dense: tuple[str, ...] = ()
    bags: tuple[SparseField, ...] = ()
    sequences: tuple[SequenceField, ...] = ()
    max_sequence_length: int = 0

    def __post_init__(self) -> None:
        names = [f.name for f in self.sparse] + list(self.dense) + [f.name for f in self.bags] + [
            s.name for s in self.sequences]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate input names in the model schema: {sorted(dup)}")
        sparse_names = {f.name for f in self.sparse}
        for s in self.sequences:
            if s.target not in sparse_names:
                raise ValueError(f"sequence {s.name!r} shares the table of {s.target!r}, which is not a sparse field")
        if self.sequences and self.max_sequence_length < 1:
            raise ValueError("max_sequence_length must be >= 1 when the schema has sequences")

    @property
    def n_fields(self) -> int:
        """Fields of the (N, F, d) field-embedding tensor: sparse then bags (dense excluded)."""
        return len(self.sparse) + len(self.bags)

    def sparse_position(self, name: str) -> int:
        for i, f in enumerate(self.sparse):
            if f.name == name:
                return i
        raise KeyError(f"no sparse field {name!r} in the schema")

    def to_dict(self) -> dict:
        return {
            "sparse": [[f.name, f.vocab_size] for f in self.sparse],
            "dense": list(self.dense),
            "bags": [[f.name, f.vocab_size] for f in self.bags],
            "sequences": [[s.name, s.target] for s in self.sequences],
            "max_sequence_length": self.max_sequence_length,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelSchema:
        return cls(
            sparse=tuple(SparseField(str(n), int(v)) for n, v in d["sparse"]),
            dense=tuple(str(n) for n in d["dense"]),
            bags=tuple(SparseField(str(n), int(v)) for n, v in d["bags"]),
            sequences=tuple(SequenceField(str(n), str(t)) for n, t in d["sequences"]),
            max_sequence_length=int(d["max_sequence_length"]),
        )


@dataclass
class TensorBatch:
    """N rows of model inputs (see the module docstring for shapes).

    ``label`` (N,) float32 in [0, 1] and ``weight`` (N,) float32 are set for training rows;
    ``group`` (N,) int64 names the request (user) a row belongs to, for pair-wise and
    list-wise losses and GAUC.
    """

    sparse: torch.Tensor
    dense: torch.Tensor
    bags: dict[str, torch.Tensor] = field(default_factory=dict)
    sequences: dict[str, torch.Tensor] = field(default_factory=dict)
    sequence_age: torch.Tensor | None = None
    label: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    group: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def select(self, index: torch.Tensor | slice) -> TensorBatch:
        """The rows at ``index`` (a slice, an integer tensor of positions or a boolean mask)."""

        if isinstance(index, slice):
            def pick(t: torch.Tensor | None) -> torch.Tensor | None:
                return None if t is None else t[index]
        else:
            # index_select, not t[index]: advanced indexing of a 2-d CPU tensor is ~10x slower
            index = torch.as_tensor(index)
            index = index.nonzero().ravel() if index.dtype == torch.bool else index.long()

            def pick(t: torch.Tensor | None) -> torch.Tensor | None:
                return None if t is None else t.index_select(0, index)

        return TensorBatch(
            sparse=pick(self.sparse), dense=pick(self.dense),
            bags={k: pick(v) for k, v in self.bags.items()},
            sequences={k: pick(v) for k, v in self.sequences.items()},
            sequence_age=pick(self.sequence_age), label=pick(self.label), weight=pick(self.weight),
            group=pick(self.group),
        )

    def without_sequences(self) -> TensorBatch:
        """The same rows without behaviour sequences (shares every other tensor)."""
        return dataclasses.replace(self, sequences={}, sequence_age=None)

    @property
    def sequence_mask(self) -> torch.Tensor | None:
        """(N, L) bool, true at real behaviours of the main sequence (None without sequences)."""
        if not self.sequences:
            return None
        return next(iter(self.sequences.values())) > 0


__all__ = ["ModelSchema", "SequenceField", "SparseField", "TensorBatch"]
