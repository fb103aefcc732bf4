"""One embedding collection for every categorical input of a model.

All sparse fields and multi-valued fields (bags) share one fused table with
per-field row offsets, so a batch of F fields is one lookup (torchrec's
EmbeddingBagCollection idea); bags are the mean over their non-padding ids;
behaviour sequences read the rows of the sparse field they point at.
Dense columns can be turned into fields too (one learned vector per column,
scaled by the value), which is what AutoInt and FiBiNET do.
"""

from __future__ import annotations

import torch
from torch import nn

from recfunnel.layers.inputs import ModelSchema, TensorBatch


class EmbeddingCollection(nn.Module):
    """Embeddings of the sparse fields, bags and sequences of a :class:`ModelSchema`.

    Every sparse field and every bag shares one table (rows of field ``i`` start at
    ``offsets[i]``), so a batch's embeddings are one gather and one scatter-add in
    the backward pass, whatever the number of fields. With ``first_order=True`` the
    table has one more column holding each id's first-order (linear) weight, so FM,
    DeepFM and their kin read their linear terms from the same gather.

    Args:
        schema: the model inputs.
        dim: embedding width ``d``.
        init_std: standard deviation of the normal initialisation.
        first_order: add a first-order weight per id (initialised to 0).
    """

    def __init__(self, schema: ModelSchema, dim: int, init_std: float = 1e-2, first_order: bool = False):
        super().__init__()
        self.schema = schema
        self.dim = dim
        self.first_order = first_order
        sizes = [f.vocab_size for f in schema.sparse] + [f.vocab_size for f in schema.bags]
        starts = torch.tensor([0, *sizes], dtype=torch.long).cumsum(0)
        n_sparse = len(schema.sparse)
        self.register_buffer("offsets", starts[:n_sparse].clone(), persistent=False)
        self.register_buffer("bag_offsets", starts[n_sparse:-1].clone(), persistent=False)
        self.table = nn.Embedding(max(int(starts[-1]), 1), dim + int(first_order))
        with torch.no_grad():
            nn.init.normal_(self.table.weight, std=init_std)
            if first_order:
                self.table.weight[:, dim].zero_()
        self._seq_offset = {s.name: schema.sparse_position(s.target) for s in schema.sequences}

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        # index_select's backward (one index_add_) is about twice as fast on CPU as
        # nn.Embedding's embedding_dense_backward for these small tables
        weight = self.table.weight
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    def lookup(self, batch: TensorBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, F, d) sparse then bag fields (bags: mean over the non-padding ids, 0 when empty) and
        (N,) the sum of their first-order weights (None without ``first_order``), from one gather."""
        ids = batch.sparse + self.offsets
        if self.schema.bags:
            bag_ids = [batch.bags[f.name] for f in self.schema.bags]
            rows = self._gather(torch.cat([ids] + [b + self.bag_offsets[j] for j, b in enumerate(bag_ids)], 1))
            parts, start = [rows[:, :ids.shape[1]]], ids.shape[1]
            for b in bag_ids:
                mask = (b > 0).to(rows.dtype)
                weight = mask / mask.sum(1, keepdim=True).clamp_min(1.0)
                # a multiply and a sum: batched (N, 1, L) @ (N, L, d) matmuls are slower on CPU
                parts.append((rows[:, start:start + b.shape[1]] * weight.unsqueeze(-1)).sum(1, keepdim=True))
                start += b.shape[1]
            rows = torch.cat(parts, 1)
        else:
            rows = self._gather(ids)
        if not self.first_order:
            return rows, None
        return rows[..., :self.dim], rows[..., self.dim].sum(1)

    def sparse(self, batch: TensorBatch) -> torch.Tensor:
        """(N, S, d) embeddings of the sparse fields (one fused lookup)."""
        return self._gather(batch.sparse + self.offsets)[..., :self.dim]

    def fields(self, batch: TensorBatch) -> torch.Tensor:
        """(N, F, d) sparse then bag field embeddings, F = ``schema.n_fields``."""
        return self.lookup(batch)[0]

    def fields_and_first_order(self, batch: TensorBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, F, d) field embeddings and (N,) the sum of the fields' first-order weights, from one gather.

        Raises:
            ValueError: when the collection was built without ``first_order``.
        """
        if not self.first_order:
            raise ValueError("this EmbeddingCollection has no first-order weights (first_order=False)")
        return self.lookup(batch)

    def sequence(self, batch: TensorBatch, name: str | None = None) -> torch.Tensor:
        """(N, L, d) embeddings of a behaviour sequence (the main one by default); padding rows are 0."""
        name = name or self.schema.sequences[0].name
        ids = batch.sequences[name]
        pos = self._seq_offset[name]
        emb = self._gather(ids + self.offsets[pos])[..., :self.dim]
        return emb * (ids > 0).unsqueeze(-1).to(emb.dtype)

    def target(self, batch: TensorBatch, name: str | None = None) -> torch.Tensor:
        """(N, d) embedding of the sparse field a sequence points at (the target item)."""
        name = name or self.schema.sequences[0].name
        pos = self._seq_offset[name]
        return self._gather(batch.sparse[:, pos] + self.offsets[pos])[..., :self.dim]

    def sequences_and_targets(self, batch: TensorBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L, T*d) all sequences concatenated per behaviour, (N, T*d) their targets."""
        seqs = [self.sequence(batch, s.name) for s in self.schema.sequences]
        tgts = [self.target(batch, s.name) for s in self.schema.sequences]
        return torch.cat(seqs, -1), torch.cat(tgts, -1)


class DenseEmbedding(nn.Module):
    """(N, D) dense values -> (N, D, d): one learned vector per column, scaled by its value."""

    def __init__(self, n_dense: int, dim: int, init_std: float = 1e-2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_dense, dim) * init_std)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.unsqueeze(-1) * self.weight


class LinearTerms(nn.Module):
    """First-order terms: one scalar weight per sparse id and bag id, a linear map of the dense columns.

    This is LR, and the linear part of FM, Wide&Deep and DeepFM. With ``ids=False``
    only the dense map and the bias are kept: the id weights then live in an
    :class:`EmbeddingCollection` built with ``first_order=True`` (one gather for both).
    """

    def __init__(self, schema: ModelSchema, ids: bool = True):
        super().__init__()
        self.schema = schema
        self.ids = EmbeddingCollection(schema, 0, first_order=True) if ids else None
        self.dense = nn.Linear(len(schema.dense), 1, bias=False) if schema.dense else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        """(N,) sum of first-order terms plus the bias."""
        out = self.bias.expand(len(batch))
        if self.ids is not None:
            out = out + self.ids.fields_and_first_order(batch)[1]
        if self.dense is not None:
            out = out + self.dense(batch.dense).squeeze(-1)
        return out


__all__ = ["DenseEmbedding", "EmbeddingCollection", "LinearTerms"]
