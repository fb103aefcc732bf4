"""DSIN (Feng et al., IJCAI 2019): the behaviour sequence as sessions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.layers.attention import BilinearTargetAttention, TransformerBlock
from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.layers.sequence import (
    behaviour_ages,
    chronological_order,
    gather_steps,
    run_packed,
    split_sessions,
)
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class DSINConfig(ModelConfig):
    """DSIN's options.

    Attributes:
        session_gap: seconds between two behaviours that start a new session (30 min in the paper).
        max_sessions: K, the newest sessions kept.
        max_session_length: T, the newest behaviours kept per session.
        heads: heads of the in-session self-attention (must divide ``sequences * embed_dim``).
        embedding_std: standard deviation of the embedding initialisation; larger than the
            library's 0.01 because the recurrent and attention blocks start from a saddle
            when the behaviours are almost zero, and escape it slowly.
    """

    session_gap: float = 1800.0
    max_sessions: int = 5
    max_session_length: int = 10
    heads: int = 2
    embedding_std: float = 0.1


class DSIN(CTRModel):
    """logit = MLP([field embeddings, U^I, U^H, dense]).

    1. Session division: behaviours more than ``session_gap`` apart start a new session.
    2. Bias encoding (eq. 2): BE_{k,t,c} = w^K_k + w^T_t + w^C_c is added to behaviour
       t of session k at unit c.
    3. Session interest extractor: one transformer block shared by all sessions, then
       the average over the session's behaviours -> I_k.
    4. Session interest interacting: a Bi-LSTM over I_1..I_K, oldest first -> H_k.
    5. Activation (eq. 9-10): U^I = sum_k softmax_k(I_k W^I X^I) I_k and likewise U^H, with
       X^I the target's embedding.
    """

    name = "dsin"
    config_class = DSINConfig
    needs_sequences = True

    def __init__(self, schema: ModelSchema, config: DSINConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        dim = len(schema.sequences) * d
        if dim % config.heads:
            raise ValueError(f"dsin: behaviour width {dim} (= sequences * embed_dim) "
                             f"is not divisible by heads={config.heads}")
        self.embeddings = EmbeddingCollection(schema, d, config.embedding_std)
        self.session_bias = nn.Parameter(torch.zeros(config.max_sessions))
        self.position_bias = nn.Parameter(torch.zeros(config.max_session_length))
        self.unit_bias = nn.Parameter(torch.zeros(dim))
        self.extractor = TransformerBlock(dim, config.heads, dropout=config.dropout)
        self.interacting = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.interest_attention = BilinearTargetAttention(dim, dim)
        self.interacting_attention = BilinearTargetAttention(2 * dim, dim)
        self.deep = MLP(schema.n_fields * d + 3 * dim + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        cfg = self.config
        behaviours, target = self.embeddings.sequences_and_targets(batch)
        mask = batch.sequence_mask
        age = behaviour_ages(batch)
        n, dim = behaviours.shape[0], behaviours.shape[-1]
        k, t = cfg.max_sessions, cfg.max_session_length
        sessions = split_sessions(age, mask, cfg.session_gap, k, t)
        x = gather_steps(behaviours, sessions.index.flatten(1)).view(n, k, t, dim)
        bias = self.session_bias.view(k, 1, 1) + self.position_bias.view(1, t, 1) + self.unit_bias
        x = self.extractor((x + bias).view(n * k, t, dim), sessions.mask.reshape(n * k, t)).view(n, k, t, dim)
        # average over the session's real behaviours (the block returns zeros at padding)
        session_mask = sessions.mask.any(-1)
        interests = x.sum(2) / sessions.mask.sum(-1, keepdim=True).clamp_min(1)
        # sessions are numbered newest first; the Bi-LSTM reads them oldest first
        order, ordered_mask, n_sessions = chronological_order(session_mask)
        hidden = run_packed(self.interacting, gather_steps(interests, order), n_sessions)
        u_interest = self.interest_attention(target, interests, session_mask)
        u_hidden = self.interacting_attention(target, hidden, ordered_mask)
        fields = self.embeddings.fields(batch)
        return self.deep(torch.cat([fields.flatten(1), u_interest, u_hidden, batch.dense], 1)).squeeze(-1)
