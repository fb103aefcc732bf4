"""The embedding side of a CTR model as one autograd node on CPU: lookup, bag means, first order, FM.

At the batch sizes CTR models train with (hundreds of rows), every ATen op over a
(rows x fields x width) tensor costs 5-30 us whatever it computes, and the
embedding side of DeepFM is about twenty of them forward and backward (gather,
slices, bag pooling, the first-order sum, FM's sums and squares, the
scatter-add of the table gradient). :class:`FusedFieldLookup` does the same
arithmetic in one serial pass per direction (numba kernels in
:mod:`recfunnel.layers._lookup_kernels`): on ML-100K's DeepFM at batch 256 that
is about 0.1 ms per step instead of 0.4. It is the role FBGEMM's table-batched
embeddings play in torchrec, for the CPU and for small batches: FBGEMM's own CPU
kernels (``fbgemm-gpu-cpu`` 1.8.0, the newest that loads with torch 2.13) have no
Adam, and their SGD lookup and update took longer than the ATen path here
(BENCHMARKS.md).

:func:`can_fuse` says when it applies (float32 tables on CPU, numba importable);
:class:`recfunnel.layers.embedding.EmbeddingCollection` falls back to its ATen
path otherwise, and the tests hold the two paths to the same values and gradients.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch


@functools.cache
def _kernels():
    """The compiled kernels, or None when they cannot be loaded (the ATen path is used then).

    numba is a dependency, so this fails only on a broken install, or when numba finds
    no writable place for its cache (read-only package directory and home): training
    then runs on the ATen path, with a warning that says why.
    """
    try:
        from recfunnel.layers import _lookup_kernels
    except Exception as e:  # noqa: BLE001 - any failure to load means: use the ATen path
        warnings.warn(f"recfunnel's fused embedding kernels are unavailable ({type(e).__name__}: {e}); "
                      "using the slower ATen lookup", RuntimeWarning, stacklevel=2)
        return None
    return _lookup_kernels


@functools.cache
def warm_up() -> None:
    """Load (or on a machine's first run, compile) the kernels now, once per process.

    numba loads cached machine code on a kernel's first call, about 0.4 s (1.3 s to
    compile when no cache exists yet). Collections call this when they are built, so
    the cost lands with model construction, not in the first training step's timing.
    """
    kernels = _kernels()
    if kernels is None:  # pragma: no cover
        return
    i64, f32 = np.zeros((1, 1), np.int64), np.zeros((1, 2), np.float32)
    ones = np.ones(1, np.int64)
    emb, vec = np.zeros((1, 2, 1), np.float32), np.zeros(1, np.float32)
    starts = np.array([0, 1], np.int64)
    for with_fm in (False, True):
        kernels.lookup_forward(i64, ones - 1, ones, f32, i64, starts, ones - 1, ones, f32, 1, with_fm,
                               emb, vec, f32[:, :1].copy(), f32[:, :1].copy())
        kernels.lookup_backward(i64, ones - 1, i64, starts, ones - 1, 1, with_fm, emb, f32[:, :1].copy(),
                                f32[:, :1].copy(), emb.copy(), vec.copy(), f32.copy(), f32.copy())


def can_fuse(table: torch.Tensor) -> bool:
    """True when :class:`FusedFieldLookup` can serve a lookup from ``table`` (float32 on CPU)."""
    return table.device.type == "cpu" and table.dtype == torch.float32 and _kernels() is not None


class LookupPlan:
    """The static side of a collection's fused lookup: field offsets and vocabularies as NumPy arrays.

    Built once per collection (and again if its buffers move), so a step passes the
    kernels ready arrays instead of converting the same small tensors every call.
    """

    def __init__(self, offsets: torch.Tensor, vocab: torch.Tensor, bag_offsets: torch.Tensor,
                 bag_vocab: torch.Tensor, dim: int):
        self.key = tuple(t.data_ptr() for t in (offsets, vocab, bag_offsets, bag_vocab))
        self.offsets, self.vocab = offsets.numpy(), vocab.numpy()
        self.bag_offsets, self.bag_vocab = bag_offsets.numpy(), bag_vocab.numpy()
        self.dim = dim
        self._bag_starts: dict[tuple[int, ...], np.ndarray] = {}

    def bag_starts(self, widths: tuple[int, ...]) -> np.ndarray:
        """Start column of every bag in the side-by-side bag ids, and their end."""
        starts = self._bag_starts.get(widths)
        if starts is None:
            starts = self._bag_starts[widths] = np.cumsum((0,) + widths, dtype=np.int64)
        return starts


class FusedFieldLookup(torch.autograd.Function):
    """(N, S+B, d) field embeddings and (N,) first-order sum (+ FM term) of sparse ids and bags.

    Inputs: the two tables (``bag_table`` may have 0 rows), ``ids`` (N, S) raw int64
    field ids, ``bag_ids`` (N, L) every bag's columns side by side (bag ``j`` at columns
    ``bag_starts[j]:bag_starts[j + 1]``, id 0 is padding), the collection's
    :class:`LookupPlan` and ``with_fm``. A table with ``plan.dim + 1`` columns holds
    first-order weights in its last one; the second output is 0 without first-order
    weights or FM.

    Raises:
        IndexError: an id outside its field's vocabulary (checked in the kernel).
    """

    @staticmethod
    def forward(ctx, table, bag_table, ids, bag_ids, plan: LookupPlan, bag_starts: np.ndarray, with_fm: bool):
        n, s = ids.shape
        n_bags, dim = len(bag_starts) - 1, plan.dim
        emb = torch.empty(n, s + n_bags, dim)
        first = torch.empty(n)
        # the backward pass's inputs that are neither inputs nor outputs: NumPy arrays on ctx
        total = np.empty((n, dim if with_fm else 0), np.float32)
        inv = np.empty((n, n_bags), np.float32)
        status = _kernels().lookup_forward(
            ids.numpy(), plan.offsets, plan.vocab, table.detach().numpy(), bag_ids.numpy(), bag_starts,
            plan.bag_offsets, plan.bag_vocab, bag_table.detach().numpy(), dim, with_fm, emb.numpy(),
            first.numpy(), total, inv)
        if status:
            row = status - 1
            raise IndexError(f"row {row} has an id outside its field's vocabulary: sparse ids "
                             f"{ids[row].tolist()} (vocabularies {plan.vocab.tolist()}), bag ids "
                             f"{bag_ids[row].tolist()} (vocabularies {plan.bag_vocab.tolist()})")
        ctx.save_for_backward(ids, bag_ids, emb)
        ctx.total, ctx.inv = total, inv
        ctx.plan, ctx.bag_starts, ctx.with_fm = plan, bag_starts, with_fm
        ctx.shapes = (table.shape, bag_table.shape)
        return emb, first

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_emb, grad_first):
        ids, bag_ids, emb = ctx.saved_tensors
        plan = ctx.plan
        table_shape, bag_shape = ctx.shapes
        grad_table = torch.zeros(table_shape)
        grad_bag_table = torch.zeros(bag_shape)
        grad_emb = torch.zeros_like(emb) if grad_emb is None else grad_emb.contiguous()
        grad_first = torch.zeros(len(ids)) if grad_first is None else grad_first.contiguous()
        _kernels().lookup_backward(
            ids.numpy(), plan.offsets, bag_ids.numpy(), ctx.bag_starts, plan.bag_offsets, plan.dim, ctx.with_fm,
            emb.numpy(), ctx.total, ctx.inv, grad_emb.numpy(), grad_first.numpy(), grad_table.numpy(),
            grad_bag_table.numpy())
        return grad_table, grad_bag_table, None, None, None, None, None


__all__ = ["FusedFieldLookup", "LookupPlan", "can_fuse", "warm_up"]
