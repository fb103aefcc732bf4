"""The multi-layer perceptron every deep CTR model ends with."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> (BatchNorm) -> activation -> dropout, repeated; ``output_dim`` adds a last plain Linear.

    Args:
        input_dim: width of the input.
        hidden: widths of the hidden layers (may be empty).
        output_dim: width of an extra final linear layer without activation (None: no such layer).
        dropout: dropout after each hidden activation.
        batch_norm: batch normalisation before each activation.
        activation: ``relu``, ``prelu``, ``dice`` (DIN's data-adaptive activation) or ``sigmoid``.
    """

    def __init__(self, input_dim: int, hidden: Sequence[int], output_dim: int | None = None,
                 dropout: float = 0.0, batch_norm: bool = False, activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(make_activation(activation, h))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        self.net = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.net(x)
        # (..., input_dim) inputs: flatten the leading dims (BatchNorm1d wants 2-d)
        shape = x.shape[:-1]
        return self.net(x.reshape(-1, x.shape[-1])).reshape(*shape, self.output_dim)


class Dice(nn.Module):
    """DIN's Dice activation: a PReLU whose switch point follows the batch statistics."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.bn(x))
        return p * x + (1 - p) * self.alpha * x


def make_activation(name: str, dim: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(dim)
    if name == "dice":
        return Dice(dim)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}; use relu, prelu, dice or sigmoid")


__all__ = ["Dice", "MLP", "make_activation"]
