"""CacheRetriever: conformance, remembered unshown items, exits (shown, expired, full, recalled)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.errors import ConfigError, DataError
from recfunnel.stages.recall.cache import CacheConfig, CacheRetriever
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups

DAY = 86_400


def _planted_ranking(data):
    """A ranking of every user's own-group items, better for lower item indices (what a ranker
    would have scored), and the time it was made: just after the newest event."""
    user_group, item_group = planted_groups(data)
    own = np.stack([np.flatnonzero(item_group == g) for g in user_group])  # (n_users, items per group)
    scores = 1.0 - own / own.max()
    return own, scores, int(data.interactions.timestamp.max()) + 1


class TestCacheConformance(RetrieverConformance):
    def make_retriever(self) -> CacheRetriever:
        return CacheRetriever(CacheConfig(remember_top=12))

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data):
        cache = cls().make_retriever().fit(data)
        own, scores, now = _planted_ranking(data)
        cache.remember(np.arange(data.n_users), own, scores, now)
        return cache

    def check_planted_answer(self, data, request, out) -> None:
        # known answer: the 12 best remembered items, minus what each user has seen, best first
        own, scores, _ = _planted_ranking(data)
        for row in range(len(request)):
            best = own[row][np.argsort(-scores[row], kind="stable")][:12]
            expected = [i for i in best if i not in set(request.exclude[row].indices)][: self.k]
            assert out.item_index[row][out.valid[row]].tolist() == expected


def _cache(**config) -> tuple[CacheRetriever, object]:
    data = make_planted_data(n_users_per_group=2, items_per_group=10)
    return CacheRetriever(CacheConfig(**config)).fit(data), data


def _request(data, users, time):
    request = make_request(data, np.asarray(users), history_length=3, time=time)
    # no exclusions, so that only the cache's own rules decide
    return type(request)(request.user_index, request.time, request.history, request.history_time,
                         sp.csr_matrix(request.exclude.shape))


def test_returns_remembered_items_and_drops_shown_ones() -> None:
    cache, data = _cache()
    assert len(cache.store_) == 0  # fit starts empty
    t = 100 * DAY
    cache.remember(np.array([0, 1]), np.array([[3, 4, 5, -1], [7, 8, 9, 2]]),
                   np.array([[0.2, 0.9, 0.5, 9.0], [0.1, 0.3, np.nan, 0.2]]), t)
    out = cache.retrieve(_request(data, [0, 1, -1], t + 10), k=5)
    assert out.item_index.tolist() == [[4, 5, 3], [8, 2, 7], [-1, -1, -1]]
    np.testing.assert_allclose(out.score[0], [0.9, 0.5, 0.2])
    cache.mark_shown(np.array([0, 1]), np.array([[4, -1], [2, 7]]))
    assert cache.retrieve(_request(data, [0, 1], t + 10), k=5).item_index.tolist() == [[5, 3], [8, -1]]
    cache.mark_shown(np.array([0]), sp.csr_matrix(([1.0], ([0], [5])), shape=(1, data.n_items)))
    assert cache.retrieve(_request(data, [0], t + 10), k=5).item_index.tolist() == [[3]]


def test_expired_and_future_entries_are_not_returned() -> None:
    cache, data = _cache(ttl_days=3.0)
    t = 100 * DAY
    cache.remember(np.array([0]), np.array([[1, 2]]), np.array([[0.5, 0.4]]), t)
    cache.remember(np.array([0]), np.array([[3]]), np.array([[0.1]]), t + 2 * DAY)
    assert cache.retrieve(_request(data, [0], t + DAY), k=5).item_index.tolist() == [[1, 2]]  # 3 is not yet
    assert cache.retrieve(_request(data, [0], t + 4 * DAY), k=5).item_index.tolist() == [[3]]  # 1, 2 expired
    assert cache.retrieve(_request(data, [0], t - 1), k=5).item_index.shape == (1, 0)
    cache.remember(np.array([1]), np.array([[4]]), np.array([[1.0]]), t + 10 * DAY)
    assert set(cache.store_.item.tolist()) == {4}  # entries dead for good are pruned on remember


def test_capacity_top_refresh_and_unknown_items() -> None:
    cache, data = _cache(capacity=3, remember_top=2)
    t = 100 * DAY
    cache.remember(np.array([0]), np.array([[1, 2, 3]]), np.array([[0.3, 0.2, 0.1]]), t)  # 3 is not top-2
    cache.remember(np.array([0]), np.array([[4, 1, data.n_items]]), np.array([[0.05, 0.01, 9.0]]), t + 5)
    # 1 was refreshed (new score and time), the unknown item is ignored: 2 (t), 4 (t+5), 1 (t+5)
    out = cache.retrieve(_request(data, [0], t + 10), k=5)
    assert out.item_index.tolist() == [[2, 4, 1]]
    np.testing.assert_allclose(out.score[0], [0.2, 0.05, 0.01])
    cache.remember(np.array([0]), np.array([[5]]), np.array([[0.5]]), t + 6)  # full: 2, the oldest, leaves
    assert cache.retrieve(_request(data, [0], t + 10), k=5).item_index.tolist() == [[5, 4, 1]]


def test_items_leave_after_max_recalls() -> None:
    cache, data = _cache(max_recalls=2)
    t = 100 * DAY
    cache.remember(np.array([0, 1]), np.array([[1, 2], [1, 2]]), np.ones((2, 2)), t)
    for _ in range(2):
        cache.mark_recalled(np.array([0]), np.array([[1]]))
    out = cache.retrieve(_request(data, [0, 1], t), k=5)
    assert out.item_index.tolist() == [[2, -1], [1, 2]]


def test_save_load_keeps_the_store(tmp_path) -> None:
    cache, data = _cache()
    cache.remember(np.array([2, 0]), np.array([[1, 2], [3, -1]]), np.array([[0.5, 0.7], [0.1, 0.0]]), 100 * DAY)
    with ArtifactWriter(tmp_path / "m", kind="cache") as writer:
        cache.save(writer, "c/")
    loaded = CacheRetriever.load(ArtifactReader(tmp_path / "m"), "c/", cache.config)
    request = _request(data, [0, 1, 2], 100 * DAY)
    np.testing.assert_array_equal(loaded.retrieve(request, 5).item_index, cache.retrieve(request, 5).item_index)
    assert loaded.n_items_ == data.n_items


def test_bad_config_and_inputs() -> None:
    data = make_planted_data(n_users_per_group=2, items_per_group=4)
    for cfg in (CacheConfig(ttl_days=0), CacheConfig(capacity=0), CacheConfig(max_recalls=0)):
        with pytest.raises(ConfigError):
            CacheRetriever(cfg).fit(data)
    cache = CacheRetriever().fit(data)
    with pytest.raises(DataError):
        cache.remember(np.array([0]), np.array([1, 2]), np.array([0.1, 0.2]), 0)
