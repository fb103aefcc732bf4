"""FM (Rendle, 2010): first-order terms plus factorised pairwise interactions."""

from __future__ import annotations

import torch

from recfunnel.layers.embedding import DenseEmbedding, EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import FactorizationMachine
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class FM(CTRModel):
    """logit = w_0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j.

    Dense columns are fields too (v_i scaled by the value x_i), as in the FM paper;
    ``hidden``, ``dropout`` and ``batch_norm`` are unused.
    """

    name = "fm"
    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        self.embeddings = EmbeddingCollection(schema, config.embed_dim, first_order=True)
        self.dense_embedding = DenseEmbedding(len(schema.dense), config.embed_dim) if schema.dense else None
        self.linear = LinearTerms(schema, ids=False)
        self.fm = FactorizationMachine()

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb, linear = self.fields_and_linear(batch, self.dense_embedding)
        return linear + self.fm(emb)
