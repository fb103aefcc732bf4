"""LHUC gates and PPNet's gated MLP (Kuaishou's Parameter Personalized Net).

LHUC (Learning Hidden Unit Contributions) rescales every hidden unit of a network
by a per-example amplitude in (0, 2): 1 is "unchanged", so an untrained gate
(pre-activation ~ 0) leaves the main network as it is, and it can both damp and
amplify a unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recfunnel.layers.mlp import MLP


class LHUCGate(nn.Module):
    """Gate NN: g(x) = 2 * sigmoid(W_2 ReLU(W_1 x + b_1) + b_2), values in (0, 2).

    Args:
        input_dim: width of the gate's input.
        output_dim: units of the hidden layer it gates.
        hidden: width of the gate's own hidden layer (0 = a single linear map).
    """

    def __init__(self, input_dim: int, output_dim: int, hidden: int = 64):
        super().__init__()
        self.net = MLP(input_dim, (hidden,) if hidden > 0 else (), output_dim)
        # start at g = 2 * sigmoid(0) = 1 exactly: the gated network begins as the plain
        # network and the gates only learn departures from it (random gates add noise
        # to every hidden unit and slow the start of training)
        last = self.net.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.net(x))


class GatedMLP(nn.Module):
    """PPNet's main tower: h_l = act(W_l h_{l-1} + b_l) ⊙ g_l(gate_input), then a final linear map.

    Each hidden layer has its own :class:`LHUCGate` reading the same gate input.

    Args:
        input_dim: width of the main input.
        gate_input_dim: width of the gate input.
        hidden: widths of the hidden layers.
        output_dim: width of the final linear layer.
        gate_hidden: width of each gate network's hidden layer.
        dropout, batch_norm: as in :class:`~recfunnel.layers.mlp.MLP`.
    """

    def __init__(self, input_dim: int, gate_input_dim: int, hidden: Sequence[int], output_dim: int = 1,
                 gate_hidden: int = 64, dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        self.layers = nn.ModuleList()
        self.gates = nn.ModuleList()
        width = input_dim
        for h in hidden:
            self.layers.append(MLP(width, (h,), dropout=dropout, batch_norm=batch_norm))
            self.gates.append(LHUCGate(gate_input_dim, h, gate_hidden))
            width = h
        self.out = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor, gate_input: torch.Tensor) -> torch.Tensor:
        for layer, gate in zip(self.layers, self.gates, strict=True):
            x = layer(x) * gate(gate_input)
        return self.out(x)


__all__ = ["GatedMLP", "LHUCGate"]
