"""SIM (Pi et al., CIKM 2020): search-based interest modelling over a long behaviour history."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.layers.attention import MultiHeadTargetAttention, TimeGapEmbedding
from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.layers.sequence import behaviour_ages
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


@dataclass(frozen=True)
class SIMConfig(ModelConfig):
    """SIM's options.

    Attributes:
        search: the general search unit: ``hard`` (behaviours of the target's category) or
            ``soft`` (top-k by inner product with the target).
        top_k: behaviours the search hands to the exact search unit.
        category_sequence: the sequence field holding each behaviour's category, for the
            hard search ("" = the schema's second sequence).
        heads: heads of the exact search unit's target attention.
        time_buckets: buckets of the time-gap embedding.
        soft_search_alpha: weight of the soft search's auxiliary CTR loss (SIM §4.1), which
            trains the search projections (top-k itself passes no gradient).
        embedding_std: standard deviation of the embedding initialisation; larger than the
            library's 0.01 because the recurrent and attention blocks start from a saddle
            when the behaviours are almost zero, and escape it slowly.
    """

    search: str = "hard"
    top_k: int = 50
    category_sequence: str = ""
    heads: int = 2
    time_buckets: int = 20
    soft_search_alpha: float = 1.0
    embedding_std: float = 0.1


class SIM(CTRModel):
    """logit = MLP([field embeddings, ESU(top-k behaviours), dense]).

    General search unit (GSU, §4.1), giving at most ``top_k`` behaviours:
      hard: behaviours whose category equals the target's, newest first;
      soft: r_i = <W_b e_i, W_a e_A>, the ``top_k`` largest; W_a, W_b learn through the
      auxiliary CTR task logit_aux = MLP([sum_i r_i e_i / L, e_A]) on the same labels.
    Exact search unit (ESU, §4.2): z_i = e_i + E_t(bucket(Δt_i)) with Δt_i the time from
    the behaviour to the request, then multi-head target attention over the z_i.
    """

    name = "sim"
    config_class = SIMConfig
    needs_sequences = True

    def __init__(self, schema: ModelSchema, config: SIMConfig):
        super().__init__(schema, config)
        if config.search not in ("hard", "soft"):
            raise ValueError(f"sim: search must be 'hard' or 'soft', got {config.search!r}")
        if config.top_k < 1:
            raise ValueError(f"sim: top_k must be >= 1, got {config.top_k}")
        self.category_sequence = ""
        self.category_position = -1
        if config.search == "hard":
            names = [s.name for s in schema.sequences]
            name = config.category_sequence or (names[1] if len(names) > 1 else "")
            if name not in names[1:]:
                raise ValueError(f"sim: hard search needs a category sequence besides {names[0]!r} "
                                 f"(category_sequence={config.category_sequence!r}, sequences: {names})")
            self.category_sequence = name
            target_field = next(s.target for s in schema.sequences if s.name == name)
            self.category_position = schema.sparse_position(target_field)
        d = config.embed_dim
        dim = len(schema.sequences) * d
        self.embeddings = EmbeddingCollection(schema, d, config.embedding_std)
        if config.search == "soft":
            self.search_behaviour = nn.Linear(dim, dim, bias=False)
            self.search_target = nn.Linear(dim, dim, bias=False)
            self.search_ctr = MLP(2 * dim, config.hidden[-1:], 1)
        self.time_gap = TimeGapEmbedding(config.time_buckets, dim)
        self.esu = MultiHeadTargetAttention(dim, dim, config.heads)
        self.deep = MLP(schema.n_fields * d + self.esu.output_dim + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)
        self._search_logit: torch.Tensor | None = None

    def search(self, batch: TensorBatch, behaviours: torch.Tensor, target: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The GSU: (N, k) positions of the selected behaviours and (N, k) their validity."""
        length = mask.shape[1]
        k = min(self.config.top_k, length)
        pos = torch.arange(length, device=mask.device)
        if self.config.search == "hard":
            category = batch.sequences[self.category_sequence]
            chosen = mask & (category == batch.sparse[:, self.category_position].unsqueeze(1))
            # chosen behaviours first, newest first (the sequence is stored newest first)
            index = torch.argsort(torch.where(chosen, pos, length + pos), dim=1)[:, :k]
            return index, chosen.gather(1, index)
        relevance = torch.einsum("nld,nd->nl", self.search_behaviour(behaviours), self.search_target(target))
        if self.training and torch.is_grad_enabled():
            # §4.1 auxiliary task: the relevance-weighted history must predict the click on its own;
            # divided by L so the sum keeps its scale over histories of thousands of behaviours
            weighted = torch.einsum("nl,nld->nd", relevance * mask, behaviours) / length
            self._search_logit = self.search_ctr(torch.cat([weighted, target], 1)).squeeze(-1)
        score = relevance.detach().masked_fill(~mask, float("-inf"))
        index = torch.topk(score, k, dim=1).indices
        return index, mask.gather(1, index)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        behaviours, target = self.embeddings.sequences_and_targets(batch)
        mask = batch.sequence_mask
        index, selected = self.search(batch, behaviours, target, mask)
        chosen = behaviours.gather(1, index.unsqueeze(-1).expand(-1, -1, behaviours.shape[-1]))
        age = behaviour_ages(batch)
        chosen = chosen + self.time_gap(age.gather(1, index))
        interest = self.esu(target, chosen, selected)
        fields = self.embeddings.fields(batch)
        return self.deep(torch.cat([fields.flatten(1), interest, batch.dense], 1)).squeeze(-1)

    def auxiliary_loss(self, batch: TensorBatch) -> torch.Tensor | None:
        """The soft search's weighted auxiliary CTR loss of the last training pass (None otherwise)."""
        if self._search_logit is None or batch.label is None:
            return None
        logit, self._search_logit = self._search_logit, None
        return self.config.soft_search_alpha * F.binary_cross_entropy_with_logits(logit, batch.label,
                                                                                   weight=batch.weight)
