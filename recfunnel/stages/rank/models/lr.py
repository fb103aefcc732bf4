"""Logistic regression: first-order terms only (the baseline every CTR model is compared with)."""

from __future__ import annotations

import torch

from recfunnel.layers.embedding import LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class LR(CTRModel):
    """sigmoid(w0 + sum_i w_i x_i) over one-hot ids, pooled bags and dense columns."""

    name = "lr"
    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        self.linear = LinearTerms(schema)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        return self.linear(batch)
