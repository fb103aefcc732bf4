"""Optimisers of the neural rankers' trainer.

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


__all__ = ["FusedAdam"]
