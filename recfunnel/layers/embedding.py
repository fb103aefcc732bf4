"""One embedding collection for every categorical input of a model.

All sparse fields share one fused ``nn.Embedding`` with per-field row offsets,
so a batch of S fields is one lookup (torchrec's EmbeddingBagCollection idea);
multi-valued fields share one fused ``nn.EmbeddingBag`` (mean over the non-padding
ids); behaviour sequences read the rows of the sparse field they point at.
Dense columns can be turned into fields too (one learned vector per column,
scaled by the value), which is what AutoInt and FiBiNET do.
"""

from __future__ import annotations

import torch
from torch import nn

from recfunnel.layers.inputs import ModelSchema, TensorBatch


class EmbeddingCollection(nn.Module):
    """Embeddings of the sparse fields, bags and sequences of a :class:`ModelSchema`.

    Args:
        schema: the model inputs.
        dim: embedding width ``d``.
        init_std: standard deviation of the normal initialisation.
    """

    def __init__(self, schema: ModelSchema, dim: int, init_std: float = 1e-2):
        super().__init__()
        self.schema = schema
        self.dim = dim
        sizes = torch.tensor([f.vocab_size for f in schema.sparse], dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.table = nn.Embedding(max(int(sizes.sum()), 1), dim)
        nn.init.normal_(self.table.weight, std=init_std)
        bag_sizes = torch.tensor([f.vocab_size for f in schema.bags], dtype=torch.long)
        self.register_buffer("bag_offsets", torch.cumsum(bag_sizes, 0) - bag_sizes, persistent=False)
        self.bag_table = nn.Embedding(max(int(bag_sizes.sum()), 1), dim)
        nn.init.normal_(self.bag_table.weight, std=init_std)
        self._seq_offset = {s.name: schema.sparse_position(s.target) for s in schema.sequences}

    def sparse(self, batch: TensorBatch) -> torch.Tensor:
        """(N, S, d) embeddings of the sparse fields (one fused lookup)."""
        return self.table(batch.sparse + self.offsets)

    def bags(self, batch: TensorBatch) -> torch.Tensor:
        """(N, B, d) mean embeddings of the multi-valued fields (zeros for an empty bag)."""
        if not self.schema.bags:
            return batch.dense.new_zeros(len(batch), 0, self.dim)
        out = []
        for j, f in enumerate(self.schema.bags):
            ids = batch.bags[f.name]
            mask = (ids > 0).unsqueeze(-1).to(self.bag_table.weight.dtype)
            emb = self.bag_table(ids + self.bag_offsets[j]) * mask
            out.append(emb.sum(1) / mask.sum(1).clamp_min(1.0))
        return torch.stack(out, 1)

    def fields(self, batch: TensorBatch) -> torch.Tensor:
        """(N, F, d) sparse then bag field embeddings, F = ``schema.n_fields``."""
        emb = self.sparse(batch)
        if self.schema.bags:
            emb = torch.cat([emb, self.bags(batch)], 1)
        return emb

    def sequence(self, batch: TensorBatch, name: str | None = None) -> torch.Tensor:
        """(N, L, d) embeddings of a behaviour sequence (the main one by default); padding rows are 0."""
        name = name or self.schema.sequences[0].name
        ids = batch.sequences[name]
        pos = self._seq_offset[name]
        emb = self.table(ids + self.offsets[pos])
        return emb * (ids > 0).unsqueeze(-1).to(emb.dtype)

    def target(self, batch: TensorBatch, name: str | None = None) -> torch.Tensor:
        """(N, d) embedding of the sparse field a sequence points at (the target item)."""
        name = name or self.schema.sequences[0].name
        pos = self._seq_offset[name]
        return self.table(batch.sparse[:, pos] + self.offsets[pos])

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

    This is LR, and the linear part of FM, Wide&Deep and DeepFM.
    """

    def __init__(self, schema: ModelSchema):
        super().__init__()
        self.schema = schema
        sizes = torch.tensor([f.vocab_size for f in schema.sparse], dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.weight = nn.Embedding(max(int(sizes.sum()), 1), 1)
        nn.init.zeros_(self.weight.weight)
        bag_sizes = torch.tensor([f.vocab_size for f in schema.bags], dtype=torch.long)
        self.register_buffer("bag_offsets", torch.cumsum(bag_sizes, 0) - bag_sizes, persistent=False)
        self.bag_weight = nn.Embedding(max(int(bag_sizes.sum()), 1), 1)
        nn.init.zeros_(self.bag_weight.weight)
        self.dense = nn.Linear(len(schema.dense), 1, bias=True) if schema.dense else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        """(N,) sum of first-order terms plus the bias."""
        out = self.weight(batch.sparse + self.offsets).sum((1, 2)) + self.bias
        for j, f in enumerate(self.schema.bags):
            ids = batch.bags[f.name]
            mask = (ids > 0).to(out.dtype)
            w = self.bag_weight(ids + self.bag_offsets[j]).squeeze(-1) * mask
            out = out + w.sum(1) / mask.sum(1).clamp_min(1.0)
        if self.dense is not None:
            out = out + self.dense(batch.dense).squeeze(-1)
        return out


__all__ = ["DenseEmbedding", "EmbeddingCollection", "LinearTerms"]
