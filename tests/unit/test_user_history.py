import numpy as np

from recfunnel.data.interactions import Interactions
from recfunnel.storage.user_history import UserHistoryStore


def _store() -> UserHistoryStore:
    inter = Interactions(
        user_index=np.array([0, 0, 0, 1, 0]), item_index=np.array([3, 1, 2, 0, 4]),
        timestamp=np.array([5, 1, 3, 2, 5]), weight=np.ones(5, np.float32), n_users=3, n_items=5,
    )
    return UserHistoryStore(inter)


def test_history_is_newest_first_and_ties_keep_file_order():
    r = _store().request(np.array([0, 1]), history_length=3)
    # user 0: items 3 and 4 share time 5; item 4 came later in the file, so it is the newest
    assert r.history.tolist() == [[4, 3, 2], [0, -1, -1]]
    assert r.history_time.tolist() == [[5, 5, 3], [2, 0, 0]]


def test_point_in_time_history_is_strictly_before_the_request_time():
    r = _store().request(np.array([0, 0]), time=np.array([3, 1]), history_length=4)
    assert r.history.tolist() == [[1, -1, -1, -1], [-1, -1, -1, -1]]


def test_unknown_and_empty_users_get_empty_history_and_nothing_excluded():
    r = _store().request(np.array([-1, 2]), history_length=2)
    assert (r.history == -1).all()
    assert r.exclude.nnz == 0


def test_exclude_holds_all_training_items():
    r = _store().request(np.array([0]), history_length=1)
    assert sorted(r.exclude.indices.tolist()) == [1, 2, 3, 4]
    assert sorted(_store().event_users().tolist()) == [0, 0, 0, 0, 1]
