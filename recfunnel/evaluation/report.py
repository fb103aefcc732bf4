"""The funnel report: what each stage keeps, loses and costs.

For every :class:`~recfunnel.types.StageTrace` of a request batch the report
gives the candidates in and out per user, the *candidate recall* after the
stage and the stage's latency. Candidate recall is the share of a user's
held-out items still present among the stage's output candidates,
|candidates ∩ rel| / |rel| (:func:`~recfunnel.evaluation.metrics.recall_at_k`
over all slots), averaged over the users that have at least one held-out item.
Reading it down the funnel shows where relevant items are lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recfunnel.evaluation.metrics import recall_at_k
from recfunnel.types import Candidates, StageTrace

__all__ = ["funnel_report", "merge_reports", "format_funnel_report"]


def funnel_report(
    traces: Sequence[StageTrace], relevant: sp.spmatrix | sp.sparray
) -> list[dict]:
    """One row per stage, in the order of ``traces``.

    Args:
        traces: the stage traces of one request batch of B users.
        relevant: (B, n_items) sparse held-out items, rows aligned with the batch.

    Returns:
        A list of dicts, one per stage, with keys:

        * ``stage``: stage name (a stage that did not run, status not ok, kept no candidates);
        * ``n_users``: B; ``n_users_relevant``: users with >= 1 held-out item;
        * ``candidates_in`` / ``candidates_out``: mean ``n_in`` / ``n_out`` over the B users;
        * ``recall``: mean candidate recall over users with held-out items (NaN if none);
        * ``seconds``: the stage's wall time per batch; ``ms_per_user``: 1000 · seconds / B;
        * ``n_batches``: 1 (merged reports sum it).

    >>> from recfunnel.types import Candidates
    >>> cands = Candidates(np.array([[3, 1], [2, -1]]), np.zeros((2, 2), np.float32))
    >>> trace = StageTrace("rank", np.array([4, 3]), np.array([2, 1]), 0.02, cands)
    >>> row = funnel_report([trace], sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 1]])))[0]
    >>> row["candidates_out"], row["recall"], row["ms_per_user"]
    (1.5, 0.5, 10.0)
    """
    relevant = sp.csr_matrix(relevant)
    rows = []
    for trace in traces:
        n_users = len(trace.n_out)
        # a stage that did not run (status not ok) kept nothing of its own
        candidates = Candidates.empty(n_users) if trace.candidates is None else trace.candidates
        if relevant.shape[0] != n_users or len(candidates) != n_users:
            raise ValueError(
                f"stage {trace.stage!r}: trace has {n_users} users, candidates "
                f"{len(candidates)}, relevant {relevant.shape[0]} rows"
            )
        recall = recall_at_k(candidates.item_index, relevant)
        has_relevant = ~np.isnan(recall)
        rows.append(
            {
                "stage": trace.stage,
                "n_users": n_users,
                "n_users_relevant": int(has_relevant.sum()),
                "candidates_in": float(np.mean(trace.n_in)) if n_users else math.nan,
                "candidates_out": float(np.mean(trace.n_out)) if n_users else math.nan,
                "recall": float(recall[has_relevant].mean()) if has_relevant.any() else math.nan,
                "seconds": float(trace.seconds),
                "ms_per_user": 1000.0 * trace.seconds / n_users if n_users else math.nan,
                "n_batches": 1,
            }
        )
    return rows


def merge_reports(reports: Sequence[list[dict]]) -> list[dict]:
    """Combine per-batch reports into one, stage by stage.

    Stages are matched by name and kept in order of first appearance; a stage
    absent from some batches is merged over the batches that have it. Means are
    weighted by users (``recall`` by users with held-out items), ``seconds`` is
    the mean wall time per batch and ``ms_per_user`` the total time over the
    total users. Merging merged reports gives the same result as merging the
    batches at once.

    Args:
        reports: outputs of :func:`funnel_report` (or of this function).

    Returns:
        One report with the keys of :func:`funnel_report`.
    """
    merged: dict[str, dict] = {}
    for report in reports:
        for row in report:
            acc = merged.setdefault(
                row["stage"],
                {"n_users": 0, "n_users_relevant": 0, "in": 0.0, "out": 0.0, "recall": 0.0,
                 "total_seconds": 0.0, "n_batches": 0},
            )
            n, n_rel = row["n_users"], row["n_users_relevant"]
            acc["n_users"] += n
            acc["n_users_relevant"] += n_rel
            acc["in"] += row["candidates_in"] * n if n else 0.0
            acc["out"] += row["candidates_out"] * n if n else 0.0
            acc["recall"] += row["recall"] * n_rel if n_rel else 0.0
            acc["total_seconds"] += row["seconds"] * row["n_batches"]
            acc["n_batches"] += row["n_batches"]
    out = []
    for stage, acc in merged.items():
        n, n_rel, batches = acc["n_users"], acc["n_users_relevant"], acc["n_batches"]
        out.append(
            {
                "stage": stage,
                "n_users": n,
                "n_users_relevant": n_rel,
                "candidates_in": acc["in"] / n if n else math.nan,
                "candidates_out": acc["out"] / n if n else math.nan,
                "recall": acc["recall"] / n_rel if n_rel else math.nan,
                "seconds": acc["total_seconds"] / batches if batches else math.nan,
                "ms_per_user": 1000.0 * acc["total_seconds"] / n if n else math.nan,
                "n_batches": batches,
            }
        )
    return out


def format_funnel_report(report: Sequence[dict]) -> str:
    """Aligned plain-text table of a funnel report.

    Args:
        report: output of :func:`funnel_report` or :func:`merge_reports`.

    Returns:
        The table: stage, users, candidates in/out, recall, s/batch, ms/user.

    >>> print(format_funnel_report([{"stage": "rank", "n_users": 2, "candidates_in": 3.5,
    ...     "candidates_out": 1.5, "recall": 0.5, "seconds": 0.02, "ms_per_user": 10.0}]))
    stage  users  cand_in  cand_out  recall  s/batch  ms/user
    rank       2      3.5       1.5  0.5000   0.0200   10.000
    """
    header = ["stage", "users", "cand_in", "cand_out", "recall", "s/batch", "ms/user"]
    rows = [
        [
            str(r["stage"]),
            str(r["n_users"]),
            f"{r['candidates_in']:.1f}",
            f"{r['candidates_out']:.1f}",
            f"{r['recall']:.4f}",
            f"{r['seconds']:.4f}",
            f"{r['ms_per_user']:.3f}",
        ]
        for r in report
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join([row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)])
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
