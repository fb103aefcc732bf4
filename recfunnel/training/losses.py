"""Ranking losses: point-wise, pair-wise within a request, list-wise over a request's candidates.

All take (N,) logits, (N,) labels in [0, 1] and optional (N,) weights and (N,)
group ids (the request each row belongs to). Pair-wise and list-wise losses
only compare rows of the same group; rows of groups without a positive (or
without a negative, for pairs) contribute nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
             group: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy; ``weight`` scales each row (YouTube's watch-time weights, say)."""
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, label)  # one op and one backward node
    loss = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    return (loss * weight).sum() / weight.sum().clamp_min(1e-12)


def _pairs(label: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """(N, N) bool: row i is a positive and row j a negative of the same group."""
    same = torch.ones(len(label), len(label), dtype=torch.bool, device=label.device) if group is None \
        else group[:, None] == group[None, :]
    return same & (label[:, None] > label[None, :])


def bpr_loss(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
             group: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of -log sigmoid(s_pos - s_neg) over positive/negative pairs of one group (BPR)."""
    pairs = _pairs(label, group)
    if not pairs.any():
        return logits.sum() * 0.0
    diff = logits[:, None] - logits[None, :]
    return -F.logsigmoid(diff[pairs]).mean()


def hinge_loss(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
               group: torch.Tensor | None = None, margin: float = 1.0) -> torch.Tensor:
    """Mean of max(0, margin - (s_pos - s_neg)) over positive/negative pairs of one group."""
    pairs = _pairs(label, group)
    if not pairs.any():
        return logits.sum() * 0.0
    diff = logits[:, None] - logits[None, :]
    return F.relu(margin - diff[pairs]).mean()


def softmax_loss(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
                 group: torch.Tensor | None = None) -> torch.Tensor:
    """List-wise softmax cross-entropy: -sum_pos log softmax_group(s)_pos, averaged over positives."""
    if group is None:
        group = torch.zeros_like(label, dtype=torch.long)
    _, g = torch.unique(group, return_inverse=True)
    n_groups = int(g.max()) + 1 if len(g) else 0
    gmax = torch.full((n_groups,), -torch.inf, dtype=logits.dtype, device=logits.device)
    gmax = gmax.scatter_reduce(0, g, logits.detach(), reduce="amax")
    sumexp = torch.zeros(n_groups, dtype=logits.dtype, device=logits.device).index_add(
        0, g, torch.exp(logits - gmax[g]))
    log_prob = logits - gmax[g] - torch.log(sumexp[g])
    pos = label > 0
    if not pos.any():
        return logits.sum() * 0.0
    return -(log_prob[pos] * label[pos]).sum() / label[pos].sum()


LOSSES = {"bce": bce_loss, "bpr": bpr_loss, "hinge": hinge_loss, "softmax": softmax_loss}

__all__ = ["LOSSES", "bce_loss", "bpr_loss", "hinge_loss", "softmax_loss"]
