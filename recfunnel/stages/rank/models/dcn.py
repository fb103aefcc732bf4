"""DCN (Wang et al., 2017) and DCN-V2 (Wang et al., 2021): explicit bounded-degree crosses plus an MLP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.interaction import CrossNetwork, CrossNetworkV2
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class DCNConfig(ModelConfig):
    """DCN options.

    Attributes:
        cross_layers: L, the cross layers (degree up to L + 1).
        structure: ``parallel`` (cross and deep side by side, outputs concatenated) or
            ``stacked`` (the MLP reads the cross network's output).
    """

    cross_layers: int = 3
    structure: Literal["parallel", "stacked"] = "parallel"


@dataclass(frozen=True)
class DCNv2Config(DCNConfig):
    """DCN-V2 options.

    Attributes:
        low_rank: r of the low-rank experts (0 = full D x D cross matrices).
        num_experts: K experts of the low-rank mixture (DCN-Mix).
    """

    low_rank: int = 0
    num_experts: int = 1


class _DeepCross(CTRModel):
    """x_0 = [field embeddings, dense]; the cross network and the MLP combined by ``structure``.

    parallel: logit = w^T [cross(x_0), MLP(x_0)] + b; stacked: logit = w^T MLP(cross(x_0)) + b.
    """

    def __init__(self, schema: ModelSchema, config: DCNConfig):
        super().__init__(schema, config)
        if config.structure not in ("parallel", "stacked"):
            raise ValueError(f"unknown structure {config.structure!r}; use parallel or stacked")
        d = config.embed_dim
        x_dim = schema.n_fields * d + len(schema.dense)
        self.embeddings = EmbeddingCollection(schema, d)
        self.cross = self._cross_network(x_dim, config)
        self.deep = MLP(x_dim, config.hidden, dropout=config.dropout, batch_norm=config.batch_norm)
        out_dim = self.deep.output_dim + (x_dim if config.structure == "parallel" else 0)
        self.out = nn.Linear(out_dim, 1)

    def _cross_network(self, x_dim: int, config: DCNConfig) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        x0 = torch.cat([self.embeddings.fields(batch).flatten(1), batch.dense], 1)
        if self.config.structure == "stacked":
            h = self.deep(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.deep(x0)], 1)
        return self.out(h).squeeze(-1)


class DCN(_DeepCross):
    """DCN with the v1 cross layer x_{l+1} = x_0 x_l^T w_l + b_l + x_l."""

    name = "dcn"
    config_class = DCNConfig

    def _cross_network(self, x_dim: int, config: DCNConfig) -> nn.Module:
        return CrossNetwork(x_dim, config.cross_layers)


class DCNv2(_DeepCross):
    """DCN-V2: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l, or a mixture of low-rank experts."""

    name = "dcnv2"
    config_class = DCNv2Config

    def _cross_network(self, x_dim: int, config: DCNConfig) -> nn.Module:
        assert isinstance(config, DCNv2Config)
        return CrossNetworkV2(x_dim, config.cross_layers, config.low_rank, config.num_experts)
