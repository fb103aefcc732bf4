"""DIEN (Zhou et al., AAAI 2019): interest extraction with a GRU and interest evolution with AUGRU."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.layers.attention import masked_softmax
from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.layers.sequence import (
    AUGRU,
    chronological_order,
    distinct_rows,
    gather_steps,
    run_packed,
)
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class DIENConfig(ModelConfig):
    """DIEN's options.

    Attributes:
        alpha: weight of the auxiliary next-behaviour loss (the paper's alpha, eq. 8).
        activation: activation of the deep MLP (``dice``, ``prelu``, ``relu``).
        embedding_std: standard deviation of the embedding initialisation; larger than the
            library's 0.01 because the recurrent and attention blocks start from a saddle
            when the behaviours are almost zero, and escape it slowly.
    """

    alpha: float = 1.0
    activation: str = "dice"
    embedding_std: float = 0.1


class DIEN(CTRModel):
    """logit = MLP([field embeddings, h'_T, dense]).

    Behaviours e_t (item and category embeddings concatenated) are read oldest ->
    newest. Interest extractor: h_t = GRU(e_t, h_{t-1}), supervised by the auxiliary
    loss (eq. 6)
        L_aux = -1/|P| sum_t [log sigmoid(<h_t, e_{t+1}>) + log(1 - sigmoid(<h_t, e^_{t+1}>))],
    with e^_{t+1} a behaviour sampled from the batch (a random other click). Interest
    evolving: a_t = softmax_t(h_t W e_A) (eq. 13) relative to the target e_A, and
    h'_t = AUGRU(h_t, h'_{t-1}, a_t) (eq. 14-15); h'_T is the final interest.
    """

    name = "dien"
    config_class = DIENConfig
    needs_sequences = True

    def __init__(self, schema: ModelSchema, config: DIENConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        behaviour_dim = len(schema.sequences) * d
        self.embeddings = EmbeddingCollection(schema, d, config.embedding_std)
        # hidden width = behaviour width: the auxiliary loss takes <h_t, e_{t+1}>
        self.extractor = nn.GRU(behaviour_dim, behaviour_dim, batch_first=True)
        self.attention = nn.Linear(behaviour_dim, behaviour_dim, bias=False)
        self.evolution = AUGRU(behaviour_dim, behaviour_dim)
        self.deep = MLP(schema.n_fields * d + behaviour_dim + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm, activation=config.activation)
        self._auxiliary: torch.Tensor | None = None

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        behaviours, target = self.embeddings.sequences_and_targets(batch)
        index, mask, lengths = chronological_order(batch.sequence_mask)
        behaviours = gather_steps(behaviours, index)
        # at inference the candidates of a request share its user's history: the extractor (which
        # reads the history alone) runs once per distinct history, a 300th of the work at serving
        distinct = None if self.training else distinct_rows(*batch.sequences.values())
        if distinct is None:
            interests = run_packed(self.extractor, behaviours, lengths)
        else:
            first, inverse = distinct
            interests = run_packed(self.extractor, behaviours[first], lengths[first])[inverse]
        if self.training and torch.is_grad_enabled():
            ids = gather_steps(batch.sequences[self.schema.sequences[0].name], index)
            self._auxiliary = self._next_behaviour_loss(interests, behaviours, ids, mask)
        scores = torch.einsum("nld,nd->nl", interests, self.attention(target))
        final = self.evolution(interests, masked_softmax(scores, mask), mask)
        fields = self.embeddings.fields(batch)
        return self.deep(torch.cat([fields.flatten(1), final, batch.dense], 1)).squeeze(-1)

    def _next_behaviour_loss(self, interests: torch.Tensor, behaviours: torch.Tensor, ids: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
        """DIEN eq. 6 on oldest-first (N, L, D) interests and behaviours, (N, L) item ids and mask."""
        valid = mask[:, 1:]
        if not bool(valid.any()):
            return interests.new_zeros(())
        state, positive, positive_ids = interests[:, :-1], behaviours[:, 1:], ids[:, 1:]
        # negatives: behaviours drawn uniformly from the whole batch (popular items come up as often
        # as they are clicked); a draw of the positive item itself is not counted as a negative
        pool, pool_ids = behaviours[mask], ids[mask]
        draw = torch.randint(pool.shape[0], valid.shape, device=pool.device)
        negative, negative_ids = pool[draw], pool_ids[draw]
        negative_valid = valid & (negative_ids != positive_ids)
        positive_term = F.logsigmoid((state * positive).sum(-1))
        negative_term = F.logsigmoid(-(state * negative).sum(-1))
        total = positive_term[valid].sum() + negative_term[negative_valid].sum()
        return -total / valid.sum()

    def auxiliary_loss(self, batch: TensorBatch) -> torch.Tensor | None:
        """alpha * L_aux of the last training forward pass (None outside training)."""
        if self._auxiliary is None:
            return None
        loss, self._auxiliary = self._auxiliary, None
        return self.config.alpha * loss
