"""YouTube's ranking DNN (Covington et al., 2016) trained as a weighted logistic regression.

Training: positives (clicks) are weighted by their watch time and negatives by 1
(set ``TensorBatch.weight`` so; the trainer's ``bce`` loss honours it). The learned
odds e^{Wx+b} then approximate T / (N - k) ≈ E[T](1 + P) ≈ E[T], the expected watch
time of an impression, for a small click rate P.

Serving: the ranker must order candidates by ``serving_odds(logit) = exp(logit)``,
the expected watch time, not by sigmoid(logit) (the two orders agree, but only
the odds are on the watch-time scale that later fusion and thresholds expect).
"""

from __future__ import annotations

import numpy as np
import torch

from recfunnel.layers.embedding import EmbeddingCollection
from recfunnel.layers.inputs import ModelSchema, TensorBatch
from recfunnel.layers.mlp import MLP
from recfunnel.stages.rank.models.base import CTRModel, ModelConfig


class YouTubeWeightedLR(CTRModel):
    """logit = ReLU tower([field embeddings, dense]); forward returns the logit Wx + b."""

    name = "youtube_wlr"
    config_class = ModelConfig

    def __init__(self, schema: ModelSchema, config: ModelConfig):
        super().__init__(schema, config)
        d = config.embed_dim
        self.embeddings = EmbeddingCollection(schema, d)
        self.deep = MLP(schema.n_fields * d + len(schema.dense), config.hidden, 1,
                        dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        emb = self.embeddings.fields(batch)
        return self.deep(torch.cat([emb.flatten(1), batch.dense], 1)).squeeze(-1)

    @staticmethod
    def serving_odds(logits: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Expected watch time at serving: odds = exp(logit) (a tensor or an array, same type back)."""
        if isinstance(logits, torch.Tensor):
            return torch.exp(logits)
        return np.exp(np.asarray(logits, dtype=np.float64))


def serving_odds(logits: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Module-level alias of :meth:`YouTubeWeightedLR.serving_odds`."""
    return YouTubeWeightedLR.serving_odds(logits)


__all__ = ["YouTubeWeightedLR", "serving_odds"]
