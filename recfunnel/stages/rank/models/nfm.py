"""NFM (He & Chua, 2017): Bi-Interaction pooling of the embeddings, then an MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.layers.embedding import DenseEmbedding, EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import BiInteraction
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class NFMConfig(ModelConfig):
    """NFM options.

    Attributes:
        bi_dropout: dropout on the Bi-Interaction vector (the paper regularises it there).
    """

    bi_dropout: float = 0.0


class NFM(CTRModel):
    """logit = w_0 + sum_i w_i x_i + MLP(f_BI), f_BI = sum_{i<j} x_i v_i ⊙ x_j v_j.

    Dense columns are fields (x_i v_i) as in the paper; with ``batch_norm`` the
    Bi-Interaction vector is batch-normalised too.
    """

    name = "nfm"
    config_class = NFMConfig

    def __init__(self, schema: ModelSchema, config: NFMConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        self.embeddings = EmbeddingCollection(schema, d, first_order=True)
        self.dense_embedding = DenseEmbedding(len(schema.dense), d) if schema.dense else None
        self.linear = LinearTerms(schema, ids=False)
        self.bi = BiInteraction()
        post: list[nn.Module] = [nn.BatchNorm1d(d)] if config.batch_norm else []
        if config.bi_dropout > 0:
            post.append(nn.Dropout(config.bi_dropout))
        self.bi_post = nn.Sequential(*post)
        self.deep = MLP(d, config.hidden, 1, dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb, linear = self.fields_and_linear(batch, self.dense_embedding)
        return linear + self.deep(self.bi_post(self.bi(emb))).squeeze(-1)
