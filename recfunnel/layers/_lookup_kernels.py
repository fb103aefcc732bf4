"""numba kernels behind :mod:`recfunnel.layers.fused_lookup` (imported on first use: numba's import
costs a fifth of a second, and models on other devices never need it).

One pass over the batch's rows does, per row, what a dozen ATen ops do over the
whole batch: gather each sparse field's row from the fused table, average each
bag's non-padding rows, sum the first-order column, and optionally the FM
interaction ``0.5 * (||sum_f v_f||^2 - sum_f ||v_f||^2)``. The backward pass
scatters the gradient into the tables' gradients in the same order. Both are
serial and deterministic; float32 accumulators throughout.

Ids are checked against their field's vocabulary inside the kernel (the loops
run without bounds checks): a kernel returns 0, or 1 + the first bad row.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "fastmath": True, "boundscheck": False, "nogil": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def lookup_forward(ids, offsets, vocab, table, bag_ids, bag_starts, bag_offsets, bag_vocab, bag_table,
                   dim, with_fm, out, first, total, inv):  # pragma: no cover - compiled
    n, s = ids.shape
    n_bags = len(bag_starts) - 1
    n_fields = s + n_bags
    has_first = table.shape[1] > dim
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for i in range(n):
        acc = zero
        for f in range(s):
            v = ids[i, f]
            if v < 0 or v >= vocab[f]:
                return 1 + i
            r = v + offsets[f]
            for k in range(dim):
                out[i, f, k] = table[r, k]
            if has_first:
                acc += table[r, dim]
        for j in range(n_bags):
            c0, c1 = bag_starts[j], bag_starts[j + 1]
            count = zero
            for c in range(c0, c1):
                v = bag_ids[i, c]
                if v < 0 or v >= bag_vocab[j]:
                    return 1 + i
                if v > 0:
                    count += one
            w = one / count if count > zero else zero
            inv[i, j] = w
            for k in range(dim):
                out[i, s + j, k] = zero
            for c in range(c0, c1):
                v = bag_ids[i, c]
                if v > 0:
                    r = v + bag_offsets[j]
                    for k in range(dim):
                        out[i, s + j, k] += bag_table[r, k] * w
                    if has_first:
                        acc += bag_table[r, dim] * w
        if with_fm:
            for k in range(dim):
                total[i, k] = zero
            squares = zero
            for f in range(n_fields):
                for k in range(dim):
                    x = out[i, f, k]
                    total[i, k] += x
                    squares += x * x
            square_of_sum = zero
            for k in range(dim):
                square_of_sum += total[i, k] * total[i, k]
            acc += np.float32(0.5) * (square_of_sum - squares)
        first[i] = acc
    return 0


@numba.njit(**_JIT)
def lookup_backward(ids, offsets, bag_ids, bag_starts, bag_offsets, dim, with_fm, emb, total, inv,
                    grad_emb, grad_first, grad_table, grad_bag_table):  # pragma: no cover - compiled
    n, s = ids.shape
    n_bags = len(bag_starts) - 1
    has_first = grad_table.shape[1] > dim
    for i in range(n):
        g = grad_first[i]
        for f in range(s):
            r = ids[i, f] + offsets[f]
            if with_fm:  # d FM / d v_f = sum_f' v_f' - v_f
                for k in range(dim):
                    grad_table[r, k] += grad_emb[i, f, k] + g * (total[i, k] - emb[i, f, k])
            else:
                for k in range(dim):
                    grad_table[r, k] += grad_emb[i, f, k]
            if has_first:
                grad_table[r, dim] += g
        for j in range(n_bags):
            w = inv[i, j]
            for c in range(bag_starts[j], bag_starts[j + 1]):
                v = bag_ids[i, c]
                if v > 0:
                    r = v + bag_offsets[j]
                    if with_fm:
                        for k in range(dim):
                            grad_bag_table[r, k] += (grad_emb[i, s + j, k] + g * (total[i, k] - emb[i, s + j, k])) * w
                    else:
                        for k in range(dim):
                            grad_bag_table[r, k] += grad_emb[i, s + j, k] * w
                    if has_first:
                        grad_bag_table[r, dim] += g * w
    return 0
