"""FusedAdam against torch.optim.Adam on the same gradients, step by step."""

from __future__ import annotations

import pytest
import torch

from recfunnel.training.optim import FusedAdam


def _twin_params(seed: int = 0) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (3,), (7, 2), ()]
    base = [torch.randn(s, generator=gen) for s in shapes]
    return [torch.nn.Parameter(t.clone()) for t in base], [torch.nn.Parameter(t.clone()) for t in base]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_same_trajectory_as_torch_adam(weight_decay):
    ours, theirs = _twin_params()
    opt = FusedAdam(ours, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    ref = torch.optim.Adam(theirs, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        grads = [torch.randn(p.shape, generator=gen) for p in ours]
        # the last parameter gets no gradient in odd steps: skipped, its step count does not move
        for j, (a, b, g) in enumerate(zip(ours, theirs, grads, strict=True)):
            if j == len(ours) - 1 and step % 2:
                continue
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        ref.zero_grad(set_to_none=True)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
            assert a.grad is None  # step clears the gradients
    assert opt.steps.tolist() == [6.0, 6.0, 6.0, 3.0]
    assert float(ref.state[theirs[-1]]["step"]) == 3.0


def test_moves_against_the_gradient_and_skips_frozen():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    frozen = torch.nn.Parameter(torch.tensor([2.0]), requires_grad=False)
    opt = FusedAdam([w, frozen], lr=0.1)
    assert opt.params == [w]
    w.grad = torch.tensor([3.0, -0.5])
    opt.step()
    # Adam's first step is lr * sign(grad) (up to eps)
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -0.9]))
    assert frozen.item() == 2.0


def test_step_without_gradients_changes_nothing():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = FusedAdam([w], lr=0.1)
    opt.step()
    assert w.item() == 1.0 and opt.steps.tolist() == [0.0]


def test_zero_grad_modes():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = FusedAdam([w])
    w.grad = torch.tensor([2.0])
    opt.zero_grad(set_to_none=False)
    assert w.grad is not None and w.grad.item() == 0.0
    opt.zero_grad()
    assert w.grad is None


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(eps=-1.0), dict(weight_decay=-0.1), dict(betas=(1.0, 0.9))])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        FusedAdam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_float64_parameters():
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    ref = torch.nn.Parameter(w.detach().clone())
    opt, ref_opt = FusedAdam([w], lr=0.1), torch.optim.Adam([ref], lr=0.1)
    for g in (0.5, -2.0, 1.0):
        w.grad, ref.grad = torch.tensor([g], dtype=torch.float64), torch.tensor([g], dtype=torch.float64)
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(w.detach(), ref.detach())
