"""The multi-layer perceptron every deep CTR model ends with."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class BlockLinear(nn.Module):
    """A linear layer over the concatenation of several input blocks, without building the concatenation.

    ``y = b + sum_k x_k W_k`` is ``Linear(cat(x_1, ..., x_K))`` with the weight cut
    into one slice per block, initialised as ``nn.Linear`` would initialise the
    whole (uniform in +-1/sqrt(total width)). Skipping the concatenation saves a copy forward and
    backward, and autograd then computes no input gradient for blocks that need
    none: dense feature columns are a fifth of DeepFM's first-layer input, so its
    largest backward matmul shrinks by as much.

    The weights are stored input-major, ``(input_dims[k], output_dim)`` (as JAX's and
    Keras's dense kernels are), so every product runs on contiguous operands: the
    weight gradient ``x_k^T g`` lands in the parameter's own layout, where the
    transposed layout of ``nn.Linear`` makes autograd compute it as ``(g^T x_k)^T``,
    about twice as slow on CPU for a narrow block such as 29 dense columns.

    Args:
        input_dims: width of each block, in the order the blocks are passed.
        output_dim: width of the output.
    """

    def __init__(self, input_dims: Sequence[int], output_dim: int):
        super().__init__()
        if not input_dims or any(d < 0 for d in input_dims):
            raise ValueError(f"input_dims must be non-negative widths, got {list(input_dims)}")
        self.input_dims = tuple(int(d) for d in input_dims)
        bound = 1.0 / math.sqrt(max(sum(self.input_dims), 1))
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(d, output_dim).uniform_(-bound, bound)) for d in self.input_dims)
        self.bias = nn.Parameter(torch.empty(output_dim).uniform_(-bound, bound))

    def forward(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, output_dim) from blocks of shapes (N, input_dims[k])."""
        if len(blocks) != len(self.input_dims):
            raise ValueError(f"expected {len(self.input_dims)} input blocks, got {len(blocks)}")
        out = None
        for x, w in zip(blocks, self.weights, strict=True):
            if w.shape[0] == 0:
                continue
            # the first product takes the bias; the others add into its result in place (addmm's
            # backward never reads its output), which saves an (N, output_dim) copy per block
            if out is None:
                out = torch.addmm(self.bias, x, w)
            elif torch.is_autocast_enabled("cpu"):  # autocast has no in-place addmm_
                out = torch.addmm(out, x, w)
            else:
                out = out.addmm_(x, w)
        if out is None:  # every block empty: the bias alone, as a fresh tensor
            out = self.bias.expand(len(blocks[0]), -1).contiguous()
        return out


class MLP(nn.Module):
    """Linear -> (BatchNorm) -> activation -> dropout, repeated; ``output_dim`` adds a last plain Linear.

    Args:
        input_dim: width of the input, or the widths of several input blocks whose
            concatenation is the input (the first layer is then a :class:`BlockLinear`
            and :meth:`forward` takes the blocks, unconcatenated).
        hidden: widths of the hidden layers (may be empty).
        output_dim: width of an extra final linear layer without activation (None: no such layer).
        dropout: dropout after each hidden activation.
        batch_norm: batch normalisation before each activation.
        activation: ``relu``, ``prelu``, ``dice`` (DIN's data-adaptive activation) or ``sigmoid``.
    """

    def __init__(self, input_dim: int | Sequence[int], hidden: Sequence[int], output_dim: int | None = None,
                 dropout: float = 0.0, batch_norm: bool = False, activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        blocks = None if isinstance(input_dim, int) else tuple(input_dim)
        width = input_dim if blocks is None else sum(blocks)
        for h in hidden:
            layers.append(nn.Linear(width, h) if blocks is None or layers else BlockLinear(blocks, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            # in place: neither Linear's nor BatchNorm's backward needs the activation's input
            layers.append(make_activation(activation, h, inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim) if blocks is None or layers else BlockLinear(blocks, output_dim))
            width = output_dim
        self.has_output_layer = output_dim is not None
        if blocks is not None and not layers:
            raise ValueError("an MLP over input blocks needs at least one layer")
        self.net = nn.Sequential(*layers)
        self.input_blocks = blocks
        self.output_dim = width

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, output_dim) from (N, input_dim), or from the 2-d input blocks when built with block widths."""
        if self.input_blocks is not None:
            if isinstance(x, torch.Tensor):
                raise TypeError("this MLP was built over input blocks: pass the blocks, not one tensor")
            return self._run(self.net[0](x), 1)
        if x.dim() == 2:
            return self._run(x, 0)
        # (..., input_dim) inputs: flatten the leading dims (BatchNorm1d wants 2-d)
        shape = x.shape[:-1]
        return self._run(x.reshape(-1, x.shape[-1]), 0).reshape(*shape, self.output_dim)

    def _run(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The layers from ``start`` on; under CPU autocast a final output layer runs in float32."""
        if not self.has_output_layer or not torch.is_autocast_enabled("cpu") or start == len(self.net):
            return self.net[start:](x)
        x = self.net[start:-1](x)
        # the logit layer: a narrow product that bfloat16 only slows down, and whose rounding
        # would quantise the scores
        with torch.autocast("cpu", enabled=False):
            return self.net[-1](x.float())


class Dice(nn.Module):
    """DIN's Dice activation: a PReLU whose switch point follows the batch statistics."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.bn(x))
        return p * x + (1 - p) * self.alpha * x


def make_activation(name: str, dim: int, inplace: bool = False) -> nn.Module:
    """The activation called ``name`` for ``dim`` features (``inplace`` applies to ReLU only)."""
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "prelu":
        return nn.PReLU(dim)
    if name == "dice":
        return Dice(dim)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}; use relu, prelu, dice or sigmoid")


__all__ = ["BlockLinear", "Dice", "MLP", "make_activation"]
