"""Conformance tests every retriever must pass (STYLE principle 4).

Mix :class:`RetrieverConformance` into a test class and implement
``make_retriever``; pytest collects the inherited tests::

    class TestItemCF(RetrieverConformance):
        def make_retriever(self):
            return ItemCFRetriever(ItemCFConfig(neighbours=20))

The data is :func:`~recfunnel.testing.synthetic.make_planted_data`: two
disjoint user groups with their own items, so a personalised retriever must
return a user's own-group items first. A non-personalised retriever overrides
:meth:`RetrieverConformance.check_planted_answer` with its own known answer.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.data.dataset import TrainingData
from recfunnel.stages.base import Retriever
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.testing.synthetic import make_planted_data, make_request, planted_groups
from recfunnel.types import Candidates, RequestBatch


class RetrieverConformance:
    """Inherited tests for a :class:`~recfunnel.stages.base.Retriever` implementation.

    Subclasses implement :meth:`make_retriever` and may change ``k`` and
    ``history_length``, or override :meth:`make_data` and :meth:`check_planted_answer`.
    """

    #: items requested per user
    k: ClassVar[int] = 10
    #: history slots of the requests
    history_length: ClassVar[int] = 5

    def make_retriever(self) -> Retriever:
        """A new, unfitted retriever under test."""
        raise NotImplementedError

    def make_data(self) -> TrainingData:
        """The training data (planted groups by default)."""
        return make_planted_data()

    def check_planted_answer(self, data: TrainingData, request: RequestBatch, out: Candidates) -> None:
        """Assert the retriever recovered the known answer: own-group items come first."""
        user_group, item_group = planted_groups(data)
        has_history = (request.history >= 0).any(axis=1)
        assert has_history.all(), "every planted user has a history"
        found = out.valid.sum(axis=1)
        assert (found > 0).all(), "every user with a history gets candidates"
        head = min(3, out.item_index.shape[1])
        top = out.item_index[:, :head]
        own = item_group[np.maximum(top, 0)] == user_group[request.user_index][:, None]
        assert (own | (top < 0)).all(), "the first items of every user belong to the user's group"

    # fixtures: built once per test class (classmethods, as pytest wants for class scope)
    # and shared read-only by its tests

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> TrainingData:
        return cls().make_data()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data: TrainingData) -> Retriever:
        return cls().make_retriever().fit(data)

    @pytest.fixture(scope="class")
    @classmethod
    def request_batch(cls, data: TrainingData) -> RequestBatch:
        return make_request(data, np.arange(data.n_users), cls.history_length)

    @pytest.fixture(scope="class")
    @classmethod
    def retrieved(cls, fitted: Retriever, request_batch: RequestBatch) -> Candidates:
        return fitted.retrieve(request_batch, cls.k)

    # the tests

    def test_fit_returns_self(self, data: TrainingData) -> None:
        retriever = self.make_retriever()
        assert not retriever.is_fitted
        assert retriever.fit(data) is retriever
        assert retriever.is_fitted

    def test_shapes_and_dtypes(self, fitted: Retriever, request_batch: RequestBatch,
                               retrieved: Candidates) -> None:
        b = len(request_batch)
        assert retrieved.item_index.shape[0] == b
        assert retrieved.item_index.shape[1] <= self.k
        assert retrieved.item_index.dtype == np.int64
        assert retrieved.score.dtype == np.float32
        assert set(retrieved.channel_scores) == {fitted.name}
        np.testing.assert_array_equal(retrieved.channel_scores[fitted.name], retrieved.score)

    def test_sorted_scores_and_padding(self, data: TrainingData, retrieved: Candidates) -> None:
        valid = retrieved.valid
        assert (retrieved.item_index[valid] < data.n_items).all()
        assert np.isfinite(retrieved.score[valid]).all()
        assert np.isneginf(retrieved.score[~valid]).all()
        # padding only at the end of a row
        assert (np.diff(valid.astype(np.int8), axis=1) <= 0).all()
        with np.errstate(invalid="ignore"):  # -inf - -inf between padding slots
            step = np.diff(retrieved.score, axis=1)
        assert (step[valid[:, 1:]] <= 0).all()

    def test_never_returns_excluded(self, request_batch: RequestBatch, retrieved: Candidates) -> None:
        rows, cols = np.nonzero(retrieved.valid)
        excluded = np.asarray(request_batch.exclude[rows, retrieved.item_index[rows, cols]]).ravel()
        assert not excluded.any()

    def test_no_duplicates(self, retrieved: Candidates) -> None:
        items = np.sort(retrieved.item_index, axis=1)
        duplicate = (items[:, 1:] == items[:, :-1]) & (items[:, 1:] >= 0)
        assert not duplicate.any()

    def test_extra_exclusions_are_respected(self, fitted: Retriever, request_batch: RequestBatch,
                                            retrieved: Candidates) -> None:
        # exclude what was returned first: none of it may come back
        first = retrieved.item_index[:, :2]
        rows = np.broadcast_to(np.arange(len(first))[:, None], first.shape)
        keep = first >= 0
        extra = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], first[keep])), shape=request_batch.exclude.shape)
        request = RequestBatch(request_batch.user_index, request_batch.time, request_batch.history,
                               request_batch.history_time, (request_batch.exclude + extra).tocsr())
        again = fitted.retrieve(request, self.k)
        clash = (again.item_index[:, :, None] == first[:, None, :]) & (first[:, None, :] >= 0)
        assert not clash.any()

    def test_empty_history_and_unknown_users(self, data: TrainingData, fitted: Retriever) -> None:
        request = make_request(data, np.array([0, -1, 1]), self.history_length)
        empty = RequestBatch(
            request.user_index, request.time, np.full_like(request.history, -1),
            np.zeros_like(request.history_time), request.exclude,
        )
        out = fitted.retrieve(empty, self.k)
        assert len(out) == 3 and out.item_index.shape[1] <= self.k
        assert np.isneginf(out.score[~out.valid]).all()

    def test_zero_users_and_k(self, data: TrainingData, fitted: Retriever) -> None:
        assert len(fitted.retrieve(make_request(data, np.zeros(0, np.int64), self.history_length), self.k)) == 0
        out = fitted.retrieve(make_request(data, np.arange(2), self.history_length), 0)
        assert out.item_index.shape == (2, 0)

    def test_save_load_roundtrip(self, tmp_path, fitted: Retriever, request_batch: RequestBatch,
                                 retrieved: Candidates) -> None:
        with ArtifactWriter(tmp_path / "model", kind=fitted.kind) as writer:
            fitted.save(writer, "retriever/")
        loaded = type(fitted).load(ArtifactReader(tmp_path / "model"), "retriever/", fitted.config, fitted.name)
        again = loaded.retrieve(request_batch, self.k)
        np.testing.assert_array_equal(again.item_index, retrieved.item_index)
        np.testing.assert_array_equal(again.score, retrieved.score)

    def test_planted_answer(self, data: TrainingData, request_batch: RequestBatch,
                            retrieved: Candidates) -> None:
        self.check_planted_answer(data, request_batch, retrieved)
