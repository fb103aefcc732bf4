"""BST (Chen et al., 2019, "Behavior Sequence Transformer"): a transformer over the history and the target."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.layers.attention import PositionalEmbedding, TimeGapEmbedding, TransformerBlock
from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.layers.sequence import behaviour_ages
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class BSTConfig(ModelConfig):
    """BST's options.

    Attributes:
        heads: attention heads (must divide ``(sequence fields + 1) * embed_dim``).
        blocks: stacked transformer blocks (the paper finds 1 best).
        position: ``time``: the log-bucketised time between the behaviour and the request
            (the paper's pos(v_i) = t(v_t) - t(v_i)); ``index``: the slot, newest = 1.
        pooling: ``mean`` over real positions (the default), or ``flatten`` the transformer
            outputs (the paper's concatenation). Flattening feeds the MLP 51 tokens x 32
            values on ML-100K's 50-behaviour history, and there it overfit within two epochs:
            test AUC 0.7466 / GAUC 0.6601 against 0.7917 / 0.7110 with the mean
            (BENCHMARKS.md); dropout 0.2 did not rescue it (0.7503).
        time_buckets: buckets of the ``time`` positions.
        embedding_std: standard deviation of the embedding initialisation; larger than the
            library's 0.01 because the recurrent and attention blocks start from a saddle
            when the behaviours are almost zero, and escape it slowly.
    """

    heads: int = 2
    blocks: int = 1
    position: str = "time"
    pooling: str = "mean"
    time_buckets: int = 20
    embedding_std: float = 0.1


class BST(CTRModel):
    """logit = MLP([field embeddings, Transformer([e_A; e_1..e_L]) pooled, dense]).

    Each token is [sequence-field embeddings, position embedding] (BST §3.1: the
    position is one more feature of the item); the target item is token 0 with
    position 0, so self-attention relates it to every behaviour.
    """

    name = "bst"
    config_class = BSTConfig
    needs_sequences = True

    def __init__(self, schema: ModelSchema, config: BSTConfig):
        super().__init__(schema, config)
        if config.position not in ("time", "index"):
            raise ValueError(f"bst: position must be 'time' or 'index', got {config.position!r}")
        if config.pooling not in ("flatten", "mean"):
            raise ValueError(f"bst: pooling must be 'flatten' or 'mean', got {config.pooling!r}")
        d = config.embed_dim
        token_dim = (len(schema.sequences) + 1) * d
        if token_dim % config.heads:
            raise ValueError(f"bst: token width {token_dim} (= (sequences + 1) * embed_dim) "
                             f"is not divisible by heads={config.heads}")
        self.embeddings = EmbeddingCollection(schema, d, config.embedding_std)
        if config.position == "time":
            self.positions: nn.Module = TimeGapEmbedding(config.time_buckets, d)
        else:
            self.positions = PositionalEmbedding(schema.max_sequence_length + 1, d)
        self.blocks = nn.ModuleList(TransformerBlock(token_dim, config.heads, dropout=config.dropout)
                                    for _ in range(config.blocks))
        tokens = schema.max_sequence_length + 1 if config.pooling == "flatten" else 1
        self.deep = MLP(schema.n_fields * d + tokens * token_dim + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def _position_embeddings(self, batch: TensorBatch, mask: torch.Tensor) -> torch.Tensor:
        """(N, L + 1, d): the target's position then the behaviours'."""
        n, length = mask.shape
        if isinstance(self.positions, TimeGapEmbedding):
            age = behaviour_ages(batch)
            target = self.positions.table.weight[0].expand(n, 1, -1)  # bucket 0: no gap
            return torch.cat([target, self.positions(age)], 1)
        return self.positions(length + 1).expand(n, -1, -1)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        behaviours, target = self.embeddings.sequences_and_targets(batch)
        mask = batch.sequence_mask
        tokens = torch.cat([target.unsqueeze(1), behaviours], 1)
        token_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        x = torch.cat([tokens, self._position_embeddings(batch, mask)], -1)
        for block in self.blocks:
            x = block(x, token_mask)
        if self.config.pooling == "flatten":
            pooled = x.flatten(1)  # padded tokens are zero, so the flat vector is padding-invariant
        else:
            pooled = x.sum(1) / token_mask.sum(1, keepdim=True)
        fields = self.embeddings.fields(batch)
        return self.deep(torch.cat([fields.flatten(1), pooled, batch.dense], 1)).squeeze(-1)
