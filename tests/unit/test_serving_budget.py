"""Budgets and degradation: a channel or stage that raises or hangs never costs an answer.

The service's runner (:class:`BudgetedRunner` / :class:`BudgetedRun`) driving :meth:`Funnel.run`.
"""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.pipeline.online.runners import Budget, BudgetedRunner, PlainRunner
from recfunnel.testing.synthetic import make_planted_data
from recfunnel.types import BUSY, ERROR, OK, SKIPPED, TIMEOUT

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


def run_budgeted(runner, funnel, request, k, static_fallback=None):
    """One request through ``Funnel.run`` under a budgeted run, as the service does."""
    run = runner.start(static_fallback)
    candidates, traces = funnel.run(request, k, trace=True, runner=run)
    return SimpleNamespace(candidates=candidates, stages=traces, degraded=run.degraded, reasons=run.reasons,
                           fallback_items=run.fallback_items, dropped=[t.stage for t in traces if t.status != OK])


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
        result = run_budgeted(runner, funnel, request, K)
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
            result = run_budgeted(runner, broken, broken.request([user]), K)
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
            result = run_budgeted(runner, broken, broken.request([user]), K)
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
        result = run_budgeted(runner, broken, broken.request([data.user_ids.ids[0]]), K)
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
        result = run_budgeted(runner, ranked, ranked.request([data.user_ids.ids[0]]), K)
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
        result = run_budgeted(runner, broken, broken.request([data.user_ids.ids[0]]), K)
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
        result = run_budgeted(runner, only_itemcf, only_itemcf.request(["nobody", data.user_ids.ids[0]]), K)
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
        result = run_budgeted(runner, broken, request, K, static)
        got = result.candidates.item_index[0]
        assert (got >= 0).sum() == K and result.degraded.all()
        seen = set(request.exclude[0].indices.tolist())
        assert not seen & set(got.tolist())  # the static list still honours the exclusions
        fallback = next(s for s in result.stages if s.stage == "retrieval:fallback")
        assert fallback.status == ERROR and "channel exploded" in fallback.error
    finally:
        runner.close()


@pytest.fixture(scope="module")
def ranked_funnel(data):
    cfg = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20}],
        "ranker": {"kind": "lightgbm", "params": {"n_estimators": 10, "min_child_samples": 5, "num_threads": 1}},
        "reranker": {"kind": "mmr"}, "retrieval_k": 40, "rank_k": 30, "history_length": 20,
    })
    return fit_funnel(data, cfg, progress=False)


def test_budgeted_and_plain_runners_give_the_same_answer_when_nothing_is_late(data, ranked_funnel):
    runner = BudgetedRunner(Budget(total=30, channel_timeout=30, stage_timeout=30))
    try:
        request = ranked_funnel.request(list(data.user_ids.ids[:8]) + ["nobody"])
        plain, plain_traces = ranked_funnel.run(request, K, trace=True, runner=PlainRunner())
        default, _ = ranked_funnel.run(request, K)
        result = run_budgeted(runner, ranked_funnel, request, K)
        for other in (default, result.candidates):
            np.testing.assert_array_equal(other.item_index, plain.item_index)
            np.testing.assert_array_equal(other.score, plain.score)
        assert [t.stage for t in result.stages] == [t.stage for t in plain_traces] == [
            "retrieval:itemcf", "retrieval:popular", "retrieval", "rank", "rerank"]
        assert {t.status for t in result.stages} == {t.status for t in plain_traces} == {OK}
        for budgeted, inline in zip(result.stages, plain_traces, strict=True):
            np.testing.assert_array_equal(budgeted.n_out, inline.n_out)
            np.testing.assert_array_equal(budgeted.n_in, inline.n_in)
    finally:
        runner.close()


def test_a_raising_stage_gives_an_error_trace_and_keeps_the_previous_order(data, ranked_funnel):
    import copy

    broken = copy.copy(ranked_funnel)
    broken.ranker = Faulty(ranked_funnel.ranker, "raise")
    runner = BudgetedRunner(Budget(total=5, channel_timeout=5, stage_timeout=5))
    try:
        request = broken.request([data.user_ids.ids[0]])
        result = run_budgeted(runner, broken, request, K)
        rank = next(t for t in result.stages if t.stage == "rank")
        assert rank.status == ERROR and rank.error == "RuntimeError: channel exploded" and rank.candidates is None
        assert result.dropped == ["rank"] and result.degraded.all()
        assert any("rank error: RuntimeError: channel exploded" in r for r in result.reasons)
        assert result.stages[-1].stage == "rerank" and result.stages[-1].status == OK
        assert (result.candidates.valid.sum(axis=1) == K).all()
        with pytest.raises(RuntimeError, match="channel exploded"):  # the plain runner lets it propagate
            broken.run(request, K)
    finally:
        runner.close()


def test_a_budgeted_run_serves_one_request(data, funnel):
    runner = BudgetedRunner(Budget(total=5, channel_timeout=5, stage_timeout=5))
    try:
        run = runner.start()
        request = funnel.request([data.user_ids.ids[0]])
        funnel.run(request, K, runner=run)
        with pytest.raises(RuntimeError, match="one request"):
            funnel.run(request, K, runner=run)
    finally:
        runner.close()
