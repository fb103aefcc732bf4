"""A second top-K data set for the funnel: the first 84k events of Taobao's UserBehavior log.

ML-100K is dense (943 users, 1,682 items, every user with 20+ ratings). This log
is the opposite: 815 users, 55k items, mostly page views, so the ranker learns
from about twelve thousand candidate rows with about a hundred positives. It
checks that the funnel's defaults do not only work on ML-100K.

Protocol: every event (pv, cart, fav, buy) is an interaction; per-user temporal
80/20 split; full ranking with each user's training items excluded (so a test
event on an item the user already viewed does not count); the same metric
functions as ``bench_ml100k.py``. Each funnel is fit with ranker seeds 0, 1 and 2
(``TrainerConfig.seed``: initialisation and shuffling; LightGBM and retrieval
order are deterministic and run once); the table gives their mean, and the kept
recall of the rank stage (the share of the retrieved relevant items still among
the 100 it keeps; a ranker that orders at random keeps a third).

    python benchmarks/bench_taobao.py [--data ../shared/data/taobao-userbehavior] [--out bench-out/taobao.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ml100k import with_seed  # noqa: E402  (the same seeding of a neural ranker stage)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "taobao-userbehavior"
KS = (10, 50)
COLUMNS = ["recall@10", "recall@50", "ndcg@10", "rank_kept_recall", "fit_s"]
DEEPFM = {"epochs": 4, "batch_size": 1024, "ema_decay": 0.99, "loss": "bce"}  # stop 9's default, less min steps
# label -> ranker stage config (None: retrieval order, no re-ranker); {seed} is filled in per run
FUNNELS = {
    "default funnel (DIEN ranker, 20 behaviours)": "default",
    "DeepFM ranker (the default until 2026-11-29)": {"kind": "neural", "params": {"model": "deepfm"}},
    "DeepFM ranker, one pass per epoch (before min_steps_per_epoch)": {
        "kind": "neural", "params": {"model": "deepfm", "trainer": {**DEEPFM, "min_steps_per_epoch": 0}}},
    "DeepFM ranker, point-wise BCE loss (the default before list-wise softmax)": {
        "kind": "neural", "params": {"model": "deepfm", "trainer": {"loss": "bce"}}},
    "LightGBM ranker": {"kind": "lightgbm"},
    "retrieval order (no ranker, no re-ranker)": None,
}


def _load(path: Path, tmp: Path):
    """The headerless log, with a header line added so the standard loader reads it."""
    from recfunnel.data.loaders import load_interactions

    named = tmp / "taobao.csv"
    with open(path, encoding="utf-8") as src, open(named, "w", encoding="utf-8") as dst:
        dst.write("user_id,item_id,category_id,behavior,timestamp\n")
        dst.writelines(src)
    return load_interactions(named)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "taobao.json")
    parser.add_argument("--seeds", default="0,1,2", help="ranker seeds to average over")
    parser.add_argument("--rankers", default="",
                        help="models of the zoo (fm, dien, ...) to fit the same funnel with as well, each "
                             "with the neural ranker's default trainer, one row each")
    args = parser.parse_args(argv)
    from recfunnel.stages.rank.models import MODELS

    funnels = dict(FUNNELS)
    for name in [r.strip() for r in args.rankers.split(",") if r.strip()]:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose among {', '.join(MODELS)}")
        funnels[f"{name} ranker"] = {"kind": "neural", "params": {"model": name}}
    log_path = args.data / "UserBehavior.csv"
    if not log_path.exists():
        print(f"Taobao UserBehavior not found at {log_path}; skipping", file=sys.stderr)
        return {}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    from recfunnel.config import DEFAULT_CONFIG, config_from_dict
    from recfunnel.data.dataset import build_training_data
    from recfunnel.data.splits import split_user_ratio
    from recfunnel.evaluation import format_table
    from recfunnel.pipeline.offline.evaluate import evaluate_funnel
    from recfunnel.pipeline.offline.fit import fit_funnel

    with tempfile.TemporaryDirectory() as tmp:
        interactions = _load(log_path, Path(tmp))
    train, test = split_user_ratio(interactions, test_ratio=0.2)
    data = build_training_data(train)

    results: dict[str, dict[str, float]] = {}
    runs: dict[str, list[dict[str, float]]] = {}
    for label, ranker in funnels.items():
        runs[label] = []
        seeded = ranker == "default" or (isinstance(ranker, dict) and ranker.get("kind") == "neural")
        for seed in (seeds if seeded else seeds[:1]):  # LightGBM and retrieval order are deterministic
            if ranker is None:
                config = config_from_dict({**DEFAULT_CONFIG, "ranker": None, "reranker": None})
            else:
                stage = DEFAULT_CONFIG["ranker"] if ranker == "default" else ranker
                # neural rankers: the ranker's own default trainer with only the seed changed
                stage = with_seed(stage, seed) if seeded else stage
                config = config_from_dict({**DEFAULT_CONFIG, "ranker": stage})
            t0 = time.perf_counter()
            funnel = fit_funnel(data, config, progress=False)
            fit_s = time.perf_counter() - t0
            res = evaluate_funnel(funnel, test, KS)
            stages = {row["stage"]: row for row in res["funnel"]}
            kept = stages["rank"]["recall"] / stages["retrieval"]["recall"] if "rank" in stages else float("nan")
            runs[label].append({**{k: res["metrics"][k] for k in COLUMNS[:3]}, "rank_kept_recall": kept,
                                "fit_s": fit_s})
            print(f"{label} seed {seed}: {runs[label][-1]}", file=sys.stderr)
        results[label] = {c: float(np.mean([r[c] for r in runs[label]])) for c in COLUMNS}

    print(format_table(results, COLUMNS))
    out = {
        "benchmark": "taobao_topk",
        "protocol": "first 84,475 events of Taobao UserBehavior, per-user temporal 80/20, full ranking, "
                    "training items excluded, means over ranker seeds",
        "command": "python benchmarks/bench_taobao.py",
        "seeds": seeds,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "results": results,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
