"""AutoInt (Song et al., 2019): stacked multi-head self-attention over the field embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.layers.embedding import DenseEmbedding, EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class AutoIntConfig(ModelConfig):
    """AutoInt options.

    Attributes:
        attention_layers: interacting layers stacked (the paper tunes 3 on Criteo; 2 by
            default here, which leaves the start of training much less often stuck on the
            plateau of tiny initial embeddings).
        heads: attention heads per layer (must divide ``embed_dim``).
        residual: add W_res e_m inside each interacting layer.
        dnn: also run an MLP over the embeddings in parallel (AutoInt+).
    """

    attention_layers: int = 2
    heads: int = 2
    residual: bool = True
    dnn: bool = False


class InteractingLayer(nn.Module):
    """e'_m = ReLU(MultiHeadAttention(e_m; e_1..e_F) + W_res e_m): (N, F, d) -> (N, F, d)."""

    def __init__(self, dim: int, heads: int, residual: bool = True):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.residual = nn.Linear(dim, dim, bias=False) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attention(x, x, x, need_weights=False)
        if self.residual is not None:
            out = out + self.residual(x)
        return torch.relu(out)


class AutoInt(CTRModel):
    """logit = w^T flatten(interacting layers(e)) (+ MLP(e) for AutoInt+).

    e holds the sparse and bag fields and one field per dense column
    (:class:`DenseEmbedding`: a learned vector scaled by the value), as in the paper.
    """

    name = "autoint"
    config_class = AutoIntConfig

    def __init__(self, schema: ModelSchema, config: AutoIntConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        if d % config.heads:
            raise ValueError(f"autoint: heads ({config.heads}) must divide embed_dim ({d})")
        n_fields = schema.n_fields + len(schema.dense)
        self.embeddings = EmbeddingCollection(schema, d)
        self.dense_embedding = DenseEmbedding(len(schema.dense), d) if schema.dense else None
        self.interacting = nn.Sequential(*[InteractingLayer(d, config.heads, config.residual)
                                           for _ in range(config.attention_layers)])
        self.out = nn.Linear(n_fields * d, 1)
        self.deep = MLP(n_fields * d, config.hidden, 1, dropout=config.dropout,
                        batch_norm=config.batch_norm) if config.dnn else None

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb = self.field_embeddings(self.embeddings, batch, self.dense_embedding)
        logit = self.out(self.interacting(emb).flatten(1))
        if self.deep is not None:
            logit = logit + self.deep(emb.flatten(1))
        return logit.squeeze(-1)
