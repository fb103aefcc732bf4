"""AFM (Xiao et al., 2017): FM whose pairwise interactions are pooled with learned attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.layers.embedding import DenseEmbedding, EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import AttentionalPooling
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class AFMConfig(ModelConfig):
    """AFM options.

    Attributes:
        attention_dim: t, the hidden width of the attention network.
        attention_dropout: dropout on the attention weights.
    """

    attention_dim: int = 16
    attention_dropout: float = 0.0


class AFM(CTRModel):
    """logit = w_0 + sum_i w_i x_i + p^T sum_{i<j} a_ij (v_i ⊙ v_j) x_i x_j.

    Dense columns are fields as in FM; ``hidden`` and ``batch_norm`` are unused (AFM has no MLP).
    """

    name = "afm"
    config_class = AFMConfig

    def __init__(self, schema: ModelSchema, config: AFMConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        self.embeddings = EmbeddingCollection(schema, d, first_order=True)
        self.dense_embedding = DenseEmbedding(len(schema.dense), d) if schema.dense else None
        self.linear = LinearTerms(schema, ids=False)
        self.pooling = AttentionalPooling(d, config.attention_dim, config.attention_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(d, 1, bias=False)  # p

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb, linear = self.fields_and_linear(batch, self.dense_embedding)
        return linear + self.projection(self.dropout(self.pooling(emb))).squeeze(-1)
