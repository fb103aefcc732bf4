"""PNN (Qu et al., 2016): a product layer between the embeddings and the MLP; IPNN and OPNN."""

from __future__ import annotations

import torch
from torch import nn

from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import InnerProduct, OuterProduct
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class _PNN(CTRModel):
    """l_1 = ReLU(l_z + l_p + b_1), then the MLP; the product layer is ``hidden[0]`` units wide.

    l_z^n = <W_z^n, z> is a linear map of the concatenated field embeddings (and the
    dense columns); l_p^n = <W_p^n, p> reads the pairwise products p, which the
    subclasses define.
    """

    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        if not config.hidden:
            raise ValueError(f"{self.name}: hidden must name at least the product layer's width")
        d, units = config.embed_dim, config.hidden[0]
        self.embeddings = EmbeddingCollection(schema, d)
        self.linear_signal = nn.Linear(schema.n_fields * d + len(schema.dense), units)  # l_z + b_1
        self.product_signal = self._product_layer(schema.n_fields, d, units)  # l_p
        layers: list[nn.Module] = []
        if config.batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(nn.ReLU())
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        self.product_activation = nn.Sequential(*layers)
        self.deep = MLP(units, config.hidden[1:], 1, dropout=config.dropout, batch_norm=config.batch_norm)

    def _product_layer(self, n_fields: int, dim: int, units: int) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb = self.embeddings.fields(batch)
        l_z = self.linear_signal(torch.cat([emb.flatten(1), batch.dense], 1))
        l_1 = self.product_activation(l_z + self.product_signal(emb))
        return self.deep(l_1).squeeze(-1)


class IPNN(_PNN):
    """Inner-product PNN: p_ij = <f_i, f_j> for i < j, l_p^n = sum_{i<j} W_p^n[i, j] p_ij.

    The full pairwise weights are kept (F is small); the paper's rank-1 factorisation
    W_p^n = θ^n θ^{nT} is only a cost saving for very many fields.
    """

    name = "ipnn"

    def _product_layer(self, n_fields: int, dim: int, units: int) -> nn.Module:
        n_pairs = n_fields * (n_fields - 1) // 2
        return nn.Sequential(InnerProduct(), nn.Linear(n_pairs, units, bias=False))


class OPNN(_PNN):
    """Outer-product PNN in the paper's kernel form: l_p^n = f_Σ^T W_p^n f_Σ, f_Σ = sum_i f_i."""

    name = "opnn"

    def _product_layer(self, n_fields: int, dim: int, units: int) -> nn.Module:
        return OuterProduct(dim, units)
