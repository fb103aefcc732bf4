"""Budgets and degradation: a channel or stage that raises or hangs never costs an answer."""

import threading
import time

import numpy as np
import pytest

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.serving.budget import BUSY, ERROR, OK, SKIPPED, TIMEOUT, Budget, BudgetedRunner
from recfunnel.testing.synthetic import make_planted_data

K = 10


@pytest.fixture(scope="module")
def data():
    return make_planted_data(n_users_per_group=20, n_groups=3, items_per_group=20, seed=3)


@pytest.fixture(scope="module")
def funnel(data):
    cfg = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20}],
        "reranker": {"kind": "mmr"}, "retrieval_k": 40, "rank_k": 30, "history_length": 20,
    })
    return fit_funnel(data, cfg, progress=False)


class Faulty:
    """Stands in for a channel, the ranker or the fallback: raises, or blocks until released."""

    def __init__(self, inner, mode: str):
        self.name = inner.name
        self.inner, self.mode = inner, mode
        self.release = threading.Event()
        self.calls = 0

    def _fault(self):
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("channel exploded")
        if self.mode == "hang":
            self.release.wait(30)

    def retrieve(self, request, k):
        self._fault()
        return self.inner.retrieve(request, k)

    def rank(self, request, candidates, k):
        self._fault()
        return self.inner.rank(request, candidates, k)


def with_channel(funnel, index, faulty):
    import copy

    f = copy.copy(funnel)
    f.channels = list(funnel.channels)
    f.channels[index] = faulty
    return f


def test_without_faults_the_answer_is_the_funnels(data, funnel):
    runner = BudgetedRunner(Budget(total=5, channel_timeout=5, stage_timeout=5))
    try:
        request = funnel.request(list(data.user_ids.ids[:5]))
        expected, _ = funnel.run(request, K)
        result = runner.run(funnel, request, K)
        np.testing.assert_array_equal(result.candidates.item_index, expected.item_index)
        np.testing.assert_allclose(result.candidates.score, expected.score)
        assert not result.degraded.any() and result.dropped == [] and result.reasons == []
        assert [s.stage for s in result.stages] == ["retrieval:itemcf", "retrieval:popular", "retrieval", "rerank"]
    finally:
        runner.close()


def test_a_raising_channel_is_dropped_and_the_answer_flagged_degraded(data, funnel):
    faulty = Faulty(funnel.channels[0], "raise")
    broken = with_channel(funnel, 0, faulty)
    runner = BudgetedRunner(Budget(total=5, channel_timeout=5, stage_timeout=5))
    try:
        for user in data.user_ids.ids[:10]:
            result = runner.run(broken, broken.request([user]), K)
            assert result.degraded.all()
            assert (result.candidates.valid.sum(axis=1) == K).all()
            itemcf = next(s for s in result.stages if s.stage == "retrieval:itemcf")
            assert itemcf.status == ERROR and "channel exploded" in itemcf.error
            assert "itemcf" not in result.candidates.channel_scores
        assert faulty.calls == 10
    finally:
        runner.close()


def test_a_hanging_channel_costs_its_timeout_then_is_skipped_and_every_answer_is_in_budget(data, funnel):
    faulty = Faulty(funnel.channels[0], "hang")
    broken = with_channel(funnel, 0, faulty)
    budget = Budget(total=0.3, channel_timeout=0.05, stage_timeout=0.1, max_late=2)
    runner = BudgetedRunner(budget, workers=4)
    try:
        statuses, worst = [], 0.0
        for user in list(data.user_ids.ids[:20]) + ["unknown-user"]:
            t0 = time.perf_counter()
            result = runner.run(broken, broken.request([user]), K)
            worst = max(worst, time.perf_counter() - t0)
            assert result.degraded.all() and (result.candidates.valid.sum(axis=1) == K).all()
            statuses.append(result.stages[0].status)
        # two calls time out (and stay running); later requests skip the channel at once
        assert statuses[:2] == [TIMEOUT, TIMEOUT] and set(statuses[2:]) == {BUSY}
        assert faulty.calls == 2 and runner.late_calls(faulty) == 2
        assert worst < budget.total + 0.2, worst
        faulty.release.set()
        deadline = time.time() + 5
        while runner.late_calls(faulty) and time.time() < deadline:
            time.sleep(0.01)
        assert runner.late_calls(faulty) == 0  # once the hung calls end, the channel is tried again
        faulty.mode = "ok"
        result = runner.run(broken, broken.request([data.user_ids.ids[0]]), K)
        assert result.stages[0].status == OK and not result.degraded.any()
    finally:
        faulty.release.set()
        runner.close()


def test_a_hanging_ranker_is_skipped_within_the_budget(data, funnel):
    import copy

    ranked = copy.copy(funnel)

    class Identity:
        name = "identity"

        def rank(self, request, candidates, k):
            return candidates

    faulty = Faulty(Identity(), "hang")
    ranked.ranker = faulty
    runner = BudgetedRunner(Budget(total=0.25, channel_timeout=0.1, stage_timeout=0.05), workers=4)
    try:
        t0 = time.perf_counter()
        result = runner.run(ranked, ranked.request([data.user_ids.ids[0]]), K)
        assert time.perf_counter() - t0 < 0.25 + 0.2
        rank = next(s for s in result.stages if s.stage == "rank")
        assert rank.status == TIMEOUT and result.degraded.all()
        assert result.stages[-1].stage == "rerank" and result.stages[-1].status == OK
        assert (result.candidates.valid.sum(axis=1) == K).all()
    finally:
        faulty.release.set()
        runner.close()


def test_no_budget_left_skips_the_remaining_stages(data, funnel):
    faulty = Faulty(funnel.channels[0], "hang")
    broken = with_channel(funnel, 0, faulty)
    # the channel wait uses the whole budget: the re-ranker has no time left
    runner = BudgetedRunner(Budget(total=0.05, channel_timeout=1.0, stage_timeout=1.0), workers=4)
    try:
        result = runner.run(broken, broken.request([data.user_ids.ids[0]]), K)
        assert result.stages[-1].stage == "rerank" and result.stages[-1].status == SKIPPED
        assert result.degraded.all() and (result.candidates.valid.sum(axis=1) == K).all()
    finally:
        faulty.release.set()
        runner.close()


def test_too_few_candidates_are_filled_from_the_fallback_and_flagged(data):
    cfg = config_from_dict({"channels": [{"kind": "itemcf", "quota": 30}], "retrieval_k": 40, "rank_k": 30})
    only_itemcf = fit_funnel(data, cfg, progress=False)
    runner = BudgetedRunner(Budget(total=5, channel_timeout=5, stage_timeout=5))
    try:
        result = runner.run(only_itemcf, only_itemcf.request(["nobody", data.user_ids.ids[0]]), K)
        assert result.degraded.tolist() == [True, False]  # an unknown user: itemcf finds nothing
        assert result.fallback_items.tolist()[0] == K and result.fallback_items.tolist()[1] == 0
        assert (result.candidates.valid.sum(axis=1) == K).all()
    finally:
        runner.close()


def test_a_failing_fallback_falls_back_to_the_static_list(data, funnel):
    import copy

    broken = copy.copy(funnel)
    broken.channels = [Faulty(c, "raise") for c in funnel.channels]
    static = funnel.fallback.retrieve(funnel.request(["nobody"]), 40)
    broken.fallback = Faulty(funnel.fallback, "raise")
    runner = BudgetedRunner(Budget(total=5, channel_timeout=5, stage_timeout=5))
    try:
        user = data.user_ids.ids[0]
        request = broken.request([user])
        result = runner.run(broken, request, K, static_fallback=static)
        got = result.candidates.item_index[0]
        assert (got >= 0).sum() == K and result.degraded.all()
        seen = set(request.exclude[0].indices.tolist())
        assert not seen & set(got.tolist())  # the static list still honours the exclusions
    finally:
        runner.close()
