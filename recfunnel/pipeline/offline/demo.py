"""``recfunnel demo``: simulate a small platform, fit the funnel, evaluate it.

The simulator's oracle also says how relevant the recommended items truly are,
which MovieLens-style logs cannot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recfunnel.config import config_from_dict, default_config
from recfunnel.data.dataset import build_training_data
from recfunnel.data.loaders import load_interactions, load_items, load_users
from recfunnel.data.splits import split_global_time
from recfunnel.evaluation import format_funnel_report
from recfunnel.evaluation.html_report import write_report
from recfunnel.pipeline.offline.evaluate import evaluate_funnel, item_category_codes
from recfunnel.pipeline.offline.fit import fit_funnel

DEMO_USERS = 2_000
DEMO_ITEMS = 4_000
DEMO_DAYS = 14


def run_demo(out: Path, *, progress: bool = True, log: Callable[[str], None] = print, seed: int = 0) -> int:
    from recfunnel.data.simulator import Oracle, SimulatorConfig, simulate

    t_start = time.perf_counter()
    sim_dir = out / "platform"
    log(f"[1/4] simulating {DEMO_USERS:,} users, {DEMO_ITEMS:,} items, {DEMO_DAYS} days -> {sim_dir}")
    simulate(SimulatorConfig(n_users=DEMO_USERS, n_items=DEMO_ITEMS, n_days=DEMO_DAYS, seed=seed,
                             n_authors=DEMO_ITEMS // 20), sim_dir, progress=progress, overwrite=True)
    interactions = load_interactions(sim_dir / "interactions.parquet")
    users = load_users(sim_dir / "users.parquet")
    items = load_items(sim_dir / "items.parquet")
    # the last two days are the future the funnel is judged on
    cutoff = int(interactions["timestamp"].max()) - 2 * 86_400
    train, test = split_global_time(interactions, cutoff=cutoff)
    log(f"[2/4] fitting the funnel on {len(train):,} clicks (test: {len(test):,} clicks after the cutoff)")
    data = build_training_data(train, users, items)
    rows = {}
    configs = {
        "popular": config_from_dict({"channels": [{"kind": "popular", "quota": 300}]}),
        "retrieval only": config_from_dict({"channels": [{"kind": "itemcf", "quota": 300},
                                                         {"kind": "popular", "quota": 100}]}),
        "default funnel": default_config(),
    }
    funnels = {}
    for name, cfg in configs.items():
        funnels[name] = fit_funnel(data, cfg, progress=progress and name == "default funnel", log=log)
    funnels["default funnel"].save(out / "model")
    log("[3/4] evaluating on the held-out days (full ranking, training items excluded)")
    oracle = Oracle.load(sim_dir)
    category = item_category_codes(items, funnels["default funnel"].item_ids.ids, "category")
    results = {}
    for name, funnel in funnels.items():
        # the evaluation's own lists give the oracle's score and the report: the funnel runs once
        res = evaluate_funnel(funnel, test, (10, 20, 50), item_category=category, keep_recommendations=True,
                              progress=progress)
        lists = res["recommendations"]
        top10 = lists["item_index"][:, :10]
        rows_, cols_ = np.nonzero(top10 >= 0)
        res["metrics"]["oracle_relevance@10"] = float(np.mean(oracle.relevance(
            np.asarray(lists["user_ids"], dtype=str)[rows_], funnel.item_ids.to_ids(top10[rows_, cols_]).astype(str))))
        if name != "default funnel":
            del res["recommendations"]
        results[name] = res
        m = res["metrics"]
        rows[name] = {k: m.get(k, float("nan")) for k in (
            "recall@10", "ndcg@10", "recall@50", "ndcg@50", "coverage@50", "diversity_category@50",
            "oracle_relevance@10")}
    log("[4/4] results")
    print(_table(rows))
    print()
    print("Funnel report (default funnel):")
    print(format_funnel_report(results["default funnel"]["funnel"]))
    report = write_report(out / "report.html", results["default funnel"], funnels["default funnel"],
                          title="recfunnel demo: the default funnel on a simulated platform", comparison=rows,
                          run_info={"simulated platform": f"{DEMO_USERS:,} users, {DEMO_ITEMS:,} items, "
                                                          f"{DEMO_DAYS} days, seed {seed}",
                                    "test": "the last two days"})
    print(f"\ndemo finished in {time.perf_counter() - t_start:.0f}s; model in {out / 'model'}")
    print(f"report: {report}")
    return 0


def _table(rows: dict[str, dict[str, float]]) -> str:
    cols = list(next(iter(rows.values())))
    width = max(len(n) for n in rows)
    lines = ["| " + "model".ljust(width) + " | " + " | ".join(cols) + " |",
             "|" + "-" * (width + 2) + "|" + "|".join("-" * (len(c) + 2) for c in cols) + "|"]
    for name, vals in rows.items():
        lines.append("| " + name.ljust(width) + " | " + " | ".join(f"{vals[c]:.4f}".rjust(len(c)) for c in cols) + " |")
    return "\n".join(lines)
