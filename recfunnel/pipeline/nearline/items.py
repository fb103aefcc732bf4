"""Publishing new items into a fitted funnel without a restart.

:func:`publish_to_channels` gives every retrieval channel that can take new
items what it needs, from the items' side information:

* ``new_items`` pools: the publish time (and the category when the pools are
  personalised) — the item is retrievable by the next request.
* ``cluster``: the item's content vector, assigned to its nearest centroid.
* ``lookalike``: the publish time; the item enters the pool with its first
  positive event (the nearline consumer calls ``update``).
* ``popular`` / ``hot`` (and the funnel's popular fallback): the publish time; the
  item enters the list with its first positive event, which the nearline state
  counts into the channel's popularity (``PopularRetriever.update``), so an item
  many users click soon reaches every cold-start user.
* channels with ``vector_from_side_info`` (EGES): the item's side-information
  vector is appended to ``item_vectors_`` and linked both ways with its
  ``neighbours`` nearest items in the item-to-item ``similarity_`` (an exact
  inner-product search), so a history holding one of its neighbours retrieves it
  and a history holding it retrieves its neighbours.

Channels without an incremental API (ItemCF, UserCF, matrix factorisation, ...)
learn about an item at the next fit; they ignore indices beyond their catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.stages.recall.cluster import ClusterRetriever
from recfunnel.stages.recall.item2item import ItemToItemRetriever
from recfunnel.stages.recall.lookalike import LookalikeRetriever
from recfunnel.stages.recall.new_items import NewItemRetriever
from recfunnel.stages.recall.popular import PopularRetriever
from recfunnel.stages.recall.sparse import keep_top_k_per_row


def publish_to_channels(channels: Sequence[object], item_index: np.ndarray, rows: pd.DataFrame,
                        publish_time: np.ndarray) -> list[str]:
    """Put new items into every channel that supports incremental items.

    Args:
        channels: the funnel's retrieval channels (and fallback).
        item_index: (N,) int64 the items' indices in the funnel's (grown) item map.
        rows: N rows of side information, aligned with ``item_index``.
        publish_time: (N,) int64 unix seconds.

    Returns:
        names of the channels that took the items.
    """
    item_index = np.asarray(item_index, np.int64)
    publish_time = np.asarray(publish_time, np.int64)
    rows = rows.reset_index(drop=True)
    took = []
    if len(item_index) == 0:
        return took
    for channel in channels:  # a loop over channels
        name = getattr(channel, "name", type(channel).__name__)
        if isinstance(channel, NewItemRetriever):
            cfg = channel.config
            category = None
            if cfg.personalised and cfg.category_column in rows.columns:
                category = rows[cfg.category_column].to_numpy(dtype=object)
            channel.add_items(item_index, publish_time, category)
            took.append(name)
        elif isinstance(channel, ClusterRetriever):
            encoder = channel.encoder_
            if all(c in set(map(str, rows.columns)) for c in encoder.columns_):
                channel.add_items(item_index, encoder.raw_vectors(rows), publish_time)
                took.append(name)
        elif isinstance(channel, LookalikeRetriever | PopularRetriever):
            channel.add_items(item_index, publish_time)
            took.append(name)
        elif isinstance(channel, ItemToItemRetriever) and hasattr(channel, "vector_from_side_info"):
            vectors = np.asarray(channel.vector_from_side_info(rows), np.float32)
            add_item_vectors(channel, item_index, vectors)
            took.append(name)
    return took


def add_item_vectors(channel: ItemToItemRetriever, item_index: np.ndarray, vectors: np.ndarray) -> None:
    """Append item vectors to an embedding channel and link them into its similarity graph.

    The graph is what a fit over the grown catalogue would give, as far as the new
    items go: a new item's row holds its ``config.neighbours`` most similar items
    (positive inner product, self excluded), and a new item enters the row of every
    other item whose ``neighbours`` best it now belongs to (that row drops its weakest
    entry when full). Zero vectors link to nothing. ``similarity_`` is replaced as a
    whole (assigned last), so a retrieval running meanwhile sees the old or the new graph.
    """
    item_index = np.asarray(item_index, np.int64)
    old_vectors = np.asarray(channel.item_vectors_, np.float32)
    old_sim = channel.similarity_.tocsr()
    n_old = old_sim.shape[0]
    n = max(n_old, int(item_index.max(initial=-1)) + 1)
    all_vectors = np.zeros((n, old_vectors.shape[1]), np.float32)
    all_vectors[:len(old_vectors)] = old_vectors
    all_vectors[item_index] = vectors
    k = int(getattr(channel.config, "neighbours", 50))
    score = vectors @ all_vectors.T  # (N, n): a few published items against the catalogue
    score = np.where(np.isfinite(score) & (score > 0), score, 0.0).astype(np.float32)
    score[np.arange(len(item_index)), item_index] = 0.0
    # rows of the new items: their k nearest
    rows = keep_top_k_per_row(sp.csr_matrix(score), k).tocoo()
    new_r, new_c, new_v = item_index[rows.row], rows.col.astype(np.int64), rows.data
    # columns: other items take a new item when it beats their k-th neighbour
    old = old_sim.copy()
    old.sum_duplicates()
    counts = np.diff(old.indptr)
    kth = np.zeros(n, np.float32)
    filled = np.flatnonzero(counts > 0)
    if len(filled):
        # consecutive non-empty rows: each segment is exactly one row's entries
        row_min = np.minimum.reduceat(old.data, old.indptr[:-1][filled])
        full = counts[filled] >= k
        kth[filled[full]] = row_min[full]
    others = np.ones(n, bool)
    others[item_index] = False
    hit_new, hit_item = np.nonzero((score > kth[None, :]) & (score > 0) & others[None, :])
    col_r, col_c, col_v = hit_item.astype(np.int64), item_index[hit_new], score[hit_new, hit_item]
    # the old graph without the rows of re-published items
    old = old.tocoo()
    keep_old = ~np.isin(old.row, item_index)
    r = np.concatenate([old.row[keep_old].astype(np.int64), new_r, col_r])
    c = np.concatenate([old.col[keep_old].astype(np.int64), new_c, col_c])
    v = np.concatenate([old.data[keep_old], new_v, col_v]).astype(np.float32)
    sim = sp.csr_matrix((v, (r, c)), shape=(n, n))
    sim.sum_duplicates()
    # rows that took a new item keep their k best
    grown = np.unique(col_r)
    grown = grown[np.diff(sim.indptr)[grown] > k]
    if len(grown):
        trimmed = keep_top_k_per_row(sim[grown], k).tocoo()
        sim = sim.tocoo()
        stay = ~np.isin(sim.row, grown)
        sim = sp.csr_matrix((np.concatenate([sim.data[stay], trimmed.data]),
                             (np.concatenate([sim.row[stay], grown[trimmed.row]]),
                              np.concatenate([sim.col[stay], trimmed.col]))), shape=(n, n))
    channel.item_vectors_ = all_vectors
    channel.similarity_ = sim
