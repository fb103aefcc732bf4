import math

import pytest
import torch

from recfunnel.training.losses import bce_loss, bpr_loss, hinge_loss, softmax_loss


def test_bce_weights_rows():
    logits = torch.tensor([0.0, 2.0])
    label = torch.tensor([1.0, 0.0])
    per_row = [math.log(2.0), math.log(1 + math.exp(2.0))]
    assert bce_loss(logits, label).item() == pytest.approx(sum(per_row) / 2, rel=1e-6)
    w = torch.tensor([3.0, 1.0])
    assert bce_loss(logits, label, w).item() == pytest.approx((3 * per_row[0] + per_row[1]) / 4, rel=1e-6)


def test_pairwise_losses_only_compare_rows_of_one_group():
    logits = torch.tensor([2.0, 1.0, 5.0, -5.0])
    label = torch.tensor([1.0, 0.0, 0.0, 1.0])
    group = torch.tensor([0, 0, 1, 1])
    # pairs: (0 beats 1) in group 0, (3 beats 2) in group 1
    expected_bpr = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(10.0)))) / 2
    assert bpr_loss(logits, label, group=group).item() == pytest.approx(expected_bpr, rel=1e-5)
    assert hinge_loss(logits, label, group=group).item() == pytest.approx((0.0 + 11.0) / 2)
    # without groups every positive is compared with every negative
    assert bpr_loss(logits, label).item() != pytest.approx(expected_bpr)


def test_pairwise_loss_without_pairs_is_zero_with_gradient():
    logits = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = bpr_loss(logits, torch.tensor([1.0, 1.0]), group=torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_softmax_loss_is_cross_entropy_per_group():
    logits = torch.tensor([1.0, 0.0, -1.0, 3.0, 0.5])
    label = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    group = torch.tensor([7, 7, 7, 2, 2])
    ce0 = -torch.log_softmax(logits[:3], 0)[0]
    ce1 = -torch.log_softmax(logits[3:], 0)[1]
    assert softmax_loss(logits, label, group=group).item() == pytest.approx(((ce0 + ce1) / 2).item(), rel=1e-6)
