"""The training loop of the neural rankers, apart from the models (Lightning-style separation).

``Trainer(config).fit(model, train, valid)`` runs mini-batch training with Adam
or Adagrad, evaluates validation AUC after every epoch, keeps the best weights
and stops early when AUC stops improving. Runs are deterministic for a seed and
a thread count. Checkpoints are plain ``state_dict`` files read back with
``torch.load(weights_only=True)``, written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from recfunnel.evaluation.metrics import auc, gauc
from recfunnel.layers.inputs import TensorBatch
from recfunnel.storage.artifacts import atomic_write_bytes
from recfunnel.training.losses import LOSSES
from recfunnel.training.optim import FusedAdam, WeightAverage


@dataclass(frozen=True)
class TrainerConfig:
    """How to train a neural ranker.

    Attributes:
        epochs: maximum passes over the training rows.
        batch_size: rows per step (for pair-wise and list-wise losses, whole groups are kept together).
        learning_rate: step size.
        optimizer: ``adam`` or ``adagrad``.
        weight_decay: L2 penalty added to every parameter's gradient (Adam's coupled decay, embedding
            tables included; ``embedding_l2`` is the sparse-friendly alternative for those).
        embedding_l2: L2 on the embedding rows used in a batch (sparse-friendly regularisation).
        loss: ``bce`` (point-wise, honours sample weights), ``bpr`` / ``hinge`` (pair-wise
            within a group) or ``softmax`` (list-wise over a group); the group losses ignore
            sample weights (``softmax`` weights each positive by its label).
        patience: epochs without a better validation AUC before stopping.
        validation_metric: what early stopping and ``restore_best`` compare: ``auc`` over all
            validation rows, ``gauc`` (the mean of each group's AUC, weighted by its rows), or
            ``auto``: ``gauc`` for the group losses (``bpr``, ``hinge``, ``softmax``) when the
            validation rows have groups, else ``auc``. A group loss leaves each group's scores
            free up to a shift, so their pooled AUC mixes those shifts into what it measures: in
            the ML-100K funnel an FM ranker trained with ``softmax`` and stopped on pooled AUC
            kept its first epoch at one seed in eight, and lost 0.026 NDCG@10 (BENCHMARKS.md).
        restore_best: end with the weights of the best validation epoch (else the last epoch's).
        ema_decay: keep an exponential moving average of the weights (Polyak averaging) with this
            decay per step, and validate, keep and return the averaged weights instead of the raw
            ones (0 = off; 0.999 averages over roughly the last thousand steps). Early steps
            average uniformly (decay min(ema_decay, t / (t + 1))) so the random start fades out.
        min_steps_per_epoch: make every epoch at least this many steps by passing over the
            training rows several times (reshuffled each time) when one pass is shorter (0 = one
            pass per epoch). Validation, patience and the averaging's span then mean about the same
            on a few thousand rows as on millions: with 12 steps per pass, one epoch of patience
            stopped training before the model had learned anything.
        precision: ``fp32``, or ``bf16`` to run the training forward pass under CPU autocast
            (``torch.autocast("cpu", torch.bfloat16)``): the large matrix products (MLP hidden
            layers, attention) take bfloat16 inputs and accumulate in float32, while weights,
            optimiser state, the loss, the embedding lookup, the last (logit) layer and every
            evaluation and inference pass stay float32. It pays on CPUs with native bfloat16
            dot products (AVX512-BF16 or AMX: AMD Zen 4 and Intel Sapphire Rapids onwards),
            where DeepFM's step on ML-100K is about a tenth shorter (BENCHMARKS.md); elsewhere
            the products are converted or emulated and usually slower (not measured here).
        seed: seed of initialisation and shuffling.
        threads: torch intra-op threads during training (0 = leave torch's setting).
        eval_batch_size: rows per forward pass at evaluation and inference.
        checkpoint_dir: where to write ``epoch-N.pt`` and ``best.pt`` (None = keep in memory only).
        progress: show a progress bar.
    """

    epochs: int = 5
    batch_size: int = 1024
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adagrad"] = "adam"
    weight_decay: float = 0.0
    embedding_l2: float = 0.0
    loss: Literal["bce", "bpr", "hinge", "softmax"] = "bce"
    patience: int = 1
    validation_metric: Literal["auto", "auc", "gauc"] = "auto"
    restore_best: bool = True
    ema_decay: float = 0.0
    min_steps_per_epoch: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    threads: int = 0
    eval_batch_size: int = 8192
    checkpoint_dir: str | None = None
    progress: bool = False


@dataclass
class TrainingHistory:
    """What happened during :meth:`Trainer.fit`."""

    train_loss: list[float] = field(default_factory=list)
    valid_auc: list[float] = field(default_factory=list)  # the validation metric per epoch
    valid_metric: str = "auc"  # which one: "auc" or "gauc" (TrainerConfig.validation_metric)
    best_epoch: int = -1
    samples_per_second: float = 0.0
    train_seconds: float = 0.0
    seconds: float = 0.0


@contextlib.contextmanager
def torch_threads(n: int):
    """Temporarily set torch's intra-op thread count (n <= 0: unchanged)."""
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(n: int, batch_size: int, generator: torch.Generator, group: torch.Tensor | None,
             keep_groups: bool) -> list[torch.Tensor]:
    """Shuffled row indices cut into batches; with ``keep_groups``, groups are shuffled and never split."""
    if not keep_groups or group is None:
        perm = torch.randperm(n, generator=generator)
        return list(torch.split(perm, batch_size))
    if n <= batch_size:  # one batch holds every group (torch.arange(batch_size, n) would be empty or invalid)
        uniq, inv = torch.unique(group, return_inverse=True)
        order = torch.argsort(torch.randperm(len(uniq), generator=generator)[inv] * n + torch.arange(n), stable=True)
        return [order] if n > 0 else []
    uniq, inv = torch.unique(group, return_inverse=True)
    group_rank = torch.randperm(len(uniq), generator=generator)[inv]
    order = torch.argsort(group_rank * n + torch.arange(n), stable=True)
    sorted_rank = group_rank[order]
    # cut where a new group starts at or after each multiple of batch_size; a multiple past the
    # last group's start is no cut (that group runs to the end)
    starts = torch.nonzero(torch.diff(sorted_rank, prepend=sorted_rank[:1] - 1)).ravel()
    positions = torch.searchsorted(starts, torch.arange(batch_size, n, batch_size))
    cuts = starts[positions[positions < len(starts)]].unique()
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([n])]).unique()
    return [order[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True) if b > a]


def predict_logits(model: torch.nn.Module, batch: TensorBatch, batch_size: int = 8192) -> np.ndarray:
    """(N,) float32 logits, computed in eval mode without gradients."""
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(batch), batch_size):
            out.append(model(batch.select(slice(start, start + batch_size))).float())
    model.train(was_training)
    if not out:
        return np.zeros(0, np.float32)
    return torch.cat(out).detach().numpy().astype(np.float32)


def predict_proba(model: torch.nn.Module, batch: TensorBatch, batch_size: int = 8192) -> np.ndarray:
    """(N,) float32 probabilities sigmoid(logit)."""
    logits = predict_logits(model, batch, batch_size)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def save_state(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model.state_dict()`` atomically (tensors only, loadable with weights_only=True)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Restore weights written by :func:`save_state`; never unpickles arbitrary objects."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


class Trainer:
    """Mini-batch training with early stopping on validation AUC."""

    def __init__(self, config: TrainerConfig | None = None):
        self.config = config or TrainerConfig()

    def _optimizer(self, model: torch.nn.Module) -> FusedAdam | torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adam":
            # torch's fused Adam kernel without torch.optim.Adam's per-step bookkeeping
            return FusedAdam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adagrad":
            return torch.optim.Adagrad(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                       foreach=True)
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam or adagrad")

    def fit(self, model: torch.nn.Module, train: TensorBatch, valid: TensorBatch | None = None) -> TrainingHistory:
        """Train ``model`` in place on ``train``; keep the weights of the best validation epoch.

        Raises:
            ValueError: on a training batch without labels or an unknown loss.
        """
        cfg = self.config
        if train.label is None:
            raise ValueError("training rows need labels")
        if cfg.loss not in LOSSES:
            raise ValueError(f"unknown loss {cfg.loss!r}; use one of {sorted(LOSSES)}")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
        if cfg.min_steps_per_epoch < 0:
            raise ValueError(f"min_steps_per_epoch must be >= 0, got {cfg.min_steps_per_epoch}")
        if cfg.validation_metric not in ("auto", "auc", "gauc"):
            raise ValueError(f"validation_metric must be 'auto', 'auc' or 'gauc', got {cfg.validation_metric!r}")
        if cfg.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {cfg.precision!r}")
        # a disabled autocast still costs a few microseconds to enter and leave every step
        forward_context = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
                           if cfg.precision == "bf16" else contextlib.nullcontext)
        has_aux = hasattr(model, "auxiliary_loss")
        loss_fn = LOSSES[cfg.loss]
        keep_groups = cfg.loss != "bce"
        if keep_groups and train.group is None:
            raise ValueError(f"loss {cfg.loss!r} compares rows of one request: training rows need a group")
        if getattr(model, "needs_sequences", None) is False:
            # behaviour sequences are most of a batch's bytes: do not shuffle what the model never reads
            train = train.without_sequences()
            valid = valid.without_sequences() if valid is not None else None
        history = TrainingHistory()
        ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        if ckpt_dir is not None:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        with torch_threads(cfg.threads):
            torch.manual_seed(cfg.seed)
            generator = torch.Generator().manual_seed(cfg.seed)
            optimizer = self._optimizer(model)
            averaged = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
            evaluated = averaged.module if averaged is not None else model
            best_auc, best_state, bad_epochs = -np.inf, None, 0
            seen, t0 = 0, time.perf_counter()
            has_valid = valid is not None and valid.label is not None and len(valid) > 0 \
                and 0 < float(valid.label.sum()) < len(valid)
            by_group = has_valid and valid.group is not None and (
                cfg.validation_metric == "gauc" or (cfg.validation_metric == "auto" and keep_groups))
            if cfg.validation_metric == "gauc" and has_valid and valid.group is None:
                raise ValueError("validation_metric 'gauc' needs validation rows with a group")
            history.valid_metric = "gauc" if by_group else "auc"
            for epoch in range(cfg.epochs):
                model.train()
                t_epoch = time.perf_counter()
                shuffled = None  # drop the last epoch's copy before gathering the next one
                batches = _batches(len(train), cfg.batch_size, generator, train.group, keep_groups)
                if 0 < len(batches) < cfg.min_steps_per_epoch:
                    passes = -(-cfg.min_steps_per_epoch // len(batches))
                    for _ in range(passes - 1):
                        batches += _batches(len(train), cfg.batch_size, generator, train.group, keep_groups)
                # one gather per epoch, then every batch is a contiguous slice (a view): per-step
                # fancy indexing of every input tensor would cost as much as a small model's step
                shuffled = train.select(torch.cat(batches))
                bounds = np.cumsum([0] + [len(b) for b in batches])
                total, count = 0.0, 0
                bar = tqdm(range(len(batches)), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           disable=not cfg.progress, leave=False, unit="batch")
                for j in bar:
                    batch = shuffled.select(slice(int(bounds[j]), int(bounds[j + 1])))
                    with forward_context():
                        logits = model(batch)
                        aux = model.auxiliary_loss(batch) if has_aux else None
                    loss = loss_fn(logits.float(), batch.label, batch.weight, batch.group)
                    if aux is not None:
                        loss = loss + aux.float()
                    if cfg.embedding_l2 > 0:
                        loss = loss + cfg.embedding_l2 * _embedding_penalty(model, batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if averaged is not None:
                        averaged.update()
                    total += float(loss.detach()) * len(batch)
                    count += len(batch)
                    if cfg.progress and j % 20 == 0:
                        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
                seen += count
                history.train_seconds += time.perf_counter() - t_epoch
                history.train_loss.append(total / max(count, 1))
                if not has_valid:
                    history.best_epoch = epoch
                    continue
                scores = predict_logits(evaluated, valid, cfg.eval_batch_size)
                positive = valid.label.numpy() > 0.5
                epoch_auc = gauc(valid.group.numpy(), positive, scores) if by_group else float("nan")
                if np.isnan(epoch_auc):  # no group with both classes: the pooled AUC still ranks epochs
                    epoch_auc = auc(positive, scores)
                    history.valid_metric = "auc"
                history.valid_auc.append(epoch_auc)
                if cfg.progress:
                    tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train loss {history.train_loss[-1]:.4f}, "
                               f"valid {history.valid_metric} {epoch_auc:.4f}"
                               f"{' (best)' if epoch_auc > best_auc else ''} "
                               f"[{time.perf_counter() - t_epoch:.0f}s]", file=sys.stderr)
                if ckpt_dir is not None:
                    save_state(evaluated, ckpt_dir / f"epoch-{epoch + 1}.pt")
                if epoch_auc > best_auc:
                    best_auc, bad_epochs, history.best_epoch = epoch_auc, 0, epoch
                    best_state = copy.deepcopy(evaluated.state_dict())
                    if ckpt_dir is not None:
                        save_state(evaluated, ckpt_dir / "best.pt")
                else:
                    bad_epochs += 1
                    if bad_epochs >= cfg.patience:
                        break
            if best_state is not None and cfg.restore_best:
                model.load_state_dict(best_state)
            elif averaged is not None:
                model.load_state_dict(averaged.module.state_dict())
            history.seconds = time.perf_counter() - t0
            # training steps only (validation passes excluded), comparable across libraries
            history.samples_per_second = seen / max(history.train_seconds, 1e-9)
        model.eval()
        return history


def _embedding_penalty(model: torch.nn.Module, batch: TensorBatch) -> torch.Tensor:
    """Mean squared norm of the embedding rows the batch touched (cheap, sparse-friendly L2)."""
    emb = getattr(model, "embeddings", None)
    if emb is None or not hasattr(emb, "sparse"):
        return torch.zeros(())
    return emb.sparse(batch).pow(2).sum(-1).mean()


__all__ = ["Trainer", "TrainerConfig", "TrainingHistory", "load_state", "predict_logits", "predict_proba",
           "save_state", "torch_threads"]
