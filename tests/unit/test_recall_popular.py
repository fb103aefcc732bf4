"""PopularRetriever: conformance, decay, windows, exclusions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ConfigError
from recfunnel.stages.recall.popular import PopularConfig, PopularRetriever
from recfunnel.testing.conformance import RetrieverConformance
from recfunnel.types import RequestBatch

DAY = 86_400


class TestPopularConformance(RetrieverConformance):
    def make_retriever(self) -> PopularRetriever:
        return PopularRetriever(PopularConfig(half_life_days=None))

    def check_planted_answer(self, data, request, out) -> None:
        # known answer: items by number of positives, minus each user's own items
        counts = np.bincount(data.interactions.item_index, minlength=data.n_items)
        for row in range(0, len(request), 7):  # a few rows, checked the slow obvious way
            seen = set(request.exclude[row].indices)
            expected = [i for i in np.argsort(-counts, kind="stable") if i not in seen and counts[i] > 0]
            got = out.item_index[row][out.valid[row]].tolist()
            assert got == expected[: len(got)]
            assert len(got) == min(self.k, len(expected))


def _data(events: list[tuple[str, str, int]]):
    return build_training_data(pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"]))


def _request(n_rows: int, n_items: int, exclude: sp.csr_matrix | None = None) -> RequestBatch:
    return RequestBatch(
        np.arange(n_rows), np.zeros(n_rows, np.int64), np.full((n_rows, 1), -1),
        np.zeros((n_rows, 1), np.int64),
        exclude if exclude is not None else sp.csr_matrix((n_rows, n_items)),
    )


def test_constant_timestamps_give_plain_counts() -> None:
    data = _data([("u1", "a", 5), ("u2", "a", 5), ("u3", "b", 5)])
    popular = PopularRetriever().fit(data)
    np.testing.assert_allclose(popular.scores_, [2.0, 1.0])


def test_half_life_halves_an_old_event() -> None:
    data = _data([("u1", "a", 0), ("u2", "b", 30 * DAY)])
    popular = PopularRetriever(PopularConfig(half_life_days=30.0)).fit(data)
    np.testing.assert_allclose(popular.scores_, [0.5, 1.0])
    out = popular.retrieve(_request(1, 2), k=5)
    assert out.item_index.tolist() == [[1, 0]]


def test_window_drops_old_events() -> None:
    data = _data([("u1", "a", 0), ("u2", "a", 0), ("u3", "b", 10 * DAY)])
    popular = PopularRetriever(PopularConfig(half_life_days=None, window_days=5.0)).fit(data)
    np.testing.assert_allclose(popular.scores_, [0.0, 1.0])
    assert popular.retrieve(_request(1, 2), k=5).item_index.tolist() == [[1]]


def test_exclusions_differ_per_row() -> None:
    data = _data([("u", "a", 0)] * 1 + [("u", "b", 0)] * 2 + [("u", "c", 0)] * 3 + [("v", "c", 0)])
    popular = PopularRetriever().fit(data)
    exclude = sp.csr_matrix(np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0]]))
    out = popular.retrieve(_request(3, 3, exclude), k=2)
    assert out.item_index.tolist() == [[1, 0], [-1, -1], [2, 1]]
    assert np.isneginf(out.score[1]).all()


def test_rejects_bad_config() -> None:
    data = _data([("u", "a", 0)])
    with pytest.raises(ConfigError):
        PopularRetriever(PopularConfig(half_life_days=0.0)).fit(data)
