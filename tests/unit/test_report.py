"""Funnel report from hand-built stage traces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.evaluation.report import format_funnel_report, funnel_report, merge_reports
from recfunnel.types import Candidates, StageTrace


def candidates(items: list[list[int]]) -> Candidates:
    item_index = np.array(items, dtype=np.int64)
    score = np.where(item_index >= 0, 1.0, -np.inf).astype(np.float32)
    return Candidates(item_index, score)


def trace(stage: str, items: list[list[int]], n_in: list[int], seconds: float) -> StageTrace:
    c = candidates(items)
    return StageTrace(stage, np.array(n_in), (c.item_index >= 0).sum(axis=1), seconds, c)


# 3 users, 8 items. Held-out: user 0 {1, 5}, user 1 {2}, user 2 nothing.
RELEVANT = sp.csr_matrix(np.array([
    [0, 1, 0, 0, 0, 1, 0, 0],
    [0, 0, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
], dtype=np.float32))

TRACES = [
    # retrieval keeps user 0's {1, 5} and user 1's {2}: recall 1
    trace("retrieval", [[1, 5, 0, 3], [2, 4, 6, -1], [0, 1, -1, -1]], [0, 0, 0], 0.030),
    # rank drops item 5: user 0 -> 1/2, user 1 -> 1; mean over users with held-out items = 0.75
    trace("rank", [[1, 0], [4, 2], [0, 1]], [4, 3, 2], 0.006),
    # rerank keeps one item: user 0 -> 1/2, user 1 -> 0
    trace("rerank", [[1], [4], [0]], [2, 2, 2], 0.003),
]


def test_funnel_report_rows():
    report = funnel_report(TRACES, RELEVANT)
    assert [r["stage"] for r in report] == ["retrieval", "rank", "rerank"]
    retrieval, rank, rerank = report
    assert retrieval["n_users"] == 3 and retrieval["n_users_relevant"] == 2
    assert retrieval["candidates_in"] == 0.0
    assert retrieval["candidates_out"] == pytest.approx((4 + 3 + 2) / 3)
    assert retrieval["recall"] == 1.0
    assert rank["candidates_in"] == pytest.approx(3.0)
    assert rank["candidates_out"] == 2.0
    assert rank["recall"] == pytest.approx(0.75)
    assert rerank["recall"] == pytest.approx(0.25)
    assert rerank["seconds"] == pytest.approx(0.003)
    assert rerank["ms_per_user"] == pytest.approx(1.0)  # 3 ms over 3 users
    assert all(r["n_batches"] == 1 for r in report)


def test_no_relevant_items_gives_nan_recall():
    report = funnel_report(TRACES[:1], sp.csr_matrix((3, 8)))
    assert report[0]["n_users_relevant"] == 0 and math.isnan(report[0]["recall"])


def test_empty_candidates():
    empty = StageTrace("retrieval:popular", np.zeros(3, np.int64), np.zeros(3, np.int64), 0.0, Candidates.empty(3))
    row = funnel_report([empty], RELEVANT)[0]
    assert row["stage"] == "retrieval:popular"
    assert row["recall"] == 0.0 and row["candidates_out"] == 0.0


def test_misaligned_relevant_raises():
    with pytest.raises(ValueError, match="rows"):
        funnel_report(TRACES, RELEVANT[:2])


def test_merge_weights_by_users():
    batch_a = funnel_report(TRACES, RELEVANT)  # 3 users, 2 with held-out items
    # a second batch of one user: retrieval only, recall 0, 10 candidates, 0.010 s
    one = StageTrace("retrieval", np.array([0]), np.array([10]), 0.010, candidates([[7] * 10]))
    batch_b = funnel_report([one], sp.csr_matrix(np.eye(1, 8)))
    merged = merge_reports([batch_a, batch_b])
    assert [r["stage"] for r in merged] == ["retrieval", "rank", "rerank"]
    retrieval = merged[0]
    assert retrieval["n_users"] == 4 and retrieval["n_users_relevant"] == 3 and retrieval["n_batches"] == 2
    assert retrieval["candidates_out"] == pytest.approx((9 + 10) / 4)
    assert retrieval["recall"] == pytest.approx((1.0 * 2 + 0.0 * 1) / 3)
    assert retrieval["seconds"] == pytest.approx((0.030 + 0.010) / 2)  # per batch
    assert retrieval["ms_per_user"] == pytest.approx(40.0 / 4)
    # stages only in batch a keep batch a's values
    assert merged[1]["recall"] == pytest.approx(0.75) and merged[1]["n_batches"] == 1


def test_merge_is_associative():
    reports = [funnel_report(TRACES, RELEVANT), funnel_report(TRACES[:2], RELEVANT), funnel_report(TRACES, RELEVANT)]
    at_once = merge_reports(reports)
    stepwise = merge_reports([merge_reports(reports[:2]), reports[2]])
    for a, b in zip(at_once, stepwise, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key]), key
    assert merge_reports([]) == []


def test_format_funnel_report():
    text = format_funnel_report(funnel_report(TRACES, RELEVANT))
    lines = text.splitlines()
    assert lines[0].split() == ["stage", "users", "cand_in", "cand_out", "recall", "s/batch", "ms/user"]
    assert lines[2].split() == ["rank", "3", "3.0", "2.0", "0.7500", "0.0060", "2.000"]
    # right-aligned numeric columns end at the same offsets on every line
    assert len({len(line) for line in lines}) == 1
