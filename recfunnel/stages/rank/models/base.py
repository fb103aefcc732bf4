"""The base of every neural ranking model.

A model is a ``torch.nn.Module`` built from a :class:`ModelSchema` and a frozen
config dataclass; ``forward(batch)`` returns (N,) logits. Models never train
themselves: :class:`recfunnel.training.trainer.Trainer` does, and the ranking
stage (:mod:`recfunnel.stages.rank.neural`) turns candidates into batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recfunnel.layers.embedding import DenseEmbedding, EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch


@dataclass(frozen=True)
class ModelConfig:
    """Options every model has; model configs subclass it.

    Attributes:
        embed_dim: width of every field embedding.
        hidden: hidden widths of the deep part (where the model has one).
        dropout: dropout in the deep part.
        batch_norm: batch normalisation in the deep part.
    """

    embed_dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    batch_norm: bool = False


class CTRModel(nn.Module):
    """Base class: holds the schema, the config and (optionally) the shared embeddings.

    Subclasses implement :meth:`forward`; models with an auxiliary objective
    (DIEN's next-behaviour loss) override :meth:`auxiliary_loss`, which the
    trainer adds to the main loss.
    """

    #: registry name, e.g. "deepfm"
    name: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: whether the model needs ``schema.sequences`` (DIN family)
    needs_sequences: ClassVar[bool] = False

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__()
        if self.needs_sequences and not schema.sequences:
            raise ValueError(f"model {self.name!r} needs a behaviour sequence in the schema")
        self.schema = schema
        self.config = config

    def forward(self, batch: TensorBatch) -> torch.Tensor:  # pragma: no cover - abstract
        """(N,) logits."""
        raise NotImplementedError

    def auxiliary_loss(self, batch: TensorBatch) -> torch.Tensor | None:
        """An extra training loss computed on the last forward pass (None: no such loss)."""
        return None

    def field_embeddings(self, embeddings: EmbeddingCollection, batch: TensorBatch,
                         dense_embedding: DenseEmbedding | None = None) -> torch.Tensor:
        """(N, F', d): sparse and bag fields, plus dense columns as fields when ``dense_embedding`` is given."""
        emb = embeddings.fields(batch)
        if dense_embedding is not None and self.schema.dense:
            emb = torch.cat([emb, dense_embedding(batch.dense)], 1)
        return emb

    def fields_and_linear(self, batch: TensorBatch,
                          dense_embedding: DenseEmbedding | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, F', d) field embeddings (dense columns as fields with ``dense_embedding``) and (N,) linear logit.

        For models with ``self.embeddings = EmbeddingCollection(..., first_order=True)`` and
        ``self.linear = LinearTerms(schema, ids=False)``: the ids' first-order weights come
        from the same gather as their embeddings, ``self.linear`` adds the dense map and bias.
        """
        emb, first = self.embeddings.fields_and_first_order(batch)
        if dense_embedding is not None and self.schema.dense:
            emb = torch.cat([emb, dense_embedding(batch.dense)], 1)
        return emb, first + self.linear(batch)


__all__ = ["CTRModel", "ModelConfig"]
