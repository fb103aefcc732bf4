"""Feature-interaction layers over (N, F, d) field embeddings (or (N, D) stacked inputs).

Pairwise layers enumerate the F(F-1)/2 field pairs i < j with one index tensor
(``torch.triu_indices``) instead of a Python loop over pairs, so every layer is
a handful of batched tensor ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn


def pair_indices(n_fields: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) int64 of the P = F(F-1)/2 field pairs i < j, in row-major order."""
    idx = torch.triu_indices(n_fields, n_fields, offset=1, device=device)
    return idx[0], idx[1]


class _FMInteraction(torch.autograd.Function):
    """The FM identity with its gradient written out: d/dv_i = g * (sum_j v_j - v_i).

    Autograd of the composed form records seven ops and replays a dozen in the
    backward pass; this is three ops each way (about a third of DeepFM's FM cost
    at batch 256 on CPU). Not twice differentiable, which training never needs.
    """

    @staticmethod
    def forward(ctx, emb: torch.Tensor, reduce_sum: bool) -> torch.Tensor:
        total = emb.sum(1)
        out = (total * total - (emb * emb).sum(1)).mul_(0.5)
        ctx.save_for_backward(emb, total)
        ctx.reduce_sum = reduce_sum
        return out.sum(-1) if reduce_sum else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        emb, total = ctx.saved_tensors
        scale = grad.unsqueeze(-1) if ctx.reduce_sum else grad  # (N, 1) or (N, d)
        return (total.unsqueeze(1) - emb).mul_(scale.unsqueeze(1)), None


class FactorizationMachine(nn.Module):
    """Second-order FM term: sum_{i<j} <v_i, v_j> = 0.5 * sum_k ((sum_i v_ik)^2 - sum_i v_ik^2).

    ``reduce_sum=False`` returns the (N, d) bi-interaction vector (NFM's Bi-Interaction pooling).
    """

    def __init__(self, reduce_sum: bool = True):
        super().__init__()
        self.reduce_sum = reduce_sum

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, F, d) -> (N,) with ``reduce_sum``, else (N, d)."""
        return _FMInteraction.apply(emb, self.reduce_sum)


class BiInteraction(FactorizationMachine):
    """NFM's Bi-Interaction pooling: (N, F, d) -> (N, d), f_BI = sum_{i<j} v_i ⊙ v_j.

    The FM identity computes it in O(F d) instead of O(F^2 d).
    """

    def __init__(self) -> None:
        super().__init__(reduce_sum=False)


class CrossNetwork(nn.Module):
    """DCN (v1) cross network: x_{l+1} = x_0 x_l^T w_l + b_l + x_l, for L layers.

    ``x_0 x_l^T w_l`` is computed as ``x_0 * (x_l · w_l)`` (a scalar per row), so a
    layer costs O(D) rather than forming the D x D outer product.
    """

    def __init__(self, input_dim: int, n_layers: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_layers, input_dim))
        self.bias = nn.Parameter(torch.zeros(n_layers, input_dim))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D)."""
        x = x0
        for w, b in zip(self.weight, self.bias, strict=True):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return x


class CrossNetworkV2(nn.Module):
    """DCN-V2 cross network: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l, for L layers.

    With ``low_rank = r > 0`` each layer is the paper's mixture of K low-rank experts
    (DCN-Mix): x_{l+1} = sum_k G_k(x_l) E_k(x_l) + x_l with
    E_k(x_l) = x_0 ⊙ (U_k g(C_k g(V_k^T x_l)) + b_l), g = tanh and G = softmax over
    the experts of a linear gate on x_l. All experts of a layer run as one einsum.

    Args:
        input_dim: D, the width of x_0.
        n_layers: L.
        low_rank: r; 0 = full D x D matrices.
        num_experts: K (used when ``low_rank > 0``).
    """

    def __init__(self, input_dim: int, n_layers: int, low_rank: int = 0, num_experts: int = 1):
        super().__init__()
        self.low_rank = low_rank
        self.bias = nn.Parameter(torch.zeros(n_layers, input_dim))
        if low_rank <= 0:
            self.weight = nn.Parameter(torch.empty(n_layers, input_dim, input_dim))
            for w in self.weight:
                nn.init.xavier_normal_(w)
            return
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.u = nn.Parameter(torch.empty(n_layers, num_experts, input_dim, low_rank))
        self.v = nn.Parameter(torch.empty(n_layers, num_experts, input_dim, low_rank))
        self.c = nn.Parameter(torch.empty(n_layers, num_experts, low_rank, low_rank))
        for p in (self.u, self.v, self.c):
            for w in p.flatten(0, 1):
                nn.init.xavier_normal_(w)
        self.gate = nn.Parameter(torch.zeros(n_layers, input_dim, num_experts))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D)."""
        x = x0
        if self.low_rank <= 0:
            for w, b in zip(self.weight, self.bias, strict=True):
                x = x0 * (x @ w.T + b) + x
            return x
        for layer, b in enumerate(self.bias):
            h = torch.tanh(torch.einsum("nd,kdr->nkr", x, self.v[layer]))
            h = torch.tanh(torch.einsum("nkr,ksr->nks", h, self.c[layer]))
            experts = x0.unsqueeze(1) * (torch.einsum("nkr,kdr->nkd", h, self.u[layer]) + b)  # (N, K, D)
            g = torch.softmax(x @ self.gate[layer], dim=-1)  # (N, K)
            x = (g.unsqueeze(-1) * experts).sum(1) + x
        return x


class CIN(nn.Module):
    """xDeepFM's Compressed Interaction Network over (N, m, d) field embeddings.

    X^k_{h,*} = sum_{i<H_{k-1}} sum_{j<m} W^{k,h}_{ij} (X^{k-1}_{i,*} ⊙ X^0_{j,*}): the
    (H_{k-1} x m) vector-wise products of a layer, compressed by a 1 x 1 convolution to
    H_k feature maps. Each layer's maps are sum-pooled over d and concatenated.

    Args:
        n_fields: m.
        layer_sizes: H_1..H_T.
        split_half: as in the authors' code, send half of each hidden layer's maps to
            the output and half to the next layer (halves the cost; the last layer
            sends all to the output). Sizes of hidden layers must then be even.
        activation: ``identity`` (the paper) or ``relu``, applied to each layer's maps.
    """

    def __init__(self, n_fields: int, layer_sizes: Sequence[int], split_half: bool = True,
                 activation: Literal["identity", "relu"] = "identity"):
        super().__init__()
        if activation not in ("identity", "relu"):
            raise ValueError(f"unknown CIN activation {activation!r}; use identity or relu")
        self.activation = activation
        self.split_half = split_half
        self.convs = nn.ModuleList()
        prev, out_dim = n_fields, 0
        for k, h in enumerate(layer_sizes):
            self.convs.append(nn.Conv1d(prev * n_fields, h, kernel_size=1, bias=False))  # no bias in the paper's formula
            last = k == len(layer_sizes) - 1
            if split_half and not last:
                if h % 2:
                    raise ValueError(f"CIN with split_half needs even hidden layer sizes, got {h}")
                prev = h // 2
                out_dim += h // 2
            else:
                prev = h
                out_dim += h
        self.output_dim = out_dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """(N, m, d) -> (N, sum of the output maps)."""
        n, m, d = x0.shape
        x, pooled = x0, []
        for k, conv in enumerate(self.convs):
            z = (x.unsqueeze(2) * x0.unsqueeze(1)).reshape(n, -1, d)  # (N, H_{k-1} * m, d)
            x = conv(z)
            if self.activation == "relu":
                x = torch.relu(x)
            if self.split_half and k < len(self.convs) - 1:
                x, out = torch.split(x, x.shape[1] // 2, dim=1)
            else:
                out = x
            pooled.append(out.sum(-1))
        return torch.cat(pooled, 1)


class InnerProduct(nn.Module):
    """IPNN's pairwise inner products: (N, F, d) -> (N, P), p_ij = <f_i, f_j> for i < j."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        rows, cols = pair_indices(emb.shape[1], emb.device)
        return (emb[:, rows] * emb[:, cols]).sum(-1)


class OuterProduct(nn.Module):
    """OPNN's product layer in the paper's kernel form with sum-pooled embeddings.

    The outer products p_ij = f_i f_j^T are superposed, p = f_Σ f_Σ^T with
    f_Σ = sum_i f_i, so unit n of the product layer is
    l_p^n = <W_p^n, p> = f_Σ^T W_p^n f_Σ (W_p^n a d x d kernel): O(d^2) per unit
    instead of O(F^2 d^2).
    """

    def __init__(self, dim: int, units: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(units, dim, dim))
        nn.init.xavier_uniform_(self.kernel)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, F, d) -> (N, units)."""
        s = emb.sum(1)
        return torch.einsum("ni,uij,nj->nu", s, self.kernel, s)


class AttentionalPooling(nn.Module):
    """AFM's attention-based pooling of the pairwise interactions.

    p_ij = v_i ⊙ v_j (i < j), a'_ij = h^T ReLU(W p_ij + b), a = softmax over the pairs,
    output sum_ij a_ij p_ij: (N, F, d) -> (N, d).
    """

    def __init__(self, dim: int, attention_dim: int, dropout: float = 0.0):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, attention_dim), nn.ReLU(),
                                       nn.Linear(attention_dim, 1, bias=False))
        self.dropout = nn.Dropout(dropout)

    def forward(self, emb: torch.Tensor, return_weights: bool = False):
        rows, cols = pair_indices(emb.shape[1], emb.device)
        pairs = emb[:, rows] * emb[:, cols]  # (N, P, d)
        weights = torch.softmax(self.attention(pairs), dim=1)  # (N, P, 1)
        out = (self.dropout(weights) * pairs).sum(1)
        return (out, weights.squeeze(-1)) if return_weights else out


class SENet(nn.Module):
    """FiBiNET's squeeze-excitation re-weighting of the fields.

    z_f = mean_k e_fk (squeeze), A = ReLU(W_2 ReLU(W_1 z)) (excitation, F -> F/r -> F),
    output v_f = a_f e_f. The weights are >= 0 and unbounded above (ReLU, as in FiBiNET,
    not the sigmoid of the image SENet), so a field can also be amplified.
    """

    def __init__(self, n_fields: int, reduction_ratio: int = 3):
        super().__init__()
        hidden = max(1, n_fields // max(reduction_ratio, 1))
        self.excitation = nn.Sequential(nn.Linear(n_fields, hidden, bias=False), nn.ReLU(),
                                        nn.Linear(hidden, n_fields, bias=False), nn.ReLU())

    def weights(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, F) field weights a."""
        return self.excitation(emb.mean(-1))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, F, d) -> (N, F, d) re-weighted embeddings."""
        return emb * self.weights(emb).unsqueeze(-1)


BilinearType = Literal["field_all", "field_each", "field_interaction"]


class BilinearInteraction(nn.Module):
    """FiBiNET's bilinear interaction: p_ij = (v_i · W) ⊙ v_j for every pair i < j.

    ``field_all``: one W (d x d) for all pairs; ``field_each``: one W_i per field i (the
    left field of the pair); ``field_interaction``: one W_ij per pair.
    (N, F, d) -> (N, P, d).
    """

    def __init__(self, n_fields: int, dim: int, kind: BilinearType = "field_interaction"):
        super().__init__()
        n_weights = {"field_all": 1, "field_each": max(n_fields - 1, 1),
                     "field_interaction": n_fields * (n_fields - 1) // 2}
        if kind not in n_weights:
            raise ValueError(f"unknown bilinear type {kind!r}; use {sorted(n_weights)}")
        self.kind = kind
        self.weight = nn.Parameter(torch.empty(n_weights[kind], dim, dim))
        for w in self.weight:
            nn.init.xavier_normal_(w)
        rows, cols = pair_indices(n_fields)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        left, right = emb[:, self.rows], emb[:, self.cols]  # (N, P, d)
        if self.kind == "field_all":
            return (left @ self.weight[0]) * right
        if self.kind == "field_each":
            # one W per left field: multiply each field once, then pick the pairs' left sides
            return torch.einsum("nfd,fde->nfe", emb[:, : self.weight.shape[0]], self.weight)[:, self.rows] * right
        return torch.einsum("npd,pde->npe", left, self.weight) * right


__all__ = ["AttentionalPooling", "BiInteraction", "BilinearInteraction", "CIN", "CrossNetwork",
           "CrossNetworkV2", "FactorizationMachine", "InnerProduct", "OuterProduct", "SENet",
           "pair_indices"]
