"""Synthetic data with known answers, and request builders for tests.

``make_planted_data`` builds users split into disjoint groups, each group
interacting only with its own items, so a personalised stage must put a user's
own-group items first. ``make_request`` turns TrainingData into the
point-in-time :class:`~recfunnel.types.RequestBatch` every stage consumes.

>>> data = make_planted_data(n_users_per_group=4, n_groups=2, items_per_group=6)
>>> data.n_users, data.n_items
(8, 12)
>>> request = make_request(data, np.array([0, 7, -1]), history_length=3)
>>> request.history.shape, request.exclude.shape
((3, 3), (3, 12))
>>> request.history[2].tolist()  # unknown user: empty history
[-1, -1, -1]
>>> make_request(data, np.array([0]), history_length=3, time=0).history.tolist()  # before any event
[[-1, -1, -1]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recfunnel.data.dataset import TrainingData, build_training_data
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.types import RequestBatch

#: first timestamp of the synthetic data (seconds, 2023-11-14)
_T0 = 1_700_000_000
_DAY = 86_400


def make_planted_data(
    n_users_per_group: int = 20,
    n_groups: int = 2,
    items_per_group: int = 15,
    seed: int = 0,
) -> TrainingData:
    """Users in disjoint groups, each interacting only with its own group's items.

    User ``u`` (index) belongs to group ``u // n_users_per_group`` and item ``i``
    to group ``i // items_per_group`` (ids are zero-padded, so the IdMap keeps
    construction order). Each user has about half of their group's items, drawn
    with a Zipf-like preference for the group's first items (so popularity has a
    head and a tail), at distinct timestamps over 30 days. Items carry a
    ``category`` column ``"g<group>"``.

    Args:
        n_users_per_group: users in each group.
        n_groups: number of groups.
        items_per_group: items in each group.
        seed: random seed.

    Returns:
        TrainingData with ``n_groups * n_users_per_group`` users and
        ``n_groups * items_per_group`` items.
    """
    rng = np.random.default_rng(seed)
    per_user = max(2, items_per_group // 2)
    preference = 1.0 / np.arange(1, items_per_group + 1) ** 0.7
    preference /= preference.sum()
    n_users = n_users_per_group * n_groups
    # one draw per user is the natural unit here; the data is tiny
    picks = np.stack([
        rng.choice(items_per_group, size=per_user, replace=False, p=preference) for _ in range(n_users)
    ])
    user_index = np.repeat(np.arange(n_users), per_user)
    item_index = (picks + (np.arange(n_users) // n_users_per_group)[:, None] * items_per_group).ravel()
    timestamp = _T0 + rng.choice(30 * _DAY, size=len(user_index), replace=False)
    interactions = pd.DataFrame({
        "user_id": [f"u{u:05d}" for u in user_index],
        "item_id": [f"i{i:05d}" for i in item_index],
        "timestamp": timestamp.astype(np.int64),
    })
    n_items = n_groups * items_per_group
    items = pd.DataFrame(
        {"category": [f"g{i // items_per_group}" for i in range(n_items)]},
        index=pd.Index([f"i{i:05d}" for i in range(n_items)], name="item_id"),
    )
    return build_training_data(interactions, items=items)


def planted_groups(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """Group of every user and item of data built by :func:`make_planted_data`.

    Returns:
        (user_group (n_users,), item_group (n_items,)) int64; -1 for users without events.
    """
    item_group = data.item_features["category"].str.slice(1).astype(np.int64).to_numpy()
    user_group = np.full(data.n_users, -1, np.int64)
    user_group[data.interactions.user_index] = item_group[data.interactions.item_index]
    return user_group, item_group


def make_request(
    data: TrainingData,
    users: np.ndarray,
    history_length: int,
    time: int | np.ndarray | None = None,
) -> RequestBatch:
    """Point-in-time requests for ``users`` built from the training positives.

    Only events strictly before each request's time are visible: the history is
    the user's last ``history_length`` positive items, newest first (ties in time
    keep the later event row as newer), and ``exclude`` holds every item the
    user had before that time.

    Args:
        data: training data whose positives act as the event log.
        users: (B,) internal user indices; -1 for an unknown user (empty history).
        history_length: L, columns of ``history``.
        time: request time, a scalar or (B,) array; default one past the newest event.

    Returns:
        RequestBatch with history (B, L), history_time (B, L), exclude CSR (B, n_items).
    """
    return UserHistoryStore(data.interactions).request(
        np.asarray(users, np.int64), time=time, history_length=history_length)
