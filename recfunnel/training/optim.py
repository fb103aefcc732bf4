"""Optimisers and weight averaging of the neural rankers' trainer.

:class:`FusedAdam` is Adam whose whole update is one call of the fused kernel
that ``torch.optim.Adam(fused=True)`` runs, without that class's per-step
bookkeeping. For a small CTR model at batch 256 the bookkeeping cost more than
the update itself: ``torch.optim.Adam.step`` regroups the parameters by device
and dtype, and increments one step tensor per parameter with a ``_foreach_add_``
that falls back to one small op per tensor on CPU (about 0.2 ms of a 2.6 ms
DeepFM step). Here the parameter and state lists are built once, and every
parameter's step counter is a view into one tensor, so counting a step is one op.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch


class FusedAdam:
    """Adam (Kingma & Ba, 2015) with L2 weight decay, numerically the same as ``torch.optim.Adam(fused=True)``.

    ``step()`` updates the parameters that received a gradient and then clears the
    gradients (``grad = None``), so ``zero_grad()`` before the next backward pass is
    free. Parameters without a gradient in a step keep their weights, moments and
    step count, as in ``torch.optim.Adam``.

    Args:
        params: the parameters to train (those with ``requires_grad=False`` are skipped).
        lr: step size.
        betas: decay rates of the first and second moment estimates.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient (Adam's, not AdamW's, decay).

    Raises:
        ValueError: on a negative step size, decay or epsilon, or betas outside [0, 1).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.params = [p for p in params if p.requires_grad]
        if any(p.is_sparse or not p.is_floating_point() for p in self.params):
            raise ValueError("FusedAdam takes dense floating-point parameters only")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), betas, float(eps), float(weight_decay)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # float32 counters as torch.optim.Adam keeps them; one tensor, so a step is one increment
        self.steps = torch.zeros(len(self.params), dtype=torch.float32)
        self._step_views = list(self.steps.unbind())

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) the gradients; after :meth:`step` there are none left to drop."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient, then clear the gradients."""
        grads = [p.grad for p in self.params]
        if all(g is not None for g in grads):
            self.steps += 1
            self._update(self.params, grads, self.exp_avg, self.exp_avg_sq, self._step_views)
        else:
            live = [j for j, g in enumerate(grads) if g is not None]
            if not live:
                return
            self.steps[live] += 1
            self._update([self.params[j] for j in live], [grads[j] for j in live],
                         [self.exp_avg[j] for j in live], [self.exp_avg_sq[j] for j in live],
                         [self._step_views[j] for j in live])
        for p in self.params:
            p.grad = None

    def _update(self, params, grads, exp_avg, exp_avg_sq, steps) -> None:
        if any(g.is_sparse for g in grads):
            raise ValueError("FusedAdam does not take sparse gradients")
        torch._fused_adam_(params, grads, exp_avg, exp_avg_sq, [], steps, lr=self.lr, beta1=self.betas[0],
                           beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps, amsgrad=False,
                           maximize=False)


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging), updated in one op per step.

    ``module`` is a copy of the model whose floating-point parameters and buffers
    follow ``e <- d e + (1 - d) p`` with ``d = min(decay, t / (t + 1))`` at the
    t-th update (t from 0): the first update copies the weights and the early ones
    average uniformly, so the random start fades out. Integer buffers (BatchNorm's
    counters) are copied. The same rule as ``torch.optim.swa_utils.AveragedModel``
    with an EMA ``multi_avg_fn``, without its per-step regrouping of the tensors:
    here the tensor lists are built once and each update is one ``_foreach_lerp_``.

    Args:
        model: the model being trained (its tensors are read at every :meth:`update`).
        decay: the decay per update, in [0, 1).

    Raises:
        ValueError: on a decay outside [0, 1).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model)
        pairs = list(zip(self.module.parameters(), model.parameters(), strict=True))
        pairs += list(zip(self.module.buffers(), model.buffers(), strict=True))
        self._averaged = [a.detach() for a, m in pairs if a.is_floating_point()]
        self._current = [m.detach() for a, m in pairs if a.is_floating_point()]
        self._copied = [(a, m) for a, m in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average."""
        d = min(self.decay, self.updates / (self.updates + 1.0))
        if self._averaged:
            torch._foreach_lerp_(self._averaged, self._current, 1.0 - d)
        for a, m in self._copied:
            a.copy_(m)
        self.updates += 1


__all__ = ["FusedAdam", "WeightAverage"]
