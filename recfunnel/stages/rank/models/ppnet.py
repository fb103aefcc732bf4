"""PPNet (Kuaishou, 2019): an MLP whose hidden units are rescaled by LHUC gates driven by id priors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.gates import GatedMLP
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class PPNetConfig(ModelConfig):
    """PPNet options.

    Attributes:
        prior_fields: sparse fields that personalise the gates (user_id, item_id, author_id...);
            empty = the first sparse field.
        gate_hidden: hidden width of each gate network.
    """

    prior_fields: tuple[str, ...] = ()
    gate_hidden: int = 64


class PPNet(CTRModel):
    """h_l = ReLU(W_l h_{l-1} + b_l) ⊙ 2 sigmoid(GateNN_l([e_prior, stop_grad(x)])), logit = w^T h_L + b.

    x = [field embeddings, dense] is the main tower's input. The prior fields get
    their own embeddings, read only by the gates; the main embeddings enter the
    gates through a stop-gradient, so the gates personalise the tower without
    pulling the shared embeddings towards the gating task (as in the paper).
    """

    name = "ppnet"
    config_class = PPNetConfig

    def __init__(self, schema: ModelSchema, config: PPNetConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        names = config.prior_fields or (schema.sparse[0].name,)
        positions = [schema.sparse_position(n) for n in names]
        self.register_buffer("prior_positions", torch.tensor(positions, dtype=torch.long), persistent=False)
        self.embeddings = EmbeddingCollection(schema, d)
        self.prior_embeddings = EmbeddingCollection(
            ModelSchema(sparse=tuple(schema.sparse[p] for p in positions)), d)
        x_dim = schema.n_fields * d + len(schema.dense)
        self.tower = GatedMLP(x_dim, len(positions) * d + x_dim, config.hidden, 1, config.gate_hidden,
                              dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        x = torch.cat([self.embeddings.fields(batch).flatten(1), batch.dense], 1)
        prior_ids = batch.sparse[:, self.prior_positions] + self.prior_embeddings.offsets
        prior = self.prior_embeddings.table(prior_ids).flatten(1)
        gate_input = torch.cat([prior, x.detach()], 1)
        return self.tower(x, gate_input).squeeze(-1)
