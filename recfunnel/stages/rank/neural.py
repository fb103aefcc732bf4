"""Neural ranking stage: any model of the zoo, trained on the funnel's own candidates.

Like :class:`~recfunnel.stages.rank.lightgbm.LightGBMRanker`, the model learns
from labelled retrieval candidates (held-out positives against the other
candidates of the same user). Features come from
:class:`~recfunnel.features.ranking.RankingFeatureBuilder` and
:class:`~recfunnel.features.tensors.TensorEncoder`, the same code at training
and at serving time. Weights are saved as ``.npz`` arrays (never pickle).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import torch

from recfunnel.data.dataset import TrainingData
from recfunnel.errors import ArtifactError, ConfigError, RecfunnelError
from recfunnel.features.ranking import RankingFeatureBuilder, RankingFeatureConfig
from recfunnel.features.tensors import TensorEncoder, TensorEncoderConfig
from recfunnel.layers.inputs import ModelSchema
from recfunnel.stages.rank.base import FeatureRanker
from recfunnel.stages.rank.models import build_model, model_class
from recfunnel.stages.rank.samples import sample_training_slots
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.training.trainer import Trainer, TrainerConfig, predict_logits, torch_threads
from recfunnel.types import Candidates, FeatureBatch, RequestBatch


@dataclass(frozen=True)
class NeuralRankerConfig:
    """A neural ranker: which model, its options, and how to train it.

    Attributes:
        model: a name of :data:`recfunnel.stages.rank.models.MODELS` (``deepfm``, ``din``, ...).
        model_params: options of that model's config (``embed_dim``, ``hidden``, ...).
        trainer: the training loop's options (keys given in a config override this default
            one by one: 4 epochs of batches of 1,024 rows, each epoch at least 100 steps,
            with weight averaging, ``ema_decay`` 0.99, and the list-wise ``softmax`` loss
            over each user's candidates).
        encoder: which extra inputs (ids, categories, behaviour sequence) the model reads.
        features: the statistics features.
        negatives_per_user: candidates kept per user besides the positives.
        max_train_users: users sampled for training (bounded memory).
        validation_fraction: users held out for early stopping.
        score_batch_size: rows per forward pass when scoring.
        threads: torch threads when scoring (0 = torch's setting).
    """

    model: str = "deepfm"
    model_params: dict[str, Any] = field(default_factory=dict)
    # weight averaging over ~100 steps: +0.003 NDCG@10 for DeepFM in the ML-100K funnel (BENCHMARKS.md);
    # at least 100 steps per epoch: on 12k training rows (the first 84k events of Taobao) one pass is
    # 12 steps, and early stopping kept a model worse than chance (BENCHMARKS.md);
    # the list-wise softmax over each user's candidates, the ranker's actual task: over 8 seeds it
    # beat point-wise BCE on ML-100K (NDCG@10 0.2545 against 0.2527) and on Taobao (recall@50
    # 0.0279 against 0.0232, NDCG@10 0.0060 against 0.0045) (BENCHMARKS.md); early stopping then
    # compares epochs by each user's AUC (validation_metric "auto"), +0.0024 NDCG@10 on ML-100K
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        epochs=4, batch_size=1024, ema_decay=0.99, min_steps_per_epoch=100, loss="softmax"))
    encoder: TensorEncoderConfig = field(default_factory=TensorEncoderConfig)
    features: RankingFeatureConfig = field(default_factory=RankingFeatureConfig)
    negatives_per_user: int = 150
    max_train_users: int = 20_000
    validation_fraction: float = 0.15
    score_batch_size: int = 8192
    threads: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        cls = model_class(self.model)  # raises a ConfigError naming the known models
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(self.model_params) - known)
        if unknown:
            raise ConfigError(f"model {self.model!r} has no option(s) {unknown}; options: {sorted(known)}")
        if cls.needs_sequences and self.encoder.max_sequence_length < 1:
            raise ConfigError(f"model {self.model!r} reads the behaviour sequence: encoder.max_sequence_length must be >= 1")


class NeuralRanker(FeatureRanker):
    """Scores (user, candidate) pairs with a model of the zoo."""

    kind = "neural"

    def __init__(self, config: NeuralRankerConfig | None = None, name: str | None = None):
        super().__init__(config or NeuralRankerConfig(), name or "rank")

    def _encoder_config(self) -> TensorEncoderConfig:
        """The encoder's config, without behaviour sequences for models that never read them.

        The sequences are most of a batch's bytes (two (N, L) int64 tensors): a DeepFM
        trained on 2.4M candidate rows would carry ~4 GB of history it never looks at,
        and every request would encode it too.
        """
        if model_class(self.config.model).needs_sequences:
            return self.config.encoder
        return dataclasses.replace(self.config.encoder, max_sequence_length=0)

    def fit_candidates(self, data: TrainingData, request: RequestBatch, candidates: Candidates,
                       labels: np.ndarray, *, progress: bool = False) -> Self:
        cfg = self.config
        builder = self._fit_builder(data, candidates)
        rng = np.random.default_rng(cfg.seed)
        masked = sample_training_slots(candidates, labels, cfg.negatives_per_user, cfg.max_train_users, rng)
        feats, rows, cols = builder.transform(request, masked)
        encoder = TensorEncoder(self._encoder_config()).fit(data, feats, builder)
        batch = encoder.transform(request, masked, feats, rows, cols)
        del feats  # encoded: the float features and the full batch are not needed during training
        batch.label = torch.as_tensor(labels[rows, cols].astype(np.float32))
        batch.group = torch.as_tensor(rows.astype(np.int64))
        is_valid_user = rng.random(len(labels)) < cfg.validation_fraction
        vmask = is_valid_user[rows]
        if vmask.all() or not vmask.any() or batch.label[torch.as_tensor(vmask)].sum() == 0:
            vmask = np.zeros(len(rows), bool)
        train = batch.select(torch.as_tensor(np.flatnonzero(~vmask)))
        valid = batch.select(torch.as_tensor(np.flatnonzero(vmask))) if vmask.any() else None
        n_rows, n_positives = len(batch), int(batch.label.sum())
        del batch
        schema = encoder.schema()
        torch.manual_seed(cfg.trainer.seed)
        model = build_model(cfg.model, schema, cfg.model_params)
        trainer_cfg = dataclasses.replace(cfg.trainer, progress=cfg.trainer.progress or progress)
        history = Trainer(trainer_cfg).fit(model, train, valid)
        self.schema_, self.model_, self.encoder_, self.features_ = schema, model, encoder, builder
        self.train_summary_ = {
            "rows": n_rows, "positives": n_positives, "users": int(len(np.unique(rows))),
            "best_epoch": history.best_epoch, "validation_auc": history.valid_auc,
            "validation_metric": history.valid_metric,
            "train_loss": history.train_loss, "samples_per_second": history.samples_per_second,
        }
        return self

    def training_curves(self) -> dict[str, dict]:
        """The trainer's per-epoch loss and validation metric (see :meth:`Stage.training_curves`).

        Read from ``train_summary_``, which ``save`` writes into the stage's ``meta.json``,
        so a loaded model has its curves; a summary without them (not trained here) gives ``{}``.
        """
        summary = getattr(self, "train_summary_", None) or {}
        loss = summary.get("train_loss") or []
        if not loss:
            return {}
        return {self.config.model: {
            "train_loss": [float(v) for v in loss],
            "valid_metric": [float(v) for v in summary.get("validation_auc") or []],
            "metric": summary.get("validation_metric", "auc"),
            "best_epoch": int(summary.get("best_epoch", -1)),
        }}

    def _score_rows(self, request: RequestBatch, candidates: Candidates, features: FeatureBatch,
                    rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N,) logits."""
        batch = self.encoder_.transform(request, candidates, features, rows, cols)
        with torch_threads(self.config.threads):
            return predict_logits(self.model_, batch, self.config.score_batch_size)

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        if not self.is_fitted or not hasattr(self, "model_"):
            raise RecfunnelError("the neural ranker is not trained")
        state = {k: v.detach().cpu().numpy() for k, v in self.model_.state_dict().items()}
        writer.write_arrays(f"{prefix}weights.npz", state)
        writer.write_arrays(f"{prefix}features.npz", self.features_.to_arrays())
        writer.write_arrays(f"{prefix}encoder.npz", self.encoder_.to_arrays())
        writer.write_json(f"{prefix}meta.json", {
            "model": self.config.model, "schema": self.schema_.to_dict(),
            "channel_names": list(self.channel_names_), "builder": self.features_.meta(),
            "encoder": self.encoder_.meta(), "train_summary": self.train_summary_,
        })

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str, config: NeuralRankerConfig, name: str | None = None) -> Self:
        ranker = cls(config, name)
        meta = reader.read_json(f"{prefix}meta.json")
        if meta["model"] != config.model:
            raise RecfunnelError(f"the saved ranker is a {meta['model']!r} model, the config asks for {config.model!r}")
        ranker.channel_names_ = tuple(meta["channel_names"])
        ranker.train_summary_ = meta["train_summary"]
        ranker.schema_ = ModelSchema.from_dict(meta["schema"])
        ranker.features_ = RankingFeatureBuilder.from_arrays(
            config.features, ranker.channel_names_, reader.read_arrays(f"{prefix}features.npz"), meta["builder"])
        ranker.encoder_ = TensorEncoder.from_arrays(ranker._encoder_config(), reader.read_arrays(f"{prefix}encoder.npz"),
                                                    meta["encoder"])
        model = build_model(config.model, ranker.schema_, config.model_params)
        weights = reader.read_arrays(f"{prefix}weights.npz")
        try:
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        except RuntimeError as e:  # missing/unexpected keys or shapes: another layout of the model
            raise ArtifactError(f"{prefix}weights.npz does not fit a {config.model!r} model of this recfunnel "
                                f"version (saved by an older layout or other model_params?); refit the "
                                f"funnel. Details: {str(e).splitlines()[0]}") from None
        ranker.model_ = model.eval()
        return ranker
