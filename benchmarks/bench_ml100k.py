"""ML-100K top-K benchmark: the default funnel against `implicit`'s ItemKNN and ALS.

Protocol: per-user temporal 80/20 split (each user's newest 20% of ratings are
the test set; every rating counts as an interaction), full ranking over the
whole catalogue, each user's training items excluded, metrics from
``recfunnel.evaluation`` for every model, all measured in the same run.

    python benchmarks/bench_ml100k.py [--data ../shared/data/ml-100k] [--out bench-out/ml100k.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
KS = (10, 20, 50)
# the same funnel with another ranker (label -> ranker stage), to choose the default
OTHER_RANKERS = {
    "LightGBM": {"kind": "lightgbm"},
    "DeepFM": {"kind": "neural", "params": {"model": "deepfm"}},  # the default until 2026-11-29
    "DIEN over 50 behaviours": {"kind": "neural", "params": {"model": "dien"}},  # the encoder's default length
    "DIN": {"kind": "neural", "params": {"model": "din"}},
    "FM": {"kind": "neural", "params": {"model": "fm"}},
    # trainer keys override the ranker's default trainer one by one
    "DeepFM without weight averaging": {"kind": "neural", "params": {
        "model": "deepfm", "trainer": {"ema_decay": 0.0}}},
    "DeepFM in bf16": {"kind": "neural", "params": {"model": "deepfm", "trainer": {"precision": "bf16"}}},
    "DeepFM with point-wise BCE loss": {"kind": "neural", "params": {"model": "deepfm", "trainer": {"loss": "bce"}}},
    "DeepFM stopped on pooled AUC": {"kind": "neural", "params": {
        "model": "deepfm", "trainer": {"validation_metric": "auc"}}},
    "OPNN (embedding 32)": {"kind": "neural", "params": {"model": "opnn", "model_params": {"embed_dim": 32}}},
}
COLUMNS = ["recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "fit_s", "recommend_s"]


def with_seed(stage: dict, seed: int) -> dict:
    """A neural ranker stage with its trainer's seed set (the other trainer keys keep their defaults)."""
    params = stage.get("params", {})
    return {**stage, "params": {**params, "trainer": {**params.get("trainer", {}), "seed": seed}}}


def implicit_topk(model, train: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
    ids, _ = model.recommend(users, train[users], N=k, filter_already_liked_items=True)
    ids = np.asarray(ids, np.int64)
    out = np.full((len(users), k), -1, np.int64)
    out[:, : ids.shape[1]] = ids
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "ml100k.json")
    parser.add_argument("--ranker-seeds", default="",
                        help="comma-separated seeds: also fit the default funnel, and the funnel with each "
                             "of --rankers' neural rankers, with each ranker seed (TrainerConfig.seed: "
                             "initialisation and shuffling), one row each")
    parser.add_argument("--rankers", default=",".join(OTHER_RANKERS),
                        help=f"other rankers to fit the same funnel with, among {', '.join(OTHER_RANKERS)}, "
                             "or any model name of the zoo (deepfm, opnn, bst, ...) with its defaults")
    args = parser.parse_args(argv)
    seeds = [int(x) for x in args.ranker_seeds.split(",") if x.strip()]
    from recfunnel.stages.rank.models import MODELS

    rankers = dict(OTHER_RANKERS)
    for label in [r.strip() for r in args.rankers.split(",") if r.strip()]:
        if label not in rankers and label in MODELS:
            rankers[label] = {"kind": "neural", "params": {"model": label}}
    unknown = [r.strip() for r in args.rankers.split(",") if r.strip() and r.strip() not in rankers]
    if unknown:
        parser.error(f"unknown ranker(s) {unknown}; choose among {', '.join(OTHER_RANKERS)} "
                     f"or a model of the zoo ({', '.join(MODELS)})")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows) with threaded BLAS

    from recfunnel.config import DEFAULT_CONFIG, config_from_dict, default_config
    from recfunnel.data.dataset import build_training_data
    from recfunnel.data.loaders import load_interactions, load_items, load_users
    from recfunnel.data.splits import split_user_ratio
    from recfunnel.evaluation import evaluate_topk, format_table
    from recfunnel.pipeline.offline.evaluate import evaluate_funnel
    from recfunnel.pipeline.offline.fit import fit_funnel

    inter_path = args.data / "ml-100k.inter"
    if not inter_path.exists():
        print(f"ML-100K not found at {args.data}; skipping", file=sys.stderr)
        return {}
    interactions = load_interactions(inter_path)
    users = load_users(args.data / "ml-100k.user")
    items = load_items(args.data / "ml-100k.item")
    train, test = split_user_ratio(interactions, test_ratio=0.2)
    data = build_training_data(train, users, items)
    results: dict[str, dict[str, float]] = {}

    # ---- recfunnel default funnel (fit includes the ranker's holdout pass) ----
    t0 = time.perf_counter()
    funnel = fit_funnel(data, default_config(), progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate_funnel(funnel, test, KS)
    results["recfunnel default funnel"] = {**res["metrics"], "fit_s": fit_s, "recommend_s": time.perf_counter() - t0}
    funnel_report = res["funnel"]
    relevant_counts = res["counts"]

    def fit_and_score(stage: dict | None) -> dict[str, float]:
        """The default funnel with ``stage`` as its ranker: test metrics, fit and recommend seconds."""
        t0 = time.perf_counter()
        fitted = fit_funnel(data, config_from_dict({**DEFAULT_CONFIG, "ranker": stage}), progress=False)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = evaluate_funnel(fitted, test, KS)["metrics"]
        return {**metrics, "fit_s": fit_s, "recommend_s": time.perf_counter() - t0}

    # ---- the default funnel with other ranker seeds: how much one run's NDCG moves ----
    for seed in seeds:
        results[f"recfunnel default funnel, ranker seed {seed}"] = fit_and_score(
            with_seed(DEFAULT_CONFIG["ranker"], seed))

    # ---- the same fitted funnel without its MMR re-ranker: what diversity costs ----
    reranker, funnel.reranker = funnel.reranker, None
    t0 = time.perf_counter()
    res_no_mmr = evaluate_funnel(funnel, test, KS)
    results["recfunnel default funnel without MMR"] = {**res_no_mmr["metrics"], "fit_s": float("nan"),
                                                      "recommend_s": time.perf_counter() - t0}
    funnel.reranker = reranker

    # ---- the same funnel with other rankers: which ranker the default should use ----
    for label in [r.strip() for r in args.rankers.split(",") if r.strip()]:
        ranker = rankers[label]
        results[f"recfunnel funnel with the {label} ranker"] = fit_and_score(ranker)
        if ranker["kind"] == "neural":  # seeds only mean something for the neural rankers' trainer
            for seed in seeds:
                results[f"recfunnel funnel with the {label} ranker, ranker seed {seed}"] = fit_and_score(
                    with_seed(ranker, seed))

    # ---- the same funnel without the ranker / re-ranker: what ranking adds ----

    retrieval_only = config_from_dict({**DEFAULT_CONFIG, "ranker": None, "reranker": None})
    t0 = time.perf_counter()
    f2 = fit_funnel(data, retrieval_only, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res2 = evaluate_funnel(f2, test, KS)
    results["recfunnel default channels, retrieval order"] = {**res2["metrics"], "fit_s": fit_s,
                                                          "recommend_s": time.perf_counter() - t0}

    # ---- implicit baselines on the same encoded split ----
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender

    train_csr = data.interactions.to_csr(binary=True).astype(np.float32)
    test_users = np.unique(data.user_ids.index(test["user_id"].to_numpy()))
    test_users = test_users[test_users >= 0]
    item_index = data.item_ids.index(test["item_id"].to_numpy())
    user_index = data.user_ids.index(test["user_id"].to_numpy())
    ok = (item_index >= 0) & (user_index >= 0)
    relevant_full = sp.csr_matrix((np.ones(ok.sum(), np.float32), (user_index[ok], item_index[ok])),
                                  shape=train_csr.shape)
    relevant_full.data[:] = 1.0
    relevant_full = (relevant_full - relevant_full.multiply(train_csr)).tocsr()
    relevant_full.eliminate_zeros()
    relevant = relevant_full[test_users]
    baselines = {
        "implicit CosineRecommender (K=20, default)": lambda: CosineRecommender(K=20),
        "implicit CosineRecommender (K=100)": lambda: CosineRecommender(K=100),
        "implicit ALS (64 factors, reg 0.05, 20 it)": lambda: AlternatingLeastSquares(
            factors=64, regularization=0.05, iterations=20, random_state=0, num_threads=1),
    }
    for name, make in baselines.items():
        model = make()
        t0 = time.perf_counter()
        model.fit(train_csr, show_progress=False)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = implicit_topk(model, train_csr, test_users, max(KS))
        rec_s = time.perf_counter() - t0
        results[name] = {**evaluate_topk(rec, relevant, KS, n_items=data.n_items), "fit_s": fit_s,
                         "recommend_s": rec_s}

    print(format_table(results, COLUMNS))
    out = {
        "benchmark": "ml100k_topk",
        "protocol": "per-user temporal 80/20, full ranking, training items excluded",
        "command": "python benchmarks/bench_ml100k.py",
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "counts": relevant_counts,
        "results": results,
        "funnel_report": funnel_report,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
