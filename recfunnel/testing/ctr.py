"""Planted-signal data and the conformance tests every ranking model must pass.

Two planted tasks, each with no first-order signal, so a model that cannot
represent the planted interaction stays near AUC 0.5 while one that can goes
well above it:

* ``cross``: the click probability depends on the parity of ``a + b`` for two
  sparse fields ``a`` and ``b`` (an XOR of field values); other fields, a bag
  field and dense columns are noise. Feature-interaction models must find it.
* ``sequence``: items fall into 4 groups; a user's history is drawn mostly from
  one group and the target from any group; the click probability is high when the
  target's group is the history's group. No user id is given, so only a model that
  relates the target to the history can find it (DIN and its successors).

Mix :class:`CTRModelConformance` into a test class and set ``model_name``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import numpy as np
import torch

from recfunnel.evaluation.metrics import auc
from recfunnel.layers.inputs import ModelSchema, SequenceField, SparseField, TensorBatch
from recfunnel.training.trainer import (
    Trainer,
    TrainerConfig,
    load_state,
    predict_logits,
    save_state,
)

N_ITEMS = 40
N_GROUPS = 4
SEQ_LEN = 8


def make_planted_ctr(kind: str = "cross", n: int = 6000, seed: int = 0) -> tuple[ModelSchema, TensorBatch]:
    """(schema, labelled batch) of a planted task (see the module docstring)."""
    rng = np.random.default_rng(seed)
    if kind == "cross":
        a = rng.integers(0, 10, n)
        b = rng.integers(0, 10, n)
        noise_field = rng.integers(0, 30, n)
        tags = rng.integers(0, 6, (n, 3)) + 2
        tags[rng.random((n, 3)) < 0.3] = 0
        dense = rng.normal(size=(n, 2)).astype(np.float32)
        p = np.where((a + b) % 2 == 0, 0.85, 0.15)
        label = (rng.random(n) < p).astype(np.float32)
        schema = ModelSchema(
            sparse=(SparseField("a", 12), SparseField("b", 12), SparseField("noise", 32)),
            dense=("x0", "x1"), bags=(SparseField("tags", 8),))
        batch = TensorBatch(
            sparse=torch.as_tensor(np.stack([a + 2, b + 2, noise_field + 2], 1), dtype=torch.long),
            dense=torch.as_tensor(dense), bags={"tags": torch.as_tensor(tags, dtype=torch.long)},
            label=torch.as_tensor(label), weight=torch.ones(n), group=torch.as_tensor(np.arange(n) // 20))
        return schema, batch
    if kind == "sequence":
        item_group = np.arange(N_ITEMS) % N_GROUPS
        user_group = rng.integers(0, N_GROUPS, n)
        # history: 80% from the user's group, newest first; random lengths 3..SEQ_LEN
        same = rng.random((n, SEQ_LEN)) < 0.8
        grp = np.where(same, user_group[:, None], rng.integers(0, N_GROUPS, (n, SEQ_LEN)))
        hist = grp + N_GROUPS * rng.integers(0, N_ITEMS // N_GROUPS, (n, SEQ_LEN))
        length = rng.integers(3, SEQ_LEN + 1, n)
        pad = np.arange(SEQ_LEN)[None, :] >= length[:, None]
        hist_ids = np.where(pad, 0, hist + 2)
        gaps = rng.exponential(3600.0, (n, SEQ_LEN))
        gaps[:, 3:] += 4 * 3600.0 * (rng.random((n, SEQ_LEN - 3)) < 0.3)  # session breaks
        age = np.where(pad, 0.0, np.cumsum(gaps, 1)).astype(np.float32)
        target = rng.integers(0, N_ITEMS, n)
        hist_cat = np.where(pad, 0, item_group[hist] + 2)
        p = np.where(item_group[target] == user_group, 0.8, 0.2)
        label = (rng.random(n) < p).astype(np.float32)
        dense = rng.normal(size=(n, 1)).astype(np.float32)
        schema = ModelSchema(
            sparse=(SparseField("item_id", N_ITEMS + 2), SparseField("category", N_GROUPS + 2),
                    SparseField("noise", 12)),
            dense=("x0",),
            sequences=(SequenceField("hist_item_id", "item_id"), SequenceField("hist_category", "category")),
            max_sequence_length=SEQ_LEN)
        batch = TensorBatch(
            sparse=torch.as_tensor(np.stack([target + 2, item_group[target] + 2, rng.integers(2, 12, n)], 1),
                                   dtype=torch.long),
            dense=torch.as_tensor(dense),
            sequences={"hist_item_id": torch.as_tensor(hist_ids, dtype=torch.long),
                       "hist_category": torch.as_tensor(hist_cat, dtype=torch.long)},
            sequence_age=torch.as_tensor(age), label=torch.as_tensor(label), weight=torch.ones(n),
            group=torch.as_tensor(np.arange(n) // 20))
        return schema, batch
    raise ValueError(f"unknown planted task {kind!r}; use 'cross' or 'sequence'")


def split(batch: TensorBatch, fraction: float = 0.75) -> tuple[TensorBatch, TensorBatch]:
    cut = int(len(batch) * fraction)
    return batch.select(slice(0, cut)), batch.select(slice(cut, len(batch)))


CONFORMANCE_TRAINER = TrainerConfig(epochs=8, batch_size=256, learning_rate=5e-3, patience=2, seed=0, threads=1)


@functools.lru_cache(maxsize=4)
def baseline_auc(kind: str) -> float:
    """Test AUC of LR (no interactions) on a planted task: the bar a model must clear."""
    from recfunnel.stages.rank.models import build_model

    schema, batch = make_planted_ctr(kind)
    train, test = split(batch)
    torch.manual_seed(CONFORMANCE_TRAINER.seed)  # initial weights must not depend on what ran before
    model = build_model("lr", schema)
    Trainer(CONFORMANCE_TRAINER).fit(model, train, test)
    return auc(test.label.numpy() > 0.5, predict_logits(model, test))


class CTRModelConformance:
    """Inherited tests for a ranking model registered in :mod:`recfunnel.stages.rank.models`."""

    model_name: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    #: the planted task: "cross" for feature-interaction models, "sequence" for the DIN family
    task: ClassVar[str] = "cross"
    #: how far above LR the model's test AUC must be
    margin: ClassVar[float] = 0.1
    trainer: ClassVar[TrainerConfig] = CONFORMANCE_TRAINER

    def _fit(self):
        from recfunnel.stages.rank.models import build_model

        schema, batch = make_planted_ctr(self.task)
        train, test = split(batch)
        torch.manual_seed(self.trainer.seed)  # initial weights must not depend on what ran before
        model = build_model(self.model_name, schema, self.params)
        history = Trainer(self.trainer).fit(model, train, test)
        return model, train, test, history

    def test_learns_planted_interaction(self, tmp_path):
        model, _, test, history = self._fit()
        scores = predict_logits(model, test)
        assert scores.shape == (len(test),) and np.isfinite(scores).all()
        model_auc = auc(test.label.numpy() > 0.5, scores)
        base = baseline_auc(self.task)
        assert model_auc > base + self.margin, f"{self.model_name}: AUC {model_auc:.3f} vs LR {base:.3f}"
        # saves, loads and scores identically
        save_state(model, tmp_path / "model.pt")
        from recfunnel.stages.rank.models import build_model

        restored = load_state(build_model(self.model_name, model.schema, self.params), tmp_path / "model.pt")
        np.testing.assert_array_equal(predict_logits(restored, test), scores)

    def test_trains_under_bfloat16_autocast(self):
        # TrainerConfig(precision="bf16") must run every model: finite losses, float32 weights and scores
        from recfunnel.stages.rank.models import build_model

        schema, batch = make_planted_ctr(self.task, n=512)
        train, test = split(batch)
        torch.manual_seed(0)
        model = build_model(self.model_name, schema, self.params)
        config = dataclasses.replace(self.trainer, epochs=1, batch_size=128, precision="bf16")
        history = Trainer(config).fit(model, train, test)
        assert np.isfinite(history.train_loss).all()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        scores = predict_logits(model, test)
        assert scores.dtype == np.float32 and np.isfinite(scores).all()

    def test_batch_of_one_matches_batch(self):
        from recfunnel.stages.rank.models import build_model

        schema, batch = make_planted_ctr(self.task, n=64)
        torch.manual_seed(0)
        model = build_model(self.model_name, schema, self.params).eval()
        full = predict_logits(model, batch)
        single = np.concatenate([predict_logits(model, batch.select(slice(i, i + 1))) for i in range(8)])
        np.testing.assert_allclose(single, full[:8], rtol=1e-4, atol=1e-5)


__all__ = ["CTRModelConformance", "baseline_auc", "make_planted_ctr", "split"]
