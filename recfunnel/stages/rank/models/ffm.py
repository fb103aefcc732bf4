"""FFM (Juan et al., 2016): field-aware factorisation machines."""

from __future__ import annotations

import torch

from recfunnel.layers.embedding import DenseEmbedding, EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import pair_indices
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class FFM(CTRModel):
    """logit = w_0 + sum_i w_i x_i + sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j.

    Every feature has one latent vector per field it can meet. They live in one fused
    :class:`EmbeddingCollection` of width ``embed_dim * F`` (F = sparse + bag + dense
    fields), viewed as (N, F, F, d): entry [n, i, f] is field i's vector towards field f,
    so the term is two gathers with the pair indices and one product, no loop over pairs.
    ``hidden``, ``dropout`` and ``batch_norm`` are unused.
    """

    name = "ffm"
    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        self.n_fields = schema.n_fields + len(schema.dense)
        width = config.embed_dim * self.n_fields
        self.embeddings = EmbeddingCollection(schema, width)
        self.dense_embedding = DenseEmbedding(len(schema.dense), width) if schema.dense else None
        self.linear = LinearTerms(schema)
        rows, cols = pair_indices(self.n_fields)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb = self.field_embeddings(self.embeddings, batch, self.dense_embedding)
        emb = emb.view(len(batch), self.n_fields, self.n_fields, self.config.embed_dim)
        left = emb[:, self.rows, self.cols]  # v_{i, f_j}
        right = emb[:, self.cols, self.rows]  # v_{j, f_i}
        return self.linear(batch) + (left * right).sum((1, 2))
