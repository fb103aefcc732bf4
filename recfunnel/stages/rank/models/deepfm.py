"""DeepFM (Guo et al., 2017): FM and a deep network over the same embeddings, summed."""

from __future__ import annotations

import torch

from recfunnel.layers.embedding import EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class DeepFM(CTRModel):
    """logit = linear + FM(second order) + MLP([field embeddings, dense])."""

    name = "deepfm"
    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        self.embeddings = EmbeddingCollection(schema, d, first_order=True)
        self.linear = LinearTerms(schema, ids=False)
        # the embeddings and the dense columns as two input blocks: no concatenation, and no
        # gradient computed for the dense columns
        self.deep = MLP((schema.n_fields * d, len(schema.dense)), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        # the ids' first-order weights and FM's pairwise term come out of the lookup itself
        emb, fm = self.embeddings.fields_and_fm(batch)
        return self.linear(batch) + fm + self.deep((emb.flatten(1), batch.dense)).squeeze(-1)
