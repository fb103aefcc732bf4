"""The time-aware LSTM of seed 000 §4.3 (SLi-Rec's short-term model, Yu et al., IJCAI 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.layers.sequence import TimeAwareLSTM as TimeAwareLSTMLayer
from recfunnel.layers.sequence import (
    behaviour_ages,
    chronological_intervals,
    chronological_order,
    gather_steps,
)
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class TimeAwareLSTMConfig(ModelConfig):
    """Options of the time-aware LSTM ranker.

    Attributes:
        lstm_dim: width of the LSTM state.
        embedding_std: standard deviation of the embedding initialisation; larger than the
            library's 0.01 because the LSTM starts from a saddle when the behaviours are
            almost zero, and its final state is the only way from the history to the logit
            (no target attention to shortcut it), so it escapes that saddle slowest.
    """

    lstm_dim: int = 32
    embedding_std: float = 0.3


class TimeAwareLSTM(CTRModel):
    """logit = MLP([field embeddings (the target's included), h_K, dense]).

    The behaviours (item and category embeddings concatenated) are read oldest ->
    newest by an LSTM whose forget and input gates are scaled by time gates of the
    interval since the previous behaviour and of the gap to the request
    (:class:`recfunnel.layers.sequence.TimeAwareLSTMCell`); h_K is the state after
    the newest behaviour.
    """

    name = "time_lstm"
    config_class = TimeAwareLSTMConfig
    needs_sequences = True

    def __init__(self, schema: ModelSchema, config: TimeAwareLSTMConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        self.embeddings = EmbeddingCollection(schema, d, config.embedding_std)
        self.lstm = TimeAwareLSTMLayer(len(schema.sequences) * d, config.lstm_dim)
        self.deep = MLP(schema.n_fields * d + config.lstm_dim + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        behaviours, _ = self.embeddings.sequences_and_targets(batch)
        index, mask, _ = chronological_order(batch.sequence_mask)
        age = behaviour_ages(batch)
        age = torch.where(mask, gather_steps(age, index), torch.zeros_like(age))
        state = self.lstm(gather_steps(behaviours, index), chronological_intervals(age, mask), age, mask)
        fields = self.embeddings.fields(batch)
        return self.deep(torch.cat([fields.flatten(1), state, batch.dense], 1)).squeeze(-1)
