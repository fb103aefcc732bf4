"""Publishing new items into a fitted funnel without a restart.

:func:`publish_to_channels` hands the new items (a :class:`~recfunnel.stages.base.NewItems`
batch: indices, publish times, side information) to every stage that is
:class:`~recfunnel.stages.base.Incremental`; each stage takes what it needs
(``publish``), and this module knows nothing else about them. Today:

* ``new_items`` pools: the publish time (and the category when the pools are
  personalised) — the item is retrievable by the next request.
* ``cluster``: the item's content vector, assigned to its nearest centroid.
* ``lookalike``: the publish time; the item enters the pool with its first
  positive event (which the nearline state passes to ``observe``).
* ``popular`` / ``hot`` (and the funnel's popular fallback): the publish time; the
  item enters the list with its first positive event, counted in the channel's
  popularity (``observe``), so an item many users click soon reaches every
  cold-start user.
* ``eges``: the item's side-information vector, linked both ways with its
  ``neighbours`` nearest items in the item-to-item ``similarity_``, so a history
  holding one of its neighbours retrieves it and a history holding it retrieves its
  neighbours.

Stages that are not ``Incremental`` (ItemCF, UserCF, matrix factorisation, ...)
learn about an item at the next fit; they ignore indices beyond their catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recfunnel.stages.base import Incremental, NewItems


def publish_to_channels(channels: Sequence[object], item_index: np.ndarray, rows: pd.DataFrame,
                        publish_time: np.ndarray) -> list[str]:
    """Put new items into every stage that takes them (:class:`~recfunnel.stages.base.Incremental`).

    Args:
        channels: the funnel's stages (``[stage for _, stage in funnel.stages()]``); a stage
            object listed twice takes the items once.
        item_index: (N,) int64 the items' indices in the funnel's (grown) item map.
        rows: N rows of side information, aligned with ``item_index``.
        publish_time: (N,) int64 unix seconds.

    Returns:
        names of the stages that took the items.
    """
    items = NewItems(item_index, publish_time, rows)
    took: list[str] = []
    if len(items) == 0:
        return took
    seen: set[int] = set()
    for stage in channels:  # a loop over stages
        if isinstance(stage, Incremental) and id(stage) not in seen:
            seen.add(id(stage))
            if stage.publish(items):
                took.append(getattr(stage, "name", type(stage).__name__))
    return took
