"""One embedding collection for every categorical input of a model.

All sparse fields share one fused table with per-field row offsets, so a batch
of F fields is one lookup (torchrec's EmbeddingBagCollection idea). Multi-valued
fields (bags) share a second table and are pooled to the mean of their
non-padding ids: with a small bag vocabulary as one product of the batch's
(rows x vocabulary) weight matrix with the table, otherwise with
``embedding_bag``. Behaviour sequences read the rows of the sparse field they
point at. Dense columns can be turned into fields too (one learned vector per
column, scaled by the value), which is what AutoInt and FiBiNET do.

On CPU with float32 tables, the field lookup (with bag means, first-order sums
and optionally the FM term) runs as one fused autograd node
(:mod:`recfunnel.layers.fused_lookup`); the ATen ops below are the reference it
is tested against, and the path on other devices and dtypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.layers.fused_lookup import FusedFieldLookup, LookupPlan, can_fuse, warm_up
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import FactorizationMachine

#: bags whose vocabularies add up to at most this many ids are pooled with one dense matrix
#: product (a batch x vocabulary weight matrix times the table); larger ones with embedding_bag
DENSE_BAG_MAX_VOCAB = 256


class EmbeddingCollection(nn.Module):
    """Embeddings of the sparse fields, bags and sequences of a :class:`ModelSchema`.

    Every sparse field shares one table (rows of field ``i`` start at ``offsets[i]``),
    so a batch's field embeddings are one gather and one scatter-add in the backward
    pass, whatever the number of fields. Bags share ``bag_table`` (rows of bag ``j``
    start at ``bag_offsets[j]``) and are pooled to the mean of their non-padding ids
    (id 0 is padding; an empty bag is the zero vector). Small bag vocabularies (up to
    :data:`DENSE_BAG_MAX_VOCAB` ids in all) are pooled as one matrix product, whose
    backward pass is one more product instead of a scatter of every padded slot; on
    ML-100K's genres that made the lookup about a fifth faster at batch 256.

    With ``first_order=True`` both tables have one more column holding each id's
    first-order (linear) weight, so FM, DeepFM and their kin read their linear terms
    from the same lookup.

    Args:
        schema: the model inputs.
        dim: embedding width ``d``.
        init_std: standard deviation of the normal initialisation.
        first_order: add a first-order weight per id (initialised to 0).
        fused: serve field lookups with :class:`~recfunnel.layers.fused_lookup.FusedFieldLookup`
            where it applies (float32 tables on CPU); False keeps the ATen path everywhere.
    """

    def __init__(self, schema: ModelSchema, dim: int, init_std: float = 1e-2, first_order: bool = False,
                 fused: bool = True):
        super().__init__()
        self.schema = schema
        self.dim = dim
        self.first_order = first_order
        self.fused = fused
        width = dim + int(first_order)
        sizes = torch.tensor([0] + [f.vocab_size for f in schema.sparse], dtype=torch.long).cumsum(0)
        bag_sizes = torch.tensor([0] + [f.vocab_size for f in schema.bags], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", sizes[:-1].clone(), persistent=False)
        self.register_buffer("bag_offsets", bag_sizes[:-1].clone(), persistent=False)
        self.register_buffer("vocab", sizes.diff(), persistent=False)
        self.register_buffer("bag_vocab", bag_sizes.diff(), persistent=False)
        self.table = nn.Embedding(max(int(sizes[-1]), 1), width)
        self.bag_table = nn.Embedding(int(bag_sizes[-1]), width) if schema.bags else None
        self.dense_bags = int(bag_sizes[-1]) <= DENSE_BAG_MAX_VOCAB
        with torch.no_grad():
            for table in (self.table, self.bag_table):
                if table is None:
                    continue
                nn.init.normal_(table.weight, std=init_std)
                if first_order:
                    table.weight[:, dim].zero_()
        self._seq_offset = {s.name: schema.sparse_position(s.target) for s in schema.sequences}
        self._plan: LookupPlan | None = None  # NumPy views of the buffers above, for the fused kernel
        if fused and can_fuse(self.table.weight):
            warm_up()

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        # index_select's backward (one index_add_) is about twice as fast on CPU as
        # nn.Embedding's embedding_dense_backward for these small tables
        weight = self.table.weight
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    def bags(self, batch: TensorBatch) -> torch.Tensor:
        """(N, B, width) every bag's mean row over its non-padding ids (0 for an empty bag).

        Raises:
            ValueError: when the schema has no bags.
        """
        if self.bag_table is None:
            raise ValueError("this schema has no bags (multi-valued fields) to pool")
        weight = self.bag_table.weight
        mean_weights = []
        for f in self.schema.bags:
            ids = batch.bags[f.name]
            present = (ids > 0).to(weight.dtype)
            mean_weights.append(present / present.sum(1, keepdim=True).clamp_min(1.0))
        if self.dense_bags:
            # (N, B, V) pooling weights times the (V, width) table: one product forward, one backward
            pooling = torch.zeros(len(batch), len(self.schema.bags), weight.shape[0], dtype=weight.dtype)
            for j, f in enumerate(self.schema.bags):
                pooling[:, j].scatter_add_(1, batch.bags[f.name] + self.bag_offsets[j], mean_weights[j])
            with torch.autocast("cpu", enabled=False):  # embeddings stay float32 under mixed precision
                return torch.matmul(pooling, weight)
        return torch.stack([F.embedding_bag(batch.bags[f.name] + self.bag_offsets[j], weight, mode="sum",
                                            per_sample_weights=mean_weights[j])
                            for j, f in enumerate(self.schema.bags)], 1)

    def lookup(self, batch: TensorBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, F, d) sparse then bag fields (bags: mean over the non-padding ids, 0 when empty) and
        (N,) the sum of their first-order weights (None without ``first_order``)."""
        if self.fused and can_fuse(self.table.weight):
            emb, first = self._fused_lookup(batch, with_fm=False)
            return emb, first if self.first_order else None
        return self._aten_lookup(batch)

    def fields_and_fm(self, batch: TensorBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, F, d) field embeddings and (N,) their FM part: first-order sum plus pairwise interactions.

        The second output is ``sum_f w_f + sum_{f<g} <v_f, v_g>`` over the sparse and bag
        fields, FM's logit without its bias and dense terms; on CPU both come from one
        fused pass (no separate FM layer forward or backward).

        Raises:
            ValueError: when the collection was built without ``first_order``.
        """
        if not self.first_order:
            raise ValueError("this EmbeddingCollection has no first-order weights (first_order=False)")
        if self.fused and can_fuse(self.table.weight):
            return self._fused_lookup(batch, with_fm=True)
        emb, first = self._aten_lookup(batch)
        return emb, first + _fm_term(emb)

    def _fused_lookup(self, batch: TensorBatch, with_fm: bool) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self._plan
        if plan is None or plan.key != tuple(t.data_ptr() for t in (self.offsets, self.vocab, self.bag_offsets,
                                                                     self.bag_vocab)):
            plan = self._plan = LookupPlan(self.offsets, self.vocab, self.bag_offsets, self.bag_vocab, self.dim)
        bags = [batch.bags[f.name] for f in self.schema.bags]
        if self.bag_table is not None:
            bag_table = self.bag_table.weight
            bag_ids = bags[0] if len(bags) == 1 else torch.cat(bags, 1)
        else:
            bag_table = self.table.weight.new_empty(0, self.table.weight.shape[1])
            bag_ids = batch.sparse.new_empty(len(batch), 0)
        return FusedFieldLookup.apply(
            self.table.weight, bag_table, batch.sparse.long().contiguous(), bag_ids.long().contiguous(),
            plan, plan.bag_starts(tuple(b.shape[1] for b in bags)), with_fm)

    def _aten_lookup(self, batch: TensorBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self._gather(batch.sparse + self.offsets)
        if self.schema.bags:
            rows = torch.cat([rows, self.bags(batch)], 1)
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


def _fm_term(emb: torch.Tensor) -> torch.Tensor:
    """(N,) sum_{f<g} <v_f, v_g> of (N, F, d) field embeddings."""
    return FactorizationMachine()(emb)


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
        if self.dense is not None:  # bias + dense @ w as one op (and one backward node)
            out = torch.addmv(self.bias.expand(len(batch)), batch.dense, self.dense.weight[0])
        else:
            out = self.bias.expand(len(batch))
        if self.ids is not None:
            out = out + self.ids.fields_and_first_order(batch)[1]
        return out


__all__ = ["DenseEmbedding", "EmbeddingCollection", "LinearTerms"]
