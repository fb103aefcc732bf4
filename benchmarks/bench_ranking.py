"""ML-100K as CTR: every ranking model of the zoo, LightGBM and DeepCTR-Torch's DeepFM, same features.

Protocol: each rating is a sample labelled ``rating >= 4``; the per-user temporal
80/20 split (each user's newest 20% of ratings are the test set); the newest 10%
of each user's training ratings are the validation set for early stopping.
Features, all point in time (only events strictly before a sample's time):
user and item ids, age, gender, occupation, zip prefix, release year, genres
(a bag), the user's last 50 items with their ages, and the statistics and
affinities of :class:`~recfunnel.features.ranking.RankingFeatureBuilder`. Every
model, LightGBM and DeepCTR-Torch read the same encoded columns.

The zoo trains with Adam, early stopping on validation AUC and an exponential
moving average of the weights (``--ema-decay``, 0.999 per step); the DeepCTR-Torch
comparison trains both DeepFMs plainly (no averaging, no early stopping), recfunnel's
twice: in float32, and with ``TrainerConfig(precision="bf16")``.

    python benchmarks/bench_ranking.py [--models deepfm,din] [--epochs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
# rows beyond the zoo's defaults (label -> [model, params])
VARIANTS = {"opnn (embed_dim 32)": ["opnn", {"embed_dim": 32}]}
COLUMNS = ["auc", "logloss", "gauc", "train_samples_s", "infer_samples_s", "epochs"]


def build_ctr_data(data_dir: Path, history_length: int = 50, history_from: str = "clicks", dense_buckets: int = 0):
    """(schema, train, valid, test TensorBatch, test users, feature names) of ML-100K as CTR."""
    from recfunnel.data.dataset import build_training_data
    from recfunnel.data.loaders import load_interactions, load_items, load_users
    from recfunnel.data.splits import split_user_ratio, user_temporal_holdout_mask
    from recfunnel.features.ranking import RankingFeatureBuilder, RankingFeatureConfig
    from recfunnel.features.tensors import TensorEncoder, TensorEncoderConfig
    from recfunnel.storage.user_history import UserHistoryStore
    from recfunnel.types import Candidates, FeatureBatch

    inter = load_interactions(data_dir / "ml-100k.inter")
    users = load_users(data_dir / "ml-100k.user")
    items = load_items(data_dir / "ml-100k.item")
    users["zip_prefix"] = users.pop("zip_code").astype(str).str[:1]
    train_df, test_df = split_user_ratio(inter, test_ratio=0.2)
    is_test = np.r_[np.zeros(len(train_df), bool), np.ones(len(test_df), bool)]
    events = pd.concat([train_df, test_df], ignore_index=True)
    # every rating is an event the system saw; statistics and histories are read strictly before each sample
    data = build_training_data(events, users, items)
    inter_enc = data.interactions
    label = (pd.to_numeric(data.raw["rating"]).to_numpy() >= 4).astype(np.float32)
    # the behaviour sequence is the user's clicks (ratings >= 4) before the sample, as in CTR logs
    store = UserHistoryStore(inter_enc.subset(label > 0)) if history_from == "clicks" else UserHistoryStore(inter_enc)
    request = store.request(inter_enc.user_index, time=inter_enc.timestamp, history_length=history_length,
                            exclude_seen=False)
    n = len(inter_enc)
    candidates = Candidates(inter_enc.item_index[:, None].astype(np.int64), np.zeros((n, 1), np.float32), {}, {})
    builder = RankingFeatureBuilder(RankingFeatureConfig(), ()).fit(data)
    feats, rows, cols = builder.transform(request, candidates)
    assert (rows == np.arange(n)).all()

    train_rows = np.flatnonzero(~is_test)
    valid_in_train = user_temporal_holdout_mask(inter_enc.user_index[train_rows], inter_enc.timestamp[train_rows], 0.1)
    valid_rows, fit_rows = train_rows[valid_in_train], train_rows[~valid_in_train]
    test_rows = np.flatnonzero(is_test)

    def subset(f: FeatureBatch, idx: np.ndarray) -> FeatureBatch:
        return FeatureBatch({k: v[idx] for k, v in f.dense.items()}, {k: v[idx] for k, v in f.sparse.items()})

    encoder = TensorEncoder(TensorEncoderConfig(max_sequence_length=history_length, dense_buckets=dense_buckets)).fit(
        data, subset(feats, fit_rows), builder)
    batch = encoder.transform(request, candidates, feats, rows, cols)
    batch.label = torch.as_tensor(label)
    batch.group = torch.as_tensor(inter_enc.user_index.astype(np.int64))
    pick = lambda idx: batch.select(torch.as_tensor(idx))  # noqa: E731
    return encoder.schema(), pick(fit_rows), pick(valid_rows), pick(test_rows)


def metrics(test, probs: np.ndarray) -> dict[str, float]:
    from recfunnel.evaluation.metrics import auc, gauc, logloss

    y = test.label.numpy() > 0.5
    return {"auc": auc(y, probs), "logloss": logloss(y, probs), "gauc": gauc(test.group.numpy(), y, probs)}


def run_recfunnel(name: str, schema, train, valid, test, trainer_cfg, params: dict | None = None) -> dict[str, float]:
    from recfunnel.stages.rank.models import build_model
    from recfunnel.training.trainer import Trainer, predict_proba

    torch.manual_seed(trainer_cfg.seed)
    model = build_model(name, schema, params)
    history = Trainer(trainer_cfg).fit(model, train, valid)
    t0 = time.perf_counter()
    probs = predict_proba(model, test, 4096)
    infer_s = time.perf_counter() - t0
    return {**metrics(test, probs), "train_samples_s": history.samples_per_second,
            "infer_samples_s": len(test) / infer_s, "epochs": len(history.train_loss),
            "best_epoch": history.best_epoch + 1}


def _matrix(schema, batch) -> tuple[np.ndarray, list[str], list[int]]:
    """Flat columns for tree models: sparse ids, first bag value, dense, last history item."""
    cols = [batch.sparse.numpy().astype(np.float32)]
    names = [f.name for f in schema.sparse]
    for f in schema.bags:
        cols.append(batch.bags[f.name].numpy()[:, :1].astype(np.float32))
        names.append(f.name)
    cols.append(batch.dense.numpy())
    names += list(schema.dense)
    categorical = list(range(len(schema.sparse) + len(schema.bags)))
    return np.concatenate(cols, 1), names, categorical


def run_lightgbm(schema, train, valid, test, threads: int) -> dict[str, float]:
    import lightgbm as lgb

    x_tr, names, cat = _matrix(schema, train)
    x_va, _, _ = _matrix(schema, valid)
    x_te, _, _ = _matrix(schema, test)
    params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 50,
              "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
              "cat_smooth": 10.0, "num_threads": threads, "seed": 0, "deterministic": True, "verbosity": -1,
              "metric": "auc"}
    tr = lgb.Dataset(x_tr, train.label.numpy(), feature_name=names, categorical_feature=cat)
    va = lgb.Dataset(x_va, valid.label.numpy(), reference=tr)
    t0 = time.perf_counter()
    booster = lgb.train(params, tr, 2000, valid_sets=[va], callbacks=[lgb.early_stopping(50, verbose=False)])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = booster.predict(x_te, num_iteration=booster.best_iteration)
    infer_s = time.perf_counter() - t0
    return {**metrics(test, probs), "train_samples_s": len(train) / train_s, "infer_samples_s": len(test) / infer_s,
            "epochs": float("nan"), "best_epoch": booster.best_iteration}


def _deepctr_inputs(schema, batch) -> dict[str, np.ndarray]:
    x = {f.name: batch.sparse[:, j].numpy() for j, f in enumerate(schema.sparse)}
    for f in schema.bags:
        x[f.name] = batch.bags[f.name].numpy()
    for j, name in enumerate(schema.dense):
        x[name] = batch.dense[:, j].numpy()
    return x


def run_deepctr_deepfm(schema, train, test, epochs: int, batch_size: int, embed_dim: int, seed: int):
    import warnings

    warnings.filterwarnings("ignore")
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DeepFM

    columns = [SparseFeat(f.name, f.vocab_size, embedding_dim=embed_dim) for f in schema.sparse]
    columns += [VarLenSparseFeat(SparseFeat(f.name, f.vocab_size, embedding_dim=embed_dim),
                                 maxlen=train.bags[f.name].shape[1], combiner="mean") for f in schema.bags]
    columns += [DenseFeat(name, 1) for name in schema.dense]
    model = DeepFM(columns, columns, dnn_hidden_units=(256, 128), l2_reg_linear=0.0, l2_reg_embedding=0.0,
                   seed=seed, task="binary", device="cpu")
    model.compile("adam", "binary_crossentropy")
    x_tr, x_te = _deepctr_inputs(schema, train), _deepctr_inputs(schema, test)
    t0 = time.perf_counter()
    model.fit(x_tr, train.label.numpy(), batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = model.predict(x_te, batch_size=4096).ravel()
    infer_s = time.perf_counter() - t0
    return {**metrics(test, probs), "train_samples_s": epochs * len(train) / train_s,
            "infer_samples_s": len(test) / infer_s, "epochs": epochs, "best_epoch": epochs}


def format_rows(results: dict[str, dict[str, float]]) -> str:
    head = "| model | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in results.items():
        cells = []
        for c in COLUMNS:
            v = r.get(c, float("nan"))
            cells.append(f"{v:.0f}" if c.endswith("_s") or c == "epochs" else f"{v:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "ranking.json")
    parser.add_argument("--models", default="all", help="comma-separated model names, or 'all'")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the zoo's initialisation and shuffling")
    parser.add_argument("--ema-decay", type=float, default=0.999,
                        help="average the zoo's weights over training (TrainerConfig.ema_decay; 0 = off)")
    parser.add_argument("--variants", default=json.dumps(VARIANTS),
                        help="JSON {row label: [model, params]}: extra rows with non-default model options")
    parser.add_argument("--no-deepctr", action="store_true", help="skip the DeepCTR-Torch comparison")
    parser.add_argument("--parity-seed", type=int, default=0,
                        help="seed of both DeepFMs in the DeepCTR-Torch comparison")
    parser.add_argument("--parity-repeats", type=int, default=3,
                        help="interleaved runs of each DeepFM in the DeepCTR-Torch comparison (medians reported)")
    parser.add_argument("--history", choices=("clicks", "all"), default="clicks",
                        help="behaviour sequence: the user's clicks (ratings >= 4) or every rating")
    parser.add_argument("--dense-buckets", type=int, default=0,
                        help="also embed each dense column as this many equal-frequency buckets")
    args = parser.parse_args(argv)
    if not (args.data / "ml-100k.inter").exists():
        print(f"ML-100K not found at {args.data}; skipping", file=sys.stderr)
        return {}
    torch.set_num_threads(args.threads)
    from recfunnel.stages.rank.models import model_names
    from recfunnel.training.trainer import TrainerConfig

    t0 = time.perf_counter()
    schema, train, valid, test = build_ctr_data(args.data, history_from=args.history,
                                                dense_buckets=args.dense_buckets)
    print(f"data: {len(train)} train / {len(valid)} valid / {len(test)} test rows, "
          f"{len(schema.sparse)} sparse, {len(schema.dense)} dense, {len(schema.bags)} bags, "
          f"built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    names = model_names() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    runs = [(name, name, None) for name in names]
    runs += [(label, model, params) for label, (model, params) in json.loads(args.variants).items()]
    zoo_cfg = TrainerConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3, patience=3,
                            ema_decay=args.ema_decay,
                            seed=args.seed, threads=args.threads)
    results: dict[str, dict[str, float]] = {}
    results["LightGBM (same columns)"] = run_lightgbm(schema, train, valid, test, args.threads)
    print(f"lightgbm: {results['LightGBM (same columns)']}", file=sys.stderr)
    for name, model_name, params in runs:
        t0 = time.perf_counter()
        try:
            results[name] = run_recfunnel(model_name, schema, train, valid, test, zoo_cfg, params)
        except Exception as e:  # a broken model must not hide the others' numbers
            print(f"{name}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
            continue
        print(f"{name}: {results[name]} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    parity = {}
    ratios = {}
    if not args.no_deepctr:
        # same batch size, epochs, threads, embedding width and hidden layers, no early stopping;
        # recfunnel twice: float32 (the default) and TrainerConfig(precision="bf16")
        epochs = 2
        fixed = TrainerConfig(epochs=epochs, batch_size=args.batch_size, learning_rate=1e-3, patience=epochs,
                              restore_best=False, seed=args.parity_seed, threads=args.threads)
        labels = {"recfunnel": "recfunnel DeepFM (fixed epochs)",
                  "recfunnel_bf16": "recfunnel DeepFM, bf16 autocast (fixed epochs)",
                  "deepctr": "DeepCTR-Torch DeepFM (fixed epochs)"}
        # interleaved repeats, medians: a shared machine's load moves both libraries alike
        runs: dict[str, list[dict[str, float]]] = {key: [] for key in labels}
        for _ in range(args.parity_repeats):
            runs["recfunnel"].append(run_recfunnel("deepfm", schema, train, valid, test, fixed))
            runs["recfunnel_bf16"].append(run_recfunnel("deepfm", schema, train, valid, test,
                                                        dataclasses.replace(fixed, precision="bf16")))
            runs["deepctr"].append(run_deepctr_deepfm(schema, train, test, epochs, args.batch_size, 16,
                                                      args.parity_seed))
        for key, label in labels.items():
            parity[label] = {**runs[key][0], **{c: float(np.median([r[c] for r in runs[key]]))
                                               for c in ("train_samples_s", "infer_samples_s")}}
            parity[label]["train_samples_s_runs"] = [r["train_samples_s"] for r in runs[key]]
        for k, v in parity.items():
            print(f"{k}: {v}", file=sys.stderr)
        for key in ("recfunnel", "recfunnel_bf16"):
            ratios[key] = parity[labels[key]]["train_samples_s"] / parity[labels["deepctr"]]["train_samples_s"]
            print(f"training throughput {labels[key]} / DeepCTR-Torch: {ratios[key]:.2f}x "
                  f"(medians of {args.parity_repeats} interleaved runs)", file=sys.stderr)
        results.update(parity)
    table = format_rows(results)
    print(table)
    out = {
        "benchmark": "ml100k_ctr_ranking",
        "protocol": "rating>=4 as click, per-user temporal 80/20, newest 10% of train per user for validation",
        "command": "python benchmarks/bench_ranking.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "threads": args.threads},
        "results": results,
    }
    if parity:
        out["deepfm_train_throughput_ratio"] = ratios["recfunnel"]
        out["deepfm_bf16_train_throughput_ratio"] = ratios["recfunnel_bf16"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
