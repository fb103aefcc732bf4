"""Offline training of the whole funnel.

The ranker must learn on the candidates it will see when serving, so fitting
runs the funnel twice (seed 003 §6; the "two-stage" recipe of production
recommenders):

1. Hold out each user's newest ``holdout_ratio`` of events (file order breaks
   timestamp ties, so constant timestamps still give a split).
2. Fit the retrieval channels on the rest, retrieve candidates for the users
   with held-out events *as of the end of the rest*, label the candidates that
   the users went on to interact with, and train the ranker on them.
3. Refit every channel and the ranker's statistics on all the data; the learned
   ranking model is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from recfunnel.config import FunnelConfig, StageSpec
from recfunnel.config.registry import stage_class
from recfunnel.data.dataset import TrainingData
from recfunnel.data.splits import user_temporal_holdout_mask
from recfunnel.pipeline.online.funnel import Funnel
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.training.progress import show_progress


def _build(spec: StageSpec):
    return stage_class(spec.kind)(spec.config, spec.name)


def _fit_retrieval(config: FunnelConfig, data: TrainingData, bar: tqdm, label: str):
    channels = []
    for spec in config.channels:
        bar.set_postfix_str(f"{label}: {spec.name}")
        channels.append(_build(spec).fit(data))
        bar.update(1)
    fallback = _build(config.fallback).fit(data)
    return channels, fallback


def fit_funnel(data: TrainingData, config: FunnelConfig, *, progress: bool = True,
               log: Callable[[str], None] | None = None) -> Funnel:
    """Train every stage of ``config`` on ``data`` and return the fitted :class:`Funnel`.

    With ``progress``, a bar over the steps, and the trainers inside the stages (the
    ranker's epochs, skip-gram, ALS and BPR) show their own bars with ETAs.
    """
    with show_progress(progress):
        return _fit_funnel(data, config, progress=progress, log=log)


def _fit_funnel(data: TrainingData, config: FunnelConfig, *, progress: bool,
                log: Callable[[str], None] | None) -> Funnel:
    say = log or (lambda _msg: None)
    n_steps = 2 * len(config.channels) + 4
    bar = tqdm(total=n_steps, desc="fit", unit="step", disable=not progress)
    timings: dict[str, float] = {}
    ranker = None
    inter = data.interactions
    if config.ranker is not None:
        t0 = time.perf_counter()
        holdout = user_temporal_holdout_mask(inter.user_index, inter.timestamp, config.holdout_ratio)
        if holdout.any():
            hist = data.restrict(~holdout)
            channels, fallback = _fit_retrieval(config, hist, bar, "holdout")
            store = UserHistoryStore(hist.interactions)
            probe = Funnel(config, data.user_ids, data.item_ids, store, channels, fallback)
            users = np.unique(inter.user_index[holdout])
            target = sp.csr_matrix(
                (np.ones(int(holdout.sum()), np.float32), (inter.user_index[holdout], inter.item_index[holdout])),
                shape=(data.n_users, data.n_items))
            bar.set_postfix_str("ranker samples")
            request = store.request(users, history_length=config.history_length)
            candidates, _ = probe.retrieve(request)
            rows = np.repeat(np.arange(len(users)), candidates.item_index.shape[1])
            labels = np.asarray(target[users[rows], np.maximum(candidates.item_index.ravel(), 0)]).ravel() > 0
            labels = labels.reshape(candidates.item_index.shape) & candidates.valid
            bar.update(1)
            bar.set_postfix_str("ranker")
            ranker = _build(config.ranker).fit_candidates(hist, request, candidates, labels, progress=progress)
            found = labels.sum() / max(int(target.sum()), 1)
            say(f"ranker trained on {len(users)} users; retrieval found {found:.1%} of held-out events")
        else:
            say("no user has enough events for a holdout: the ranker is skipped")
            bar.update(len(config.channels) + 1)
        timings["ranker"] = time.perf_counter() - t0
    else:
        bar.update(len(config.channels) + 1)
    t0 = time.perf_counter()
    channels, fallback = _fit_retrieval(config, data, bar, "full")
    timings["retrieval"] = time.perf_counter() - t0
    if ranker is not None:
        bar.set_postfix_str("ranker statistics")
        ranker.fit(data)
    bar.update(1)
    reranker = None
    if config.reranker is not None:
        bar.set_postfix_str("reranker")
        reranker = _build(config.reranker).fit(data)
    bar.update(1)
    bar.set_postfix_str("done")
    bar.update(1)
    bar.close()
    funnel = Funnel(config, data.user_ids, data.item_ids, UserHistoryStore(inter), channels, fallback,
                    ranker, reranker)
    funnel.fit_timings_ = timings
    return funnel
