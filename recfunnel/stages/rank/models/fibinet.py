"""FiBiNET (Huang et al., 2019): SENet field importance + bilinear feature interactions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recfunnel.layers.embedding import DenseEmbedding, EmbeddingCollection, LinearTerms
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import BilinearInteraction, BilinearType, SENet
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class FiBiNETConfig(ModelConfig):
    """FiBiNET options.

    Attributes:
        bilinear_type: ``field_all`` (one shared W), ``field_each`` (one W per field) or
            ``field_interaction`` (one W per field pair).
        reduction_ratio: r of the SENet excitation (F -> F/r -> F).
    """

    bilinear_type: BilinearType = "field_interaction"
    reduction_ratio: int = 3


class FiBiNET(CTRModel):
    """logit = linear(x) + MLP([flatten(p), flatten(q)]).

    p = Bilinear(E) on the original embeddings, q = Bilinear'(SENet(E)) on the
    re-weighted ones (two bilinear layers, as in the paper's figure). E holds the
    sparse and bag fields and one field per dense column (:class:`DenseEmbedding`).
    """

    name = "fibinet"
    config_class = FiBiNETConfig

    def __init__(self, schema: ModelSchema, config: FiBiNETConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        n_fields = schema.n_fields + len(schema.dense)
        self.embeddings = EmbeddingCollection(schema, d, first_order=True)
        self.dense_embedding = DenseEmbedding(len(schema.dense), d) if schema.dense else None
        self.linear = LinearTerms(schema, ids=False)
        self.senet = SENet(n_fields, config.reduction_ratio)
        self.bilinear = BilinearInteraction(n_fields, d, config.bilinear_type)
        self.bilinear_se = BilinearInteraction(n_fields, d, config.bilinear_type)
        n_pairs = n_fields * (n_fields - 1) // 2
        self.deep = MLP(2 * n_pairs * d, config.hidden, 1, dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb, linear = self.fields_and_linear(batch, self.dense_embedding)
        p = self.bilinear(emb)
        q = self.bilinear_se(self.senet(emb))
        return linear + self.deep(torch.cat([p.flatten(1), q.flatten(1)], 1)).squeeze(-1)
