"""Offline evaluation of a fitted funnel on held-out interactions.

Full ranking: every item of the catalogue may be recommended except the items
the user had in training; a held-out event on such an item, or on an item the
model has never seen, cannot be hit and is dropped from the relevant set (the
counts are reported).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from recfunnel.errors import DataError
from recfunnel.evaluation import evaluate_topk, funnel_report, merge_reports
from recfunnel.pipeline.online.funnel import Funnel

#: item columns taken as the category (first found; a multi-value column gives its first value)
CATEGORY_COLUMNS = ("category", "category_id", "cate_id", "genre", "genres", "class")


def item_category_codes(items: pd.DataFrame, item_ids: Sequence[str], column: str | None = None) -> np.ndarray | None:
    """(n_items,) int64 category code of each of ``item_ids`` (-1: unknown), or None without one.

    Args:
        items: an item table indexed by item id (:func:`~recfunnel.data.loaders.load_items`).
        item_ids: the model's item ids, in its index order.
        column: the category column; default the first of :data:`CATEGORY_COLUMNS` present.

    >>> items = pd.DataFrame({"genres": [("Drama", "War"), ("Comedy",), ()]}, index=["a", "b", "c"])
    >>> item_category_codes(items, ["b", "a", "c", "z"]).tolist()
    [0, 1, -1, -1]
    """
    if column is None:
        column = next((c for c in items.columns if str(c).lower() in CATEGORY_COLUMNS), None)
        if column is None:
            return None
    elif column not in items.columns:
        raise DataError(f"no item column '{column}'; columns found: {[str(c) for c in items.columns]}")

    def first(value: object) -> object:
        if isinstance(value, tuple | list):
            return value[0] if len(value) else None
        return value

    values = items[column].map(first).reindex(pd.Index(np.asarray(item_ids, dtype=object), dtype=object))
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64)


def evaluate_funnel(
    funnel: Funnel,
    test: pd.DataFrame,
    ks: Sequence[int] = (10, 20, 50),
    *,
    item_category: np.ndarray | None = None,
    batch_size: int = 512,
    progress: bool = False,
    keep_recommendations: bool = False,
) -> dict:
    """Metrics of ``funnel`` on ``test`` (columns user_id, item_id[, label]).

    Args:
        keep_recommendations: also return the lists and what they were judged against (for
            :func:`~recfunnel.evaluation.html_report.render_report`); arrays, so not JSON.

    Returns:
        dict with ``metrics`` (name -> value), ``funnel`` (the per-stage report) and ``counts``;
        with ``keep_recommendations``, also ``recommendations``: ``user_ids`` (U,) the test users,
        ``item_index`` (U, max(ks)) int64 item indices best first (-1 padded), ``relevant``
        (U, n_items) CSR held-out items that can be hit, ``item_popularity`` (n_items,) share of
        training users per item and ``item_category`` (the argument, or None).
    """
    if "label" in test.columns:
        test = test[test["label"] > 0]
    if len(test) == 0:
        raise DataError("the test set has no positive interactions")
    ks = sorted(set(int(k) for k in ks))
    k_max = ks[-1]
    users = pd.unique(test["user_id"].astype(str))
    user_pos = pd.Index(users)
    items = funnel.item_ids.index(test["item_id"].to_numpy())
    rows = user_pos.get_indexer(test["user_id"].astype(str))
    known_item = items >= 0
    relevant = sp.csr_matrix((np.ones(known_item.sum(), np.float32), (rows[known_item], items[known_item])),
                             shape=(len(users), len(funnel.item_ids)))
    relevant.sum_duplicates()
    relevant.data[:] = 1.0
    # items already in the user's training history are excluded from recommendation: they cannot count
    seen = funnel.request(users, exclude_seen=True).exclude if len(users) else None
    n_before = relevant.nnz
    if seen is not None:
        relevant = (relevant - relevant.multiply(seen > 0)).tocsr()
        relevant.eliminate_zeros()
    if relevant.nnz == 0:
        raise DataError(
            f"no test pair can be scored: of {len(test):,} test interactions, {int((~known_item).sum()):,} are on "
            f"items the model never saw and {n_before - relevant.nnz:,} were already in the users' training "
            "history (recommendations exclude them); evaluate on interactions held out from the training "
            "file, e.g. the test.csv of `recfunnel split`")
    counts = {
        "test_users": int(len(users)),
        "test_users_unknown_to_model": int((funnel.user_ids.index(users) < 0).sum()),
        "test_pairs": int(len(test)),
        "test_pairs_unknown_item": int((~known_item).sum()),
        "test_pairs_seen_in_training": int(n_before - relevant.nnz),
    }

    recommended = np.full((len(users), k_max), -1, np.int64)
    reports = []
    bar = tqdm(total=len(users), desc="evaluate", unit="user", disable=not progress)
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        out, traces = funnel.run(funnel.request(chunk), k_max, trace=True)
        width = min(k_max, out.item_index.shape[1])
        recommended[start:start + len(chunk), :width] = out.item_index[:, :width]
        reports.append(funnel_report(traces, relevant[start:start + len(chunk)]))
        bar.update(len(chunk))
    bar.close()
    popularity = np.asarray(funnel.history.seen.sum(axis=0)).ravel() / max(funnel.history.n_users, 1)
    metrics = evaluate_topk(recommended, relevant, ks, n_items=len(funnel.item_ids),
                            item_popularity=popularity, item_category=item_category)
    result = {"metrics": metrics, "funnel": merge_reports(reports), "counts": counts}
    if keep_recommendations:
        result["recommendations"] = {"user_ids": users, "item_index": recommended, "relevant": relevant,
                                     "item_popularity": popularity, "item_category": item_category}
    return result
