"""Attention blocks of the behaviour-sequence rankers (DIN, DIEN, BST, DSIN, SIM).

Shapes: ``N`` rows, ``L`` behaviours, ``D`` behaviour width. A behaviour mask is
(N, L) bool, true at real behaviours; every block here ignores what sits at
masked slots (the output does not change when padded keys change), and a row
with no behaviour at all gives a zero vector rather than NaN, so a user
without history can still be scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recfunnel.layers.mlp import MLP


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask``; all-masked slices give zeros, not NaN.

    Examples:
        >>> masked_softmax(torch.tensor([[1.0, 1.0, 5.0]]), torch.tensor([[True, True, False]]))
        tensor([[0.5000, 0.5000, 0.0000]])
        >>> masked_softmax(torch.tensor([[1.0, 2.0]]), torch.tensor([[False, False]]))
        tensor([[0., 0.]])
    """
    # the smallest finite value, not -inf: an all-masked slice then softmaxes to a uniform
    # row (not NaN) that the final multiplication by the mask turns into zeros
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim) * mask.to(scores.dtype)


class ActivationUnit(nn.Module):
    """DIN's local activation unit: the relevance of each behaviour to the target.

    score_i = MLP([k_i, q, k_i - q, k_i * q]) (Zhou et al., 2018, Fig. 2; the
    difference and product make the similarity easy to learn).

    Args:
        dim: width ``D`` of the keys and the query.
        hidden: hidden widths of the unit's MLP.
        activation: ``dice`` (the paper's), ``prelu``, ``relu`` or ``sigmoid``.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (36,), activation: str = "dice"):
        super().__init__()
        self.mlp = MLP(4 * dim, hidden, 1, activation=activation)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(N, D) query, (N, L, D) keys -> (N, L) unnormalised scores."""
        q = query.unsqueeze(1).expand_as(keys)
        return self.mlp(torch.cat([keys, q, keys - q, keys * q], -1)).squeeze(-1)


class TargetAttention(nn.Module):
    """DIN's attention pooling: v_U = sum_i a(e_i, e_A) * e_i over real behaviours.

    The weights are *not* softmax-normalised by default (DIN §4.3: keeping the
    sum preserves the intensity of the user's interest, i.e. how many relevant
    behaviours there are); ``normalize=True`` softmaxes them over the real behaviours.

    Args:
        dim: width ``D`` of the keys and the query.
        hidden: hidden widths of the activation unit.
        activation: activation of the activation unit.
        normalize: softmax the weights.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (36,), activation: str = "dice",
                 normalize: bool = False):
        super().__init__()
        self.unit = ActivationUnit(dim, hidden, activation)
        self.normalize = normalize

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, D) query, (N, L, D) keys, (N, L) mask -> (N, D) pooled interest."""
        scores = self.unit(query, keys)
        if self.normalize:
            weights = masked_softmax(scores, mask)
        else:
            # zero the weight of padding (not the key: a Dice/PReLU unit maps a zero key to a non-zero score)
            weights = scores * mask.to(scores.dtype)
        # where() rather than a product, so that non-finite values at padded keys cannot leak in
        keys = torch.where(mask.unsqueeze(-1), keys, torch.zeros_like(keys))
        return torch.einsum("nl,nld->nd", weights, keys)


class BilinearTargetAttention(nn.Module):
    """Softmax attention with a bilinear score: a_k = softmax_k(I_k W X), U = sum_k a_k I_k.

    DSIN's session-interest activation layer (Feng et al., 2019, eq. 9-10); keys
    and query may have different widths.

    Args:
        key_dim: width of the keys.
        query_dim: width of the query.
    """

    def __init__(self, key_dim: int, query_dim: int):
        super().__init__()
        self.weight = nn.Linear(query_dim, key_dim, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, Dq) query, (N, K, Dk) keys, (N, K) mask -> (N, Dk)."""
        keys = torch.where(mask.unsqueeze(-1), keys, torch.zeros_like(keys))
        scores = torch.einsum("nkd,nd->nk", keys, self.weight(query))
        return torch.einsum("nk,nkd->nd", masked_softmax(scores, mask), keys)


class MultiHeadTargetAttention(nn.Module):
    """Multi-head attention with the target as the single query (SIM's exact search unit).

    SIM §4.2: head_h = sum_i softmax_i(<W_b^h z_i, W_a^h e_A> / sqrt(d_h)) z_i and the
    output is [head_1, ..., head_H]: each head scores the behaviours against the
    target in its own subspace, and pools the behaviours themselves (no value
    projection), as DIN does, so the pooled vector stays in the embedding space.

    Args:
        query_dim: width of the query.
        key_dim: width of the keys (which are also the values).
        heads: number of heads ``H``.
        head_dim: width of each head's scoring subspace (default ``key_dim``).
    """

    def __init__(self, query_dim: int, key_dim: int, heads: int = 2, head_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim or key_dim
        self.query = nn.Linear(query_dim, heads * self.head_dim, bias=False)
        self.key = nn.Linear(key_dim, heads * self.head_dim, bias=False)
        self.output_dim = heads * key_dim

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, Dq) query, (N, L, Dk) keys, (N, L) mask -> (N, H * Dk); zero for rows without keys."""
        n, length, _ = keys.shape
        keys = torch.where(mask.unsqueeze(-1), keys, torch.zeros_like(keys))
        q = self.query(query).view(n, self.heads, self.head_dim)
        k = self.key(keys).view(n, length, self.heads, self.head_dim)
        scores = torch.einsum("nhd,nlhd->nhl", q, k) / math.sqrt(self.head_dim)
        weights = masked_softmax(scores, mask.unsqueeze(1))
        return torch.einsum("nhl,nld->nhd", weights, keys).reshape(n, -1)


class TransformerBlock(nn.Module):
    """Post-norm transformer encoder block over a masked sequence (BST §3.2, DSIN §4.2).

    S = LayerNorm(x + Dropout(MultiHead(x, x, x))); F = LayerNorm(S + Dropout(FFN(S))),
    FFN(S) = W_2 LeakyReLU(W_1 S) as in BST. Padded positions are neither attended
    to nor returned (their output is zero).

    Args:
        dim: model width ``D`` (divisible by ``heads``).
        heads: attention heads.
        ffn_dim: hidden width of the feed-forward net (default ``4 * dim``).
        dropout: dropout after attention and the feed-forward net.
    """

    def __init__(self, dim: int, heads: int = 2, ffn_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not divisible by heads={heads}")
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim or 4 * dim), nn.LeakyReLU(),
                                 nn.Linear(ffn_dim or 4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, D) inputs, (N, L) mask -> (N, L, D), zero at padded positions."""
        x = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
        # a sequence with no real position would softmax over nothing (NaN): let it attend to
        # its (zeroed) padding instead; its outputs are zeroed below anyway
        key_padding = ~mask & mask.any(1, keepdim=True)
        attended, _ = self.attention(x, x, x, key_padding_mask=key_padding, need_weights=False)
        x = self.norm1(x + self.dropout(attended))
        x = self.norm2(x + self.dropout(self.ffn(x)))
        return torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))


def time_gap_buckets(age: torch.Tensor, n_buckets: int, unit: float = 60.0) -> torch.Tensor:
    """Log-scale buckets of a time gap: 1 + floor(log2(1 + age / unit)), capped at ``n_buckets - 1``.

    Bucket 0 is left free for "no gap" (the target item, padding), so a recent
    behaviour and the target are told apart.

    Examples:
        >>> time_gap_buckets(torch.tensor([0.0, 30.0, 60.0, 3600.0, 1e9]), n_buckets=10)
        tensor([1, 1, 2, 6, 9])
    """
    bucket = 1 + torch.floor(torch.log2(1.0 + age.clamp_min(0.0) / unit)).long()
    return bucket.clamp(1, n_buckets - 1)


class TimeGapEmbedding(nn.Module):
    """(N, L) seconds -> (N, L, D) learned embedding of the log-bucketised gap (SIM §4.2, BST's position).

    Args:
        n_buckets: buckets including the reserved bucket 0.
        dim: embedding width.
        unit: seconds of the first bucket boundary (buckets double from there).
    """

    def __init__(self, n_buckets: int, dim: int, unit: float = 60.0):
        super().__init__()
        self.n_buckets = n_buckets
        self.unit = unit
        self.table = nn.Embedding(n_buckets, dim)
        nn.init.normal_(self.table.weight, std=1e-2)

    def forward(self, age: torch.Tensor) -> torch.Tensor:
        return self.table(time_gap_buckets(age, self.n_buckets, self.unit))


class PositionalEmbedding(nn.Module):
    """Learned embedding of a position index 0..max_len-1 (BST's index positions, DSIN's bias terms)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(max_len, dim) * 1e-2)

    def forward(self, length: int) -> torch.Tensor:
        """(length, D) embeddings of positions 0..length-1."""
        return self.table[:length]


__all__ = ["ActivationUnit", "BilinearTargetAttention", "MultiHeadTargetAttention", "PositionalEmbedding",
           "TargetAttention", "TimeGapEmbedding", "TransformerBlock", "masked_softmax", "time_gap_buckets"]
