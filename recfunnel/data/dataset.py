"""TrainingData: the encoded tables every stage fits on.

Conventions for the raw tables (as produced by :mod:`recfunnel.data.loaders`):

* interactions: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64), and
  optionally ``label`` (0/1), ``weight``, ``rating``, ``event``, ``watch_time`` ...
  When ``label`` exists, rows with ``label == 1`` are positives and the others
  are exposures (shown, not clicked); without it every row is a positive.
* users / items: indexed by ``user_id`` / ``item_id`` (str). Column kinds follow
  their values: numbers are dense features, strings are categorical features,
  tuples of strings are multi-value features (genres, tags).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recfunnel.data.interactions import IdMap, Interactions
from recfunnel.errors import DataError

#: event strength column names tried in order for the interaction weight
WEIGHT_COLUMNS = ("weight",)


@dataclass(frozen=True)
class TrainingData:
    """Encoded training data.

    Attributes:
        interactions: the positive events.
        user_ids / item_ids: id maps (part of every model artifact).
        user_features: one row per user index (RangeIndex 0..n_users-1); may have no columns.
        item_features: one row per item index; may have no columns.
        exposures: shown-but-not-positive events when the data has a ``label`` column.
        raw: the positive interactions as a DataFrame with all extra columns, aligned
            row for row with ``interactions`` (rating, event, watch_time, ...).
    """

    interactions: Interactions
    user_ids: IdMap
    item_ids: IdMap
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    exposures: Interactions | None = None
    raw: pd.DataFrame | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def restrict(self, mask: np.ndarray) -> TrainingData:
        """The same id spaces and tables, with only the positives where ``mask`` is true."""
        raw = None if self.raw is None else self.raw.loc[mask].reset_index(drop=True)
        exposures = self.exposures
        if exposures is not None and len(exposures):
            # exposures newer than the newest kept positive would leak the future into a holdout fit
            cutoff = self.interactions.timestamp[mask].max(initial=np.iinfo(np.int64).min)
            exposures = exposures.subset(exposures.timestamp <= cutoff)
        return TrainingData(self.interactions.subset(mask), self.user_ids, self.item_ids,
                            self.user_features, self.item_features, exposures, raw)


def _aligned_features(table: pd.DataFrame | None, ids: IdMap) -> pd.DataFrame:
    """Rows of ``table`` in IdMap order; ids absent from the table get missing values."""
    if table is None or table.shape[1] == 0:
        return pd.DataFrame(index=pd.RangeIndex(len(ids)))
    table = table[~table.index.astype(str).duplicated(keep="last")]
    aligned = table.reindex(pd.Index(ids.ids, dtype=object)).reset_index(drop=True)
    return aligned


def build_training_data(
    interactions: pd.DataFrame,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> TrainingData:
    """Encode raw tables into :class:`TrainingData`.

    Ids are taken from the interactions and from the user/item tables, so items
    that nobody interacted with yet (new items) are part of the catalogue.
    """
    for col in ("user_id", "item_id", "timestamp"):
        if col not in interactions.columns:
            raise DataError(f"interactions have no '{col}' column")
    if len(interactions) == 0:
        raise DataError("interactions are empty")
    user_values = [interactions["user_id"].astype(str)]
    item_values = [interactions["item_id"].astype(str)]
    if users is not None:
        user_values.append(pd.Series(users.index.astype(str)))
    if items is not None:
        item_values.append(pd.Series(items.index.astype(str)))
    user_ids = IdMap.from_values(pd.concat(user_values, ignore_index=True))
    item_ids = IdMap.from_values(pd.concat(item_values, ignore_index=True))

    frame = interactions.reset_index(drop=True)
    if "label" in frame.columns:
        positive = frame["label"].to_numpy() > 0
    else:
        positive = np.ones(len(frame), bool)
    if not positive.any():
        raise DataError("interactions have a 'label' column but no row with label 1")

    def encode(rows: pd.DataFrame) -> Interactions:
        weight = np.ones(len(rows), np.float32)
        if "weight" in rows.columns:
            w = pd.to_numeric(rows["weight"], errors="coerce").to_numpy(np.float64)
            # counts such as play counts are heavy-tailed: log1p keeps one binge from dominating
            weight = np.log1p(np.clip(np.nan_to_num(w, nan=1.0), 0, None)).astype(np.float32)
            weight[weight <= 0] = np.float32(np.log1p(1.0))
        return Interactions(
            user_ids.index(rows["user_id"].to_numpy()),
            item_ids.index(rows["item_id"].to_numpy()),
            rows["timestamp"].to_numpy(np.int64),
            weight,
            len(user_ids),
            len(item_ids),
        )

    pos_rows = frame.loc[positive].reset_index(drop=True)
    exposures = encode(frame.loc[~positive]) if (~positive).any() else None
    return TrainingData(
        encode(pos_rows), user_ids, item_ids,
        _aligned_features(users, user_ids), _aligned_features(items, item_ids),
        exposures, pos_rows,
    )
