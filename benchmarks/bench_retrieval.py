"""Retrieval benchmark on ML-100K: every channel alone and the merged set.

Protocol: per-user temporal 80/20 split, each user's training items excluded,
requests built as of the end of training with the default history length; for
each channel: recall@50/200/500, catalogue coverage@500, fit time and retrieval
time per user; the merged set is the funnel's retrieval (quotas + reciprocal-rank
fusion) at 500 candidates. ItemCF is compared with `implicit`'s
CosineRecommender at the same number of neighbours, in the same run.

    python benchmarks/bench_retrieval.py [--data ../shared/data/ml-100k] [--out bench-out/retrieval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
KS = (50, 200, 500)

# (row name, registry kind, params): channels that can run on ML-100K (no publish times,
# no content vectors, no authors or locations: those channels are benchmarked on the simulator)
CHANNELS = [
    ("popular", "popular", {}),
    ("itemcf", "itemcf", {}),
    ("itemcf (20 neighbours)", "itemcf", {"neighbours": 20}),
    ("usercf", "usercf", {}),
    ("swing", "swing", {}),
    ("als", "als", {}),
    ("bpr", "bpr", {}),
    ("ease", "ease", {}),
    ("item2vec", "item2vec", {}),
    ("deepwalk", "deepwalk", {}),
    ("node2vec", "node2vec", {}),
    ("eges", "eges", {}),
    ("category_index", "category_index", {}),
    ("cluster", "cluster", {}),
    ("lookalike", "lookalike", {}),
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "retrieval.json")
    parser.add_argument("--channels", default="", help="comma-separated row names to run (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from recfunnel.config import build_dataclass, config_from_dict
    from recfunnel.config.registry import config_class, stage_class
    from recfunnel.data.dataset import build_training_data
    from recfunnel.data.loaders import load_interactions, load_items, load_users
    from recfunnel.data.splits import split_user_ratio
    from recfunnel.evaluation import evaluate_topk, format_table
    from recfunnel.pipeline.online.funnel import Funnel
    from recfunnel.storage.user_history import UserHistoryStore

    if not (args.data / "ml-100k.inter").exists():
        print(f"ML-100K not found at {args.data}; skipping", file=sys.stderr)
        return {}
    interactions = load_interactions(args.data / "ml-100k.inter")
    train, test = split_user_ratio(interactions, test_ratio=0.2)
    data = build_training_data(train, load_users(args.data / "ml-100k.user"), load_items(args.data / "ml-100k.item"))
    store = UserHistoryStore(data.interactions)
    users = np.unique(data.user_ids.index(test["user_id"].to_numpy()))
    users = users[users >= 0]
    u = data.user_ids.index(test["user_id"].to_numpy())
    i = data.item_ids.index(test["item_id"].to_numpy())
    ok = (u >= 0) & (i >= 0)
    relevant = sp.csr_matrix((np.ones(ok.sum(), np.float32), (u[ok], i[ok])), shape=(data.n_users, data.n_items))
    relevant.data[:] = 1.0
    relevant = relevant[users]
    request = store.request(users, history_length=100)
    wanted = {c.strip() for c in args.channels.split(",") if c.strip()}

    results: dict[str, dict[str, float]] = {}
    fitted = {}
    for row, kind, params in CHANNELS:
        if wanted and row not in wanted:
            continue
        try:
            cfg = build_dataclass(config_class(kind), params, kind)
        except Exception as e:  # noqa: BLE001 - a channel missing from this build is reported, not fatal
            print(f"skip {row}: {e}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        stage = stage_class(kind)(cfg, row.split(" ")[0]).fit(data)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = stage.retrieve(request, max(KS))
        retrieve_s = time.perf_counter() - t0
        rec = np.full((len(users), max(KS)), -1, np.int64)
        rec[:, : out.item_index.shape[1]] = out.item_index[:, : max(KS)]
        m = evaluate_topk(rec, relevant, KS, n_items=data.n_items)
        results[row] = {**{f"recall@{k}": m[f"recall@{k}"] for k in KS}, "coverage@500": m["coverage@500"],
                        "fit_s": fit_s, "ms_per_user": 1000 * retrieve_s / len(users)}
        fitted[row] = (kind, stage)
        print(f"{row}: {results[row]}", file=sys.stderr, flush=True)

    # implicit's ItemKNN at the same neighbour counts, same run
    from implicit.nearest_neighbours import CosineRecommender

    x = data.interactions.to_csr(binary=True).astype(np.float32)
    for k_nb in (20, 200):
        model = CosineRecommender(K=k_nb)
        t0 = time.perf_counter()
        model.fit(x, show_progress=False)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, _ = model.recommend(users, x[users], N=max(KS), filter_already_liked_items=True)
        retrieve_s = time.perf_counter() - t0
        m = evaluate_topk(np.asarray(ids, np.int64), relevant, KS, n_items=data.n_items)
        results[f"implicit CosineRecommender (K={k_nb})"] = {
            **{f"recall@{k}": m[f"recall@{k}"] for k in KS}, "coverage@500": m["coverage@500"],
            "fit_s": fit_s, "ms_per_user": 1000 * retrieve_s / len(users)}

    from recfunnel.config import DEFAULT_CONFIG

    # the default config's channels with quotas that fill 500 candidates
    channels = [{**c, "quota": 500 if c["kind"] != "popular" else 100} for c in DEFAULT_CONFIG["channels"]]
    merged_cfg = config_from_dict({**DEFAULT_CONFIG, "channels": channels, "retrieval_k": 500,
                                   "ranker": None, "reranker": None})
    t0 = time.perf_counter()
    from recfunnel.pipeline.offline.fit import fit_funnel

    funnel: Funnel = fit_funnel(data, merged_cfg, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    merged, _ = funnel.retrieve(funnel.request(data.user_ids.ids[users]))
    retrieve_s = time.perf_counter() - t0
    rec = np.full((len(users), max(KS)), -1, np.int64)
    rec[:, : merged.item_index.shape[1]] = merged.item_index[:, : max(KS)]
    m = evaluate_topk(rec, relevant, KS, n_items=data.n_items)
    results["merged (default channels, 500)"] = {**{f"recall@{k}": m[f"recall@{k}"] for k in KS},
                                               "coverage@500": m["coverage@500"], "fit_s": fit_s,
                                               "ms_per_user": 1000 * retrieve_s / len(users)}

    cols = [f"recall@{k}" for k in KS] + ["coverage@500", "fit_s", "ms_per_user"]
    print(format_table(results, cols))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/bench_retrieval.py", "results": results},
                                   indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
