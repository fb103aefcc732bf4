"""FNN (Zhang et al., 2016): an MLP over the field embeddings, optionally initialised from a trained FM."""

from __future__ import annotations

import torch

from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class FNN(CTRModel):
    """logit = MLP([z_1, ..., z_F, dense]) with z_i = (w_i, v_i), the field's FM weight and vector.

    Each field embedding is ``embed_dim + 1`` wide so that it can hold the FM
    parameters (w_i, v_i) as in the paper. The FM pre-training is *not* run by
    :func:`build_model` or the trainer: by default the embeddings start random and
    FNN trains end to end. To follow the paper, train an :class:`~recfunnel.stages.rank.models.fm.FM`
    with the same schema and ``embed_dim`` first and call :meth:`init_from_fm`.
    """

    name = "fnn"
    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        self.embeddings = EmbeddingCollection(schema, config.embed_dim + 1)
        self.deep = MLP(schema.n_fields * (config.embed_dim + 1) + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    @torch.no_grad()
    def init_from_fm(self, fm: torch.nn.Module) -> None:
        """Copy a trained FM's first-order weights and latent vectors into z_i = (w_i, v_i).

        Raises:
            ValueError: when the FM's schema or embedding width differs.
        """
        if fm.schema != self.schema or fm.config.embed_dim != self.config.embed_dim:
            raise ValueError("FNN can only be initialised from an FM with the same schema and embed_dim")
        # FM's tables hold (v_i, w_i) per id; FNN's hold (w_i, v_i), same rows
        d = fm.config.embed_dim
        for name in ("table", "bag_table"):
            fm_table, table = getattr(fm.embeddings, name), getattr(self.embeddings, name)
            if table is not None:
                table.weight[:, :1].copy_(fm_table.weight[:, d:])
                table.weight[:, 1:].copy_(fm_table.weight[:, :d])

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb = self.embeddings.fields(batch)
        return self.deep(torch.cat([emb.flatten(1), batch.dense], 1)).squeeze(-1)
