"""DIN (Zhou et al., KDD 2018): attention pooling of the behaviours relative to the target item."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recfunnel.layers.attention import TargetAttention
from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class DINConfig(ModelConfig):
    """DIN's options.

    Attributes:
        attention_hidden: hidden widths of the local activation unit.
        attention_activation: activation of the unit (``dice`` as in the paper, or ``prelu``).
        activation: activation of the deep MLP (``dice`` as in the paper, ``prelu``, ``relu``).
        embedding_std: standard deviation of the embedding initialisation; larger than the
            library's 0.01 because the recurrent and attention blocks start from a saddle
            when the behaviours are almost zero, and escape it slowly.
    """

    attention_hidden: tuple[int, ...] = (36,)
    attention_activation: str = "dice"
    activation: str = "dice"
    embedding_std: float = 0.1


class DIN(CTRModel):
    """logit = MLP([field embeddings, v_U, dense]), v_U = sum_i a(e_i, e_A) e_i over real behaviours.

    Each behaviour is the concatenation of all sequence fields at that step (item
    and category), the query the matching target fields; the attention weights
    are not softmax-normalised (DIN §4.3).
    """

    name = "din"
    config_class = DINConfig
    needs_sequences = True

    def __init__(self, schema: ModelSchema, config: DINConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        behaviour_dim = len(schema.sequences) * d
        self.embeddings = EmbeddingCollection(schema, d, config.embedding_std)
        self.attention = TargetAttention(behaviour_dim, config.attention_hidden, config.attention_activation)
        self.deep = MLP(schema.n_fields * d + behaviour_dim + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm, activation=config.activation)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        behaviours, target = self.embeddings.sequences_and_targets(batch)
        interest = self.attention(target, behaviours, batch.sequence_mask)
        fields = self.embeddings.fields(batch)
        return self.deep(torch.cat([fields.flatten(1), interest, batch.dense], 1)).squeeze(-1)
