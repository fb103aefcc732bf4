"""xDeepFM (Lian et al., 2018): linear + CIN (explicit vector-wise crosses) + DNN (implicit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from recfunnel.layers.embedding import EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import CIN
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class XDeepFMConfig(ModelConfig):
    """xDeepFM options.

    Attributes:
        cin_layers: H_1..H_T, feature maps of each CIN layer.
        cin_split_half: send half of each hidden CIN layer to the output (the authors' code).
        cin_activation: ``identity`` (the paper) or ``relu``.
    """

    cin_layers: tuple[int, ...] = (128, 128)
    cin_split_half: bool = True
    cin_activation: Literal["identity", "relu"] = "identity"


class XDeepFM(CTRModel):
    """logit = linear(x) + w_cin^T p^+ + MLP([field embeddings, dense]), p^+ the sum-pooled CIN maps."""

    name = "xdeepfm"
    config_class = XDeepFMConfig

    def __init__(self, schema: ModelSchema, config: XDeepFMConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        self.embeddings = EmbeddingCollection(schema, d, first_order=True)
        self.linear = LinearTerms(schema, ids=False)
        self.cin = CIN(schema.n_fields, config.cin_layers, config.cin_split_half, config.cin_activation)
        self.cin_out = nn.Linear(self.cin.output_dim, 1)
        self.deep = MLP(schema.n_fields * d + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb, linear = self.fields_and_linear(batch)
        deep = self.deep(torch.cat([emb.flatten(1), batch.dense], 1))
        return linear + (self.cin_out(self.cin(emb)) + deep).squeeze(-1)
