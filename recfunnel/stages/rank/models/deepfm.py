"""DeepFM (Guo et al., 2017): FM and a deep network over the same embeddings, summed."""

from __future__ import annotations

import torch

from recfunnel.layers.embedding import EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import FactorizationMachine
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
        self.fm = FactorizationMachine()
        # the embeddings and the dense columns as two input blocks: no concatenation, and no
        # gradient computed for the dense columns
        self.deep = MLP((schema.n_fields * d, len(schema.dense)), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb, linear = self.fields_and_linear(batch)
        return linear + self.fm(emb) + self.deep((emb.flatten(1), batch.dense)).squeeze(-1)
