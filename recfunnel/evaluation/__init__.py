"""Evaluation: pure metric functions, the full-ranking evaluator, the funnel report.

* :mod:`~recfunnel.evaluation.metrics`: per-user top-K metrics, list-level
  metrics (coverage, novelty, diversity, exposure Gini), AUC / GAUC / logloss.
* :mod:`~recfunnel.evaluation.topk`: :func:`evaluate_topk` over given lists,
  :func:`full_ranking_evaluate` over the whole catalogue, :func:`format_table`.
* :mod:`~recfunnel.evaluation.report`: what each funnel stage keeps and costs.
* :mod:`~recfunnel.evaluation.html_report`: all of it as one self-contained HTML page.
"""

from recfunnel.evaluation.html_report import render_report, write_report
from recfunnel.evaluation.metrics import (
    auc,
    catalogue_coverage,
    exposure_counts,
    exposure_gini,
    gauc,
    gini_coefficient,
    hit_rate_at_k,
    intra_list_diversity,
    item_popularity,
    logloss,
    map_at_k,
    mrr,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)
from recfunnel.evaluation.report import format_funnel_report, funnel_report, merge_reports
from recfunnel.evaluation.topk import (
    evaluate_topk,
    format_table,
    full_ranking_evaluate,
    full_ranking_topk,
)

__all__ = [
    "auc",
    "catalogue_coverage",
    "evaluate_topk",
    "exposure_counts",
    "exposure_gini",
    "format_funnel_report",
    "format_table",
    "full_ranking_evaluate",
    "full_ranking_topk",
    "funnel_report",
    "gauc",
    "gini_coefficient",
    "hit_rate_at_k",
    "intra_list_diversity",
    "item_popularity",
    "logloss",
    "map_at_k",
    "merge_reports",
    "mrr",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
    "render_report",
    "write_report",
]
