"""Retrieval benchmark on ML-100K: every channel alone and the merged set.

Protocol: per-user temporal 80/20 split, each user's training items excluded,
requests built as of the end of training with the default history length; for
each channel: recall@50/200/500, catalogue coverage@500, fit time and retrieval
time per user; the merged set is the funnel's retrieval (quotas + reciprocal-rank
fusion) at 500 candidates. ItemCF is compared with `implicit`'s
CosineRecommender at the same number of neighbours, in the same run: besides
their rows in the table (one fit each), a second table gives the median of
``--fit-repeats`` interleaved fits of both (ours, theirs, ours, ...) after a
warm-up, so that the fit-time ratio is not one noisy sample on a shared machine.

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
    parser.add_argument("--fit-repeats", type=int, default=7,
                        help="interleaved fits of ItemCF and implicit's CosineRecommender for the fit-time ratio")
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
    # imported before any timing: a module import is not fit time (ItemCF's kernel lives in implicit)
    import warnings

    from implicit.nearest_neighbours import CosineRecommender
    from implicit.utils import ParameterWarning

    warnings.simplefilter("ignore", ParameterWarning)  # its own CosineRecommender.fit passes COO
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

    # fit time of ItemCF against implicit's CosineRecommender: interleaved repeats, medians
    fit_rows: dict[str, dict[str, float]] = {}
    if args.fit_repeats > 0 and (not wanted or wanted & {"itemcf", "itemcf (20 neighbours)"}):
        for k_nb, row in ((200, "itemcf"), (20, "itemcf (20 neighbours)")):
            cfg = build_dataclass(config_class("itemcf"), {"neighbours": k_nb}, "itemcf")
            ours, theirs = [], []
            for _ in range(args.fit_repeats + 1):  # the first round is a warm-up
                t0 = time.perf_counter()
                stage = stage_class("itemcf")(cfg, "itemcf").fit(data)
                ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                CosineRecommender(K=k_nb).fit(x, show_progress=False)
                theirs.append(time.perf_counter() - t0)
            ours_s, theirs_s = float(np.median(ours[1:])), float(np.median(theirs[1:]))
            implicit_row = f"implicit CosineRecommender (K={k_nb})"
            fit_rows[f"neighbours={k_nb}"] = {
                "itemcf fit_s": ours_s, "implicit fit_s": theirs_s, "ratio": ours_s / theirs_s,
                "itemcf recall@500": results.get(row, {}).get("recall@500", float("nan")),
                "implicit recall@500": results[implicit_row]["recall@500"],
                "itemcf fit path": stage.fit_path_,
            }
        results["itemcf vs implicit fit (median of interleaved repeats)"] = fit_rows

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
    print(format_table({name: row for name, row in results.items() if name not in fit_rows and "fit_s" in row}, cols))
    if fit_rows:
        print(f"\nItemCF against implicit's CosineRecommender, fit time: median of {args.fit_repeats} "
              "interleaved fits after a warm-up (same data, same neighbours, same run)\n")
        print(format_table(fit_rows, ["itemcf fit_s", "implicit fit_s", "ratio", "itemcf recall@500",
                                      "implicit recall@500"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/bench_retrieval.py", "results": results},
                                   indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
