"""One self-contained HTML report of an evaluated funnel.

:func:`render_report` turns the result of
:func:`~recfunnel.pipeline.offline.evaluate.evaluate_funnel` (called with
``keep_recommendations=True``) and the fitted funnel into a single HTML page:
no script, font or style sheet is loaded from anywhere, the plots are inline
SVG drawn with matplotlib's Agg-family SVG backend (``Figure`` objects, no
pyplot state), and every plot's numbers are also printed in a table beside it.

Sections (each a ``<section id=...>``): ``summary`` (data sizes, the funnel's
stages), ``metrics`` (every metric), ``funnel`` (candidates and candidate recall
after each channel and stage), ``latency`` (per stage), ``curves`` (recall@k and
NDCG@k over k), ``exposure`` (exposure against training popularity: long tail,
Gini, coverage), ``categories`` (category coverage), ``training`` (per-epoch
curves of the neural models, from :meth:`~recfunnel.stages.base.Stage.training_curves`)
and, when given, ``comparison`` (metrics of other funnels).

The output is deterministic for given inputs (fixed SVG hash salt, no dates), so
two reports of the same run can be diffed.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recfunnel.evaluation.metrics import exposure_counts, gini_coefficient
from recfunnel.evaluation.topk import evaluate_topk

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from recfunnel.pipeline.online.funnel import Funnel

__all__ = ["SECTIONS", "CURVE_KS", "render_report", "write_report"]

#: section ids, in page order (``comparison`` only when comparison rows are given)
SECTIONS = ("summary", "metrics", "comparison", "funnel", "latency", "curves", "exposure", "categories",
            "training")
#: cut-offs of the recall@k / NDCG@k curves (bounded by the longest list evaluated)
CURVE_KS = (1, 2, 3, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200)

_COLOURS = ("#3b6ea8", "#e07b39", "#5a9e5a", "#b04a5a", "#7b68a6", "#8c8c8c")
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1150px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em}
h3{font-size:1.05em}
section{margin-bottom:2.2em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border:1px solid #d6d6d6;padding:.2em .55em;text-align:right}
th{background:#f2f4f7}td:first-child,th:first-child{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
.plot{flex:1 1 560px;min-width:0}.plot svg{max-width:100%;height:auto}
.numbers{flex:0 1 auto;max-height:520px;overflow:auto}
.note{color:#555;font-size:.9em}
pre{background:#f6f8fa;padding:.6em;font-size:.8em;overflow:auto}
nav a{margin-right:.9em}
tr.best td{font-weight:bold;background:#fff6d6}
"""


# ---------------------------------------------------------------- public API
def render_report(
    evaluation: Mapping[str, Any],
    funnel: Funnel,
    *,
    title: str = "recfunnel evaluation report",
    comparison: Mapping[str, Mapping[str, float]] | None = None,
    run_info: Mapping[str, object] | None = None,
    curve_ks: Sequence[int] = CURVE_KS,
) -> str:
    """The report as one HTML document.

    Args:
        evaluation: the dict of :func:`~recfunnel.pipeline.offline.evaluate.evaluate_funnel`:
            ``metrics``, ``funnel`` and ``counts``; with ``recommendations`` (from
            ``keep_recommendations=True``) the curves, exposure and category sections are
            drawn, else they say how to get them.
        funnel: the evaluated funnel (its stages, training data sizes and training curves).
        title: the page title.
        comparison: other funnels' metrics, name -> metric -> value, shown as a table.
        run_info: extra lines of the run summary (e.g. the model directory), label -> value.
        curve_ks: cut-offs of the recall@k / NDCG@k curves; those above the longest list
            evaluated are dropped.

    Returns:
        The HTML text (UTF-8, no external resource).
    """
    import matplotlib

    recs = evaluation.get("recommendations")
    # constant hash salt and no date: the same run renders to the same bytes;
    # text stays text in the SVG (smaller, searchable, copyable)
    with matplotlib.rc_context({"svg.hashsalt": "recfunnel", "svg.fonttype": "none", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False}):
        sections = [
            _summary_section(evaluation, funnel, run_info or {}),
            _metrics_section(evaluation["metrics"]),
            _comparison_section(comparison) if comparison else "",
            _funnel_section(evaluation, recs),
            _latency_section(evaluation["funnel"]),
            _curves_section(evaluation, recs, funnel, curve_ks),
            _exposure_section(recs, evaluation["metrics"]),
            _categories_section(recs),
            _training_section(funnel),
        ]
    present = [s for s in SECTIONS if s != "comparison" or comparison]
    nav = " ".join(f'<a href="#{s}">{s}</a>' for s in present)
    body = "\n".join(s for s in sections if s)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_esc(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def write_report(path: str | Path, evaluation: Mapping[str, Any], funnel: Funnel, **kwargs: Any) -> Path:
    """Render the report (:func:`render_report`, same keyword arguments) and write it atomically.

    Returns:
        The path written.
    """
    from recfunnel.storage.artifacts import atomic_write_text

    path = Path(path)
    atomic_write_text(path, render_report(evaluation, funnel, **kwargs))
    return path


# ---------------------------------------------------------------- formatting
def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object, digits: int = 4) -> str:
    """Ints as ints, floats with ``digits`` decimals, NaN/None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{float(value):.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], *, cls: str = "",
           row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    lines = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        lines.append(f"<tr{rc}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _section(section_id: str, heading: str, *parts: str) -> str:
    return f'<section id="{section_id}">\n<h2>{_esc(heading)}</h2>\n' + "\n".join(p for p in parts if p) + \
        "\n</section>"


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _plot_row(svg: str, numbers: str) -> str:
    return f'<div class="row"><div class="plot">{svg}</div><div class="numbers">{numbers}</div></div>'


def _plot_above(svg: str, *tables: str) -> str:
    """A wide plot with its tables side by side under it."""
    return f'<div class="plot">{svg}</div><div class="row">' + "".join(f"<div>{t}</div>" for t in tables) + \
        "</div>"


def _svg(fig: Figure, key: str) -> str:
    """Inline SVG of ``fig``, its element ids prefixed with ``key`` (unique in the page)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and the DOCTYPE (a DTD URL)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", text)
    return text


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.set_axisbelow(True)
    return fig, axes


# ---------------------------------------------------------------- sections
def _summary_section(evaluation: Mapping[str, Any], funnel: Funnel, run_info: Mapping[str, object]) -> str:
    from recfunnel.config import config_to_dict

    history = funnel.history
    metrics = evaluation["metrics"]
    facts: list[tuple[str, object]] = [(str(k), v) for k, v in run_info.items()]
    facts += [
        ("training users", history.n_users),
        ("training items (catalogue)", history.n_items),
        ("training interactions", int(len(history.items))),
    ]
    facts += [(k.replace("_", " "), v) for k, v in evaluation.get("counts", {}).items()]
    facts.append(("users evaluated (>= 1 held-out item)", metrics.get("n_users")))
    facts_table = _table(["", "value"], [(k, _fmt(v)) for k, v in facts])
    cfg = funnel.config
    stage_rows = []
    for spec in cfg.channels:
        stage_rows.append(("retrieval channel", spec.name, spec.kind, spec.quota))
    stage_rows.append(("retrieval fallback", cfg.fallback.name, cfg.fallback.kind, ""))
    stage_rows.append(("merge", "retrieval", "quotas + fusion", f"retrieval_k={cfg.retrieval_k}"))
    if cfg.ranker is not None:
        stage_rows.append(("ranking", cfg.ranker.name, _stage_kind(cfg.ranker), f"rank_k={cfg.rank_k}"))
    if cfg.reranker is not None:
        stage_rows.append(("re-ranking", cfg.reranker.name, cfg.reranker.kind, ""))
    stages_table = _table(["role", "name", "kind", "quota / size"], stage_rows)
    config_json = json.dumps(config_to_dict(cfg), indent=2, default=str)
    return _section(
        "summary", "Run summary",
        '<div class="row"><div>' + facts_table + "</div><div>" + stages_table + "</div></div>",
        f"<details><summary>full config</summary><pre>{_esc(config_json)}</pre></details>",
    )


def _stage_kind(spec: Any) -> str:
    model = getattr(spec.config, "model", None)
    return f"{spec.kind} ({model})" if isinstance(model, str) else spec.kind


def _metrics_section(metrics: Mapping[str, float]) -> str:
    ks = sorted({int(k.split("@")[1]) for k in metrics if "@" in k and k.split("@")[1].isdigit()})
    names: list[str] = []
    for key in metrics:
        if "@" in key:
            name = key.split("@")[0]
            if name not in names:
                names.append(name)
    rows = [[name, *(_fmt(metrics.get(f"{name}@{k}")) for k in ks)] for name in names]
    grid = _table(["metric", *(f"@{k}" for k in ks)], rows)
    others = [(k, _fmt(v)) for k, v in metrics.items() if "@" not in k]
    return _section(
        "metrics", "Metrics",
        _note("Means over the users with at least one held-out item (full ranking, training items "
              "excluded). coverage: share of the catalogue recommended; gini: Gini of item exposure."),
        '<div class="row"><div>' + grid + "</div><div>" + _table(["metric", "value"], others) + "</div></div>",
    )


def _comparison_section(comparison: Mapping[str, Mapping[str, float]]) -> str:
    columns: list[str] = []
    for values in comparison.values():
        columns += [c for c in values if c not in columns]
    rows = [[name, *(_fmt(values.get(c)) for c in columns)] for name, values in comparison.items()]
    return _section("comparison", "Comparison of funnels", _table(["funnel", *columns], rows))


def _final_row(evaluation: Mapping[str, Any], recs: Mapping[str, Any] | None) -> dict | None:
    """The final lists as one more funnel row (the top-k cut is not traced without a re-ranker)."""
    if recs is None:
        return None
    item_index = np.asarray(recs["item_index"])
    k = item_index.shape[1]
    return {"stage": f"final top-{k}", "candidates_in": math.nan,
            "candidates_out": float((item_index >= 0).sum(axis=1).mean()) if len(item_index) else math.nan,
            "recall": evaluation["metrics"].get(f"recall@{k}", math.nan)}


def _funnel_section(evaluation: Mapping[str, Any], recs: Mapping[str, Any] | None) -> str:
    report = list(evaluation["funnel"])
    final = _final_row(evaluation, recs)
    rows = report + ([final] if final else [])
    if not rows:
        return _section("funnel", "Candidates and recall through the funnel", _note("no stage was traced"))
    labels = [r["stage"] for r in rows]
    fig, (ax_n, ax_r) = _figure(9.0, 0.45 * len(rows) + 1.3, ncols=2)
    y = np.arange(len(rows))[::-1]
    colours = [_COLOURS[0] if str(s).startswith("retrieval:") else _COLOURS[1] for s in labels]
    n_out = np.array([r["candidates_out"] for r in rows], float)
    recall = np.array([r["recall"] for r in rows], float)
    ax_n.barh(y, np.nan_to_num(n_out), color=colours)
    ax_n.set_yticks(y, labels)
    ax_n.set_xlabel("candidates per user (mean)")
    ax_r.barh(y, np.nan_to_num(recall), color=colours)
    ax_r.set_yticks(y, [])
    ax_r.set_xlabel("recall of the held-out items")
    ax_r.set_xlim(0, max(1e-9, float(np.nanmax(recall)) if np.isfinite(recall).any() else 1.0) * 1.18)
    for ax, values, digits in ((ax_n, n_out, 1), (ax_r, recall, 4)):
        for yi, v in zip(y, values, strict=True):
            if np.isfinite(v):
                ax.annotate(_fmt(float(v), digits), (v, yi), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=8)
    ax_n.set_xlim(0, max(1.0, float(np.nanmax(n_out)) if np.isfinite(n_out).any() else 1.0) * 1.18)
    svg = _svg(fig, "funnel")
    # a channel's or the merge's input is the catalogue (traced as 0)
    table = _table(["stage", "cand. in", "cand. out", "recall"],
                   [(r["stage"], "catalogue" if str(r["stage"]).startswith("retrieval") else
                     _fmt(r["candidates_in"], 1), _fmt(r["candidates_out"], 1), _fmt(r["recall"])) for r in rows])
    return _section(
        "funnel", "Candidates and recall through the funnel",
        _note("Per user, means over the evaluated users. retrieval:NAME rows are the channels (blue) "
              "before merging; retrieval is the merged, de-duplicated set. Recall is the share of each "
              "user's held-out items still among the candidates, over users with held-out items."),
        _plot_row(svg, table),
    )


def _latency_section(report: Sequence[Mapping[str, Any]]) -> str:
    rows = list(report)
    if not rows:
        return _section("latency", "Latency per stage", _note("no stage was traced"))
    labels = [r["stage"] for r in rows]
    ms = np.array([r["ms_per_user"] for r in rows], float)
    fig, (ax,) = _figure(6.5, 0.42 * len(rows) + 1.2)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, np.nan_to_num(ms), color=[_COLOURS[0] if s.startswith("retrieval:") else _COLOURS[2]
                                          for s in labels])
    ax.set_yticks(y, labels)
    ax.set_xlabel("milliseconds per user")
    for yi, v in zip(y, ms, strict=True):
        if np.isfinite(v):
            ax.annotate(_fmt(float(v), 3), (v, yi), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=8)
    ax.set_xlim(0, max(1e-6, float(np.nanmax(ms)) if np.isfinite(ms).any() else 1.0) * 1.22)
    top = [r for r in rows if not str(r["stage"]).startswith("retrieval:")]
    total_ms = sum(float(r["ms_per_user"]) for r in top)
    table = _table(["stage", "ms / user", "s / batch", "batches"],
                   [(r["stage"], _fmt(r["ms_per_user"], 3), _fmt(r["seconds"]), _fmt(r.get("n_batches")))
                    for r in rows] + [("total (retrieval + later stages)", _fmt(total_ms, 3), "", "")])
    return _section(
        "latency", "Latency per stage",
        _note("Wall time of batched offline evaluation: milliseconds per user (total time over users) and "
              "seconds per batch. The retrieval row includes its channels (blue), the merge and the fallback."),
        _plot_row(_svg(fig, "latency"), table),
    )


def _missing_recommendations(section_id: str, heading: str) -> str:
    return _section(section_id, heading, _note(
        "not available: the evaluation kept no recommendation lists "
        "(evaluate_funnel(..., keep_recommendations=True))"))


def _curves_section(evaluation: Mapping[str, Any], recs: Mapping[str, Any] | None, funnel: Funnel,
                    curve_ks: Sequence[int]) -> str:
    heading = "Recall@k and NDCG@k"
    if recs is None:
        return _missing_recommendations("curves", heading)
    item_index = np.asarray(recs["item_index"])
    k_max = item_index.shape[1]
    evaluated = [int(k.split("@")[1]) for k in evaluation["metrics"] if k.startswith("recall@")]
    ks = sorted({int(k) for k in (*curve_ks, *evaluated) if 1 <= int(k) <= k_max})
    if not ks:
        return _section("curves", heading, _note("no cut-off within the evaluated lists"))
    values = evaluate_topk(item_index, sp.csr_matrix(recs["relevant"]), ks, n_items=len(funnel.item_ids))
    recall = [values[f"recall@{k}"] for k in ks]
    ndcg = [values[f"ndcg@{k}"] for k in ks]
    fig, (ax,) = _figure(6.5, 3.4)
    ax.plot(ks, recall, marker="o", color=_COLOURS[0], label="recall@k")
    ax.plot(ks, ndcg, marker="s", color=_COLOURS[1], label="NDCG@k")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k (list length)")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    table = _table(["k", "recall@k", "NDCG@k"], [(k, _fmt(r), _fmt(n)) for k, r, n in zip(ks, recall, ndcg,
                                                                                          strict=True)])
    return _section(
        "curves", heading,
        _note(f"The same lists cut at every k up to {k_max}, over the users with held-out items."),
        _plot_row(_svg(fig, "curves"), table),
    )


def _exposed_rows(recs: Mapping[str, Any]) -> np.ndarray:
    """The lists of users with >= 1 held-out item: the users every metric is computed over."""
    relevant = sp.csr_matrix(recs["relevant"])
    has_relevant = np.diff(relevant.indptr) > 0
    return np.asarray(recs["item_index"])[has_relevant]


def _exposure_section(recs: Mapping[str, Any] | None, metrics: Mapping[str, float]) -> str:
    heading = "Exposure against item popularity"
    if recs is None:
        return _missing_recommendations("exposure", heading)
    item_index = _exposed_rows(recs)
    popularity = np.asarray(recs["item_popularity"], float)
    n_items = len(popularity)
    k = item_index.shape[1]
    exposure = exposure_counts(item_index, n_items).astype(float)
    if exposure.sum() == 0:
        return _section("exposure", heading, _note("no item was recommended"))
    order = np.argsort(-popularity, kind="stable")  # most popular first
    deciles = np.array_split(order, min(10, n_items))
    pop_share = popularity / popularity.sum() if popularity.sum() > 0 else np.zeros(n_items)
    exp_share = exposure / exposure.sum()
    dec_rows = []
    for d, idx in enumerate(deciles):
        dec_rows.append((d + 1, len(idx), float(pop_share[idx].sum()), float(exp_share[idx].sum()),
                         float(np.count_nonzero(exposure[idx]) / max(len(idx), 1))))
    head = order[: max(1, int(round(0.2 * n_items)))]
    tail_share = 1.0 - float(exp_share[head].sum())
    train_tail_share = 1.0 - float(pop_share[head].sum())
    gini = gini_coefficient(exposure)
    train_gini = gini_coefficient(popularity)
    coverage = float(np.count_nonzero(exposure) / n_items)

    fig, (ax_d, ax_c) = _figure(11.0, 3.6, ncols=2)
    x = np.arange(1, len(deciles) + 1)
    ax_d.bar(x - 0.2, [r[2] for r in dec_rows], width=0.4, color=_COLOURS[5], label="training interactions")
    ax_d.bar(x + 0.2, [r[3] for r in dec_rows], width=0.4, color=_COLOURS[0], label=f"exposure in top-{k}")
    ax_d.set_xticks(x, [str(i) for i in x])
    ax_d.set_xlabel("popularity decile of the items (1 = most popular)")
    ax_d.set_ylabel("share")
    ax_d.legend(frameon=False)
    # at most ~500 points per curve: a catalogue of millions would otherwise be megabytes of SVG
    at = np.unique(np.linspace(0, n_items - 1, min(n_items, 500)).astype(np.int64))
    catalogue = np.concatenate([[0.0], (at + 1) / n_items])
    ax_c.plot(catalogue, np.concatenate([[0.0], np.cumsum(pop_share[order])[at]]), color=_COLOURS[5],
              label="training interactions")
    ax_c.plot(catalogue, np.concatenate([[0.0], np.cumsum(exp_share[order])[at]]), color=_COLOURS[0],
              label=f"exposure (Gini {gini:.4f})")
    ax_c.axvline(0.2, color="#999999", linestyle=":", linewidth=1)
    ax_c.set_xlabel("share of the catalogue, most popular items first")
    ax_c.set_ylabel("cumulative share")
    ax_c.set_xlim(0, 1)
    ax_c.set_ylim(0, 1.02)
    ax_c.legend(frameon=False, loc="lower right")
    summary = _table(["", "value"], [
        (f"Gini of exposure (top-{k})", _fmt(gini)),
        ("Gini of training popularity", _fmt(train_gini)),
        (f"coverage (top-{k})", _fmt(coverage)),
        ("items recommended", int(np.count_nonzero(exposure))),
        ("items without training interactions", int(np.count_nonzero(popularity == 0))),
        ("exposure share of the long tail (all but the 20% most popular)", _fmt(tail_share)),
        ("training interactions in the long tail", _fmt(train_tail_share)),
    ])
    deciles_table = _table(["decile", "items", "training share", "exposure share", "items exposed"],
                           [(d, n, _fmt(p), _fmt(e), _fmt(c)) for d, n, p, e, c in dec_rows])
    gini_metric = metrics.get(f"gini@{k}")
    note = (f"Slots of the top-{k} lists of the {len(item_index)} users with held-out items, per item, "
            "against the item's training popularity (users who interacted with it).")
    if gini_metric is not None:
        note += f" The Gini equals the metrics table's gini@{k}."
    return _section("exposure", heading, _note(note), _plot_above(_svg(fig, "exposure"), summary, deciles_table))


def _categories_section(recs: Mapping[str, Any] | None) -> str:
    heading = "Category coverage"
    if recs is None:
        return _missing_recommendations("categories", heading)
    category = recs.get("item_category")
    if category is None:
        return _section("categories", heading, _note("no category data: the items have no category column "
                                                     "given to the evaluation, so no category plot."))
    category = np.asarray(category)
    item_index = _exposed_rows(recs)
    k = item_index.shape[1]
    exposure = exposure_counts(item_index, len(category)).astype(float)
    has = category >= 0
    codes, slot = np.unique(category[has], return_inverse=True)
    if len(codes) == 0:
        return _section("categories", heading, _note("no item has a category: no category plot."))
    items_per = np.bincount(slot, minlength=len(codes)).astype(float)
    exposure_per = np.bincount(slot, weights=exposure[has], minlength=len(codes))
    reached = int(np.count_nonzero(exposure_per))
    total_exposure = max(exposure_per.sum(), 1.0)
    order = np.argsort(-items_per, kind="stable")
    shown = order[:30]
    fig, (ax,) = _figure(9.0, 3.4)
    x = np.arange(len(shown))
    ax.bar(x - 0.2, items_per[shown] / items_per.sum(), width=0.4, color=_COLOURS[5], label="share of the catalogue")
    ax.bar(x + 0.2, exposure_per[shown] / total_exposure, width=0.4, color=_COLOURS[2],
           label=f"share of exposure (top-{k})")
    ax.set_xticks(x, [str(int(codes[i])) for i in shown], fontsize=7)
    ax.set_xlabel("category (largest first)")
    ax.set_ylabel("share")
    ax.legend(frameon=False)
    summary = _table(["", "value"], [
        ("categories in the catalogue", len(codes)),
        (f"categories reached (top-{k})", reached),
        ("category coverage", _fmt(reached / len(codes))),
    ])
    per_cat = _table(["category", "items", "catalogue share", "exposure share"],
                     [(int(codes[i]), int(items_per[i]), _fmt(items_per[i] / items_per.sum()),
                       _fmt(exposure_per[i] / total_exposure)) for i in shown])
    more = _note(f"{len(codes) - len(shown)} smaller categories not shown.") if len(codes) > len(shown) else ""
    return _section(
        "categories", heading,
        _note(f"Category coverage: share of the catalogue's categories with at least one item in the "
              f"top-{k} lists of the users with held-out items."),
        _plot_row(_svg(fig, "categories"), summary + per_cat + more),
    )


def _training_section(funnel: Funnel) -> str:
    heading = "Training curves of the neural models"
    parts = []
    for spec, stage in funnel.stages():
        for model, curves in stage.training_curves().items():
            parts.append(_training_curves(f"{spec.name}: {model}", curves, key=f"training-{len(parts)}"))
    if not parts:
        return _section("training", heading, _note("no neural model in this funnel"))
    return _section(
        "training", heading,
        _note("Training loss and validation metric after each epoch; the starred epoch is the one kept "
              "(restore_best) and served."),
        *parts,
    )


def _training_curves(label: str, curves: Mapping[str, Any], key: str) -> str:
    loss = [float(v) for v in curves.get("train_loss", [])]
    valid = [float(v) for v in curves.get("valid_metric", [])]
    metric = str(curves.get("metric") or "validation metric")
    best = curves.get("best_epoch")
    best = int(best) if best is not None and int(best) >= 0 else None
    n = max(len(loss), len(valid))
    epochs = np.arange(1, n + 1)
    fig, (ax_l, ax_v) = _figure(8.5, 2.8, ncols=2)
    if loss:
        ax_l.plot(epochs[: len(loss)], loss, marker="o", color=_COLOURS[0])
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("training loss")
    if valid:
        ax_v.plot(epochs[: len(valid)], valid, marker="o", color=_COLOURS[1])
        if best is not None and best < len(valid):
            ax_v.plot([best + 1], [valid[best]], marker="*", markersize=14, color=_COLOURS[3], linestyle="none",
                      label=f"best: epoch {best + 1}, {valid[best]:.4f}")
            ax_v.legend(frameon=False)
    else:
        ax_v.text(0.5, 0.5, "no validation rows", ha="center", va="center", transform=ax_v.transAxes)
    if best is not None:
        for ax in (ax_l, ax_v):
            ax.axvline(best + 1, color="#999999", linestyle=":", linewidth=1)
    ax_v.set_xlabel("epoch")
    ax_v.set_ylabel(f"validation {metric}")
    for ax in (ax_l, ax_v):
        ax.set_xticks(epochs)
        ax.margins(x=0.06, y=0.14)
    rows = [(e, _fmt(loss[e - 1]) if e <= len(loss) else "", _fmt(valid[e - 1]) if e <= len(valid) else "",
             "*" if best is not None and e == best + 1 else "") for e in epochs]
    table = _table(["epoch", "train loss", f"valid {metric}", "best"], rows,
                   row_classes=["best" if r[3] else "" for r in rows])
    return f"<h3>{_esc(label)}</h3>\n" + _plot_row(_svg(fig, key), table)
