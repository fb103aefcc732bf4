"""Wide & Deep (Cheng et al., 2016): a linear (wide) part and an MLP (deep) part, trained jointly."""

from __future__ import annotations

import torch

from recfunnel.layers.embedding import EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class WideDeep(CTRModel):
    """logit = wide(x) + MLP([field embeddings, dense]).

    The wide part is :class:`LinearTerms` over the raw ids, bags and dense columns
    (memorisation); hand-made cross-product features, the paper's other wide input,
    are feature engineering and belong upstream as extra sparse fields.
    """

    name = "wide_deep"
    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        self.embeddings = EmbeddingCollection(schema, d)
        self.wide = LinearTerms(schema)
        self.deep = MLP(schema.n_fields * d + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb = self.embeddings.fields(batch)
        deep_in = torch.cat([emb.flatten(1), batch.dense], 1)
        return self.wide(batch) + self.deep(deep_in).squeeze(-1)
