"""Merging retrieval channels: per-channel quotas, dedup, reciprocal-rank fusion,
provenance (``channel_scores``) and a fallback that fills short rows.

Everything is vectorised over users; no Python loop runs per user or per item.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recfunnel.stages.recall.sparse import exclusion_mask, keep_top_k_per_row, sparse_top_k  # noqa: F401 (re-exported)
from recfunnel.types import FALLBACK, PAD, Candidates  # FALLBACK: re-exported here for its users

#: RRF constant of Cormack, Clarke & Buettcher (SIGIR 2009): score = sum_c 1 / (RRF_K + rank_c),
#: rank 1-based. 60 damps the gap between the first ranks so that no single channel dominates.
RRF_K = 60


def merge_candidates(
    channel_candidates: Mapping[str, Candidates],
    quotas: Mapping[str, int],
    k: int,
    *,
    fallback: Candidates | None = None,
    rrf_k: int = RRF_K,
) -> Candidates:
    """Merge retrieval channels into one candidate set by reciprocal-rank fusion.

    Each channel contributes its top ``quotas[name]`` items (all of them when the
    channel has no quota). An item found by several channels appears once, scored
    ``sum_c 1 / (rrf_k + rank_c)`` over the channels that found it (rank 1-based
    within the channel's quota), so a channel's raw score scale never matters.
    Ties go to the item found earliest in channel order (the order of
    ``channel_candidates``), then the better rank.

    Rows left with fewer than ``k`` items are filled from ``fallback`` (e.g.
    popular items), skipping items already there. Filled items are scored
    ``1 / (rrf_k + rank_f) - 1`` (below every channel item, which scores > 0) and
    carry provenance under the channel name ``"fallback"``.

    Args:
        channel_candidates: channel name -> (B, C_c) candidates, sorted by score.
        quotas: channel name -> most items taken from that channel.
        k: size of the merged list.
        fallback: (B, F) or (1, F) candidates used to fill short rows.
        rrf_k: the RRF constant (60 by default, see :data:`RRF_K`).

    Returns:
        (B, <=k) candidates sorted by merged score; ``channel_scores[c]`` holds
        channel c's own score for every merged item, NaN where c did not find it.

    >>> a = Candidates(np.array([[1, 2]]), np.array([[0.9, 0.5]], np.float32))
    >>> b = Candidates(np.array([[2, 3]]), np.array([[7.0, 6.0]], np.float32))
    >>> merged = merge_candidates({"a": a, "b": b}, {"a": 2, "b": 2}, k=3)
    >>> merged.item_index.tolist()
    [[2, 1, 3]]
    >>> merged.channel_scores["a"].tolist()
    [[0.5, 0.8999999761581421, nan]]
    """
    if FALLBACK in channel_candidates:
        raise ValueError(f"'{FALLBACK}' is reserved for the fallback channel's provenance")
    sizes = {len(c) for c in channel_candidates.values()}
    if fallback is not None and not channel_candidates:
        sizes.add(len(fallback))
    if len(sizes) != 1:
        raise ValueError(f"channels disagree on the batch size or none was given: {sorted(sizes)}")
    b = sizes.pop()
    names = list(channel_candidates)

    # every channel's quota side by side: (B, T) blocks, T = sum of quotas
    items, fused, own_score, channel = [np.zeros((b, 0), np.int64)], [np.zeros((b, 0))], [], []
    for name in names:
        cand = channel_candidates[name]
        q = min(quotas.get(name, cand.item_index.shape[1]), cand.item_index.shape[1])
        items.append(cand.item_index[:, :q])
        fused.append(np.broadcast_to(1.0 / (rrf_k + np.arange(1, q + 1)), (b, q)))
        own_score.append(cand.score[:, :q].astype(np.float32))
        channel.append(q)
    items, fused = np.concatenate(items, axis=1), np.concatenate(fused, axis=1)
    t = items.shape[1]
    channel_of_column = np.repeat(np.arange(len(names)), channel)

    # dedup: one group per (row, item); the group lives at its first column (earliest channel)
    flat, starts = _pair_groups(items, items >= 0)
    first = flat[starts]
    merged = np.full(b * t, -np.inf)
    merged[first] = np.add.reduceat(fused.ravel()[flat], starts) if len(flat) else 0.0
    merged = merged.reshape(b, t)
    group_start = np.zeros(len(flat), np.int64)
    group_start[starts] = 1
    group_of = np.cumsum(group_start) - 1
    own = np.full((len(names), b * t), np.nan, np.float32)
    if names:
        own_flat = np.concatenate(own_score, axis=1).ravel()
        own[channel_of_column[flat % t], first[group_of]] = own_flat[flat]
    own = own.reshape(len(names), b, t)

    # best merged score first; ties keep the lower column, i.e. the earliest channel and rank.
    # A full stable sort, not argpartition: RRF ties are common (equal ranks in two channels)
    # and argpartition may drop the lower column of a tie at the k-th place.
    cols = np.argsort(-merged, axis=1, kind="stable")[:, :k]
    rows = np.arange(b)[:, None]
    found = np.isfinite(merged[rows, cols])
    out_item = np.where(found, items[rows, cols], PAD)
    out_score = np.where(found, merged[rows, cols], -np.inf)
    out_own = np.where(found, own[:, rows, cols], np.nan)
    count = found.sum(axis=1)
    width = int(count.max(initial=0))

    if fallback is not None:
        fb_items = np.broadcast_to(fallback.item_index, (b, fallback.item_index.shape[1]))
        fb_own = np.broadcast_to(fallback.score, fb_items.shape).astype(np.float32)
        fb_rank = np.broadcast_to(np.arange(1, fb_items.shape[1] + 1), fb_items.shape)
        # skip what the channels found and repeats within the fallback row itself
        both = np.concatenate([out_item, fb_items], axis=1)
        flat, starts = _pair_groups(both, both >= 0)
        is_first = np.zeros(both.size, bool)
        is_first[flat[starts]] = True
        usable = is_first.reshape(both.shape)[:, out_item.shape[1]:]
        fill_pos = np.cumsum(usable, axis=1) - 1  # position among the row's usable fallback items
        usable &= fill_pos < (k - count)[:, None]
        width = int((count + usable.sum(axis=1)).max(initial=0))
        r, c = np.nonzero(usable)
        slot = count[r] + fill_pos[r, c]
        out_item, out_score, out_own = (
            _widen(out_item, width, PAD), _widen(out_score, width, -np.inf), _widen(out_own, width, np.nan))
        out_item[r, slot] = fb_items[r, c]
        out_score[r, slot] = 1.0 / (rrf_k + fb_rank[r, c]) - 1.0
        fb_channel = np.full((b, width), np.nan, np.float32)
        fb_channel[r, slot] = fb_own[r, c]
    channel_scores = {name: out_own[i, :, :width].astype(np.float32) for i, name in enumerate(names)}
    if fallback is not None:
        channel_scores[FALLBACK] = fb_channel
    return Candidates(out_item[:, :width], out_score[:, :width].astype(np.float32), channel_scores)


def _pair_groups(items: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the masked entries of (B, T) ``items`` by (row, item).

    Returns:
        (flat, starts): flat indices of the masked entries sorted by (row, item, column),
        and the positions in ``flat`` where each group starts (its first column).
    """
    flat = np.flatnonzero(mask.ravel())
    rows, values = flat // max(items.shape[1], 1), items.ravel()[flat]
    # one packed int64 key and a stable sort: the columns of a group stay in order
    span = np.int64(values.max(initial=0) + 1)
    key = rows * span + values
    order = np.argsort(key, kind="stable")
    flat, key = flat[order], key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    return flat, starts


def _widen(a: np.ndarray, width: int, fill: float) -> np.ndarray:
    """``a`` padded with ``fill`` (or cut) to ``width`` columns on its last axis."""
    out = np.full((*a.shape[:-1], width), fill, a.dtype)
    keep = min(width, a.shape[-1])
    out[..., :keep] = a[..., :keep]
    return out


def channel_provenance(candidates: Candidates, channels: list[str] | None = None) -> np.ndarray:
    """Which channels found each candidate, as a bitmask.

    Args:
        candidates: merged candidates whose ``channel_scores`` are NaN where a channel
            did not find the item.
        channels: channel names in bit order; default the order of ``channel_scores``.

    Returns:
        (B, C) int64 with bit ``c`` set when ``channels[c]`` found the item (0 at padding).

    >>> cand = Candidates(np.array([[4, 5]]), np.array([[1.0, 0.5]], np.float32),
    ...                   {"a": np.array([[0.3, np.nan]]), "b": np.array([[0.1, 0.2]])})
    >>> channel_provenance(cand).tolist()
    [[3, 2]]
    """
    names = list(candidates.channel_scores) if channels is None else list(channels)
    mask = np.zeros(candidates.item_index.shape, np.int64)
    for bit, name in enumerate(names):  # one pass per channel, a handful at most
        if name in candidates.channel_scores:
            found = ~np.isnan(candidates.channel_scores[name]) & candidates.valid
            mask |= found.astype(np.int64) << bit
    return mask
