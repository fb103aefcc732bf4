"""Retrieval at scale on the platform simulator: ItemCF and Swing at 1M items, and cold start.

Simulates (or reuses, ``--sim-dir``) a feed of ``--items`` notes and
``--exposures`` exposures (defaults: 1M items, 10M exposures, 200k users, 30 days),
then runs two parts, each channel in its own subprocess so that its peak memory
(``ru_maxrss``) is its own:

1. **Scale.** ItemCF and Swing (default configs) fit on the whole log, twice: on
   the clicks (the positives, about 0.5M) and on every exposure taken as an event
   (10M rows, 9.3M distinct user-item pairs: the co-occurrence work of a feed that
   logs views). Reported: load time, fit time, the RSS after loading the data and
   the peak RSS of the process, the similarity's size, retrieval time per user.
2. **Cold start.** Time split at the start of the last ``--test-days`` day(s):
   train = clicks before ``T``, test = clicks after it. *New items* are the items
   published in the ``--new-days`` before ``T`` (few or no training clicks). Every
   channel is fit on the training clicks with the catalogue of items published
   before ``T`` (items are numbered in publish order, so item index = simulator
   index = oracle index), and retrieves ``--k`` candidates at time ``T`` for a
   sample of ``--sample-users`` users with a training click. Per channel: the
   share of new items among the candidates, the share of users who get any, the
   distinct new items reached and how many of them have no training click at all,
   the recall of the test clicks on new items (over every user with a training
   history who made one), and the ground truth (``Oracle.relevance`` at ``T``) of
   the new items it returns, against random new items and the mean of the oracle's
   50 most relevant new items for the same users (for 500 of them). Look-alike runs
   twice: its default pool (items up to 30 days old with a click) and a pool of the
   new items only (``max_item_age_days = --new-days``).

   EGES is the exception on the catalogue: its fit ends with an exact all-pairs
   neighbour search over its item vectors (``neighbours_from_vectors``,
   ~``2 d n^2`` flops: 6e13 at n = 1M), so it is fit with the catalogue cut to the
   items with a training click plus the new items (its side-information vectors
   are what reach the new items) and lighter walk / SGD settings (see ``EGES``).

On 2 shared cores the scale part takes about 6 minutes (ItemCF on the 10M exposures
is 3-4 of them) and the cold-start part about 7 (EGES is 1.5-4 of them, with the
machine's load); ``make bench`` runs them as two commands (``--parts scale``,
``--parts cold``), each simulating the same seeded log (about 30 s).

    python benchmarks/bench_retrieval_scale.py [--parts scale,cold] [--sim-dir DIR] [--out FILE.json]

Prints a markdown table per part and writes the JSON results (with the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400

#: channels of the scale part: (row name, registry kind, params)
SCALE_CHANNELS = [("itemcf", "itemcf", {}), ("swing", "swing", {})]

#: lighter EGES settings for a 100k+ item graph on 2 cores (the defaults take tens of minutes):
#: word2vec's SGD on large batches, one short walk per item, 16 dimensions, one epoch
EGES = {"optimizer": "sgd", "batch_size": 8192, "walks_per_node": 1, "walk_length": 10, "window": 3,
        "dim": 16, "epochs": 1, "neighbours": 50,
        "side_columns": ["category", "sub_category", "author_id", "item_type"]}

#: channels of the cold-start part: (row name, registry kind, params, kind of channel)
COLD_CHANNELS = [
    ("new_items", "new_items", {}, "cold-start"),
    ("new_items (personalised)", "new_items", {"personalised": True}, "cold-start"),
    ("cluster", "cluster", {}, "cold-start"),
    ("lookalike", "lookalike", {}, "cold-start"),
    ("lookalike (new-item pool)", "lookalike", {}, "cold-start"),  # max_item_age_days = --new-days
    ("eges (side info)", "eges", EGES, "cold-start"),
    ("itemcf", "itemcf", {}, "collaborative"),
    ("swing", "swing", {}, "collaborative"),
]


def _rss_mib() -> float:
    """Peak resident memory of this process so far (Linux: KiB, macOS: bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


# ---- loading the simulator's files without string ids ------------------------------------------


def _index(column) -> np.ndarray:
    """Simulator ids ``"u12"`` / ``"i345"`` -> 12 / 345 (int64), vectorised in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pc.utf8_slice_codeunits(column, 1), pa.int64()).to_numpy()


def _read_events(sim_dir: Path, events: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, timestamp) int64 arrays of the clicks or of every exposure."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    columns = ["user_id", "item_id", "timestamp"]
    if events == "clicks":
        table = pq.read_table(sim_dir / "interactions.parquet", columns=columns)
    else:
        table = ds.dataset(sim_dir / "exposures", format="parquet").to_table(columns=columns)
    user, item = _index(table.column("user_id")), _index(table.column("item_id"))
    timestamp = table.column("timestamp").to_numpy().astype(np.int64)
    return user, item, timestamp


def load_training_data(sim_dir: Path, events: str, *, before: int | None = None,
                       catalogue: np.ndarray | None = None, features: bool = False):
    """TrainingData of a simulation, indexed like the simulator (``u12`` is user 12).

    Args:
        sim_dir: the simulation directory.
        events: "clicks" (interactions.parquet) or "exposures" (every exposure as an event).
        before: keep the events strictly before this time.
        catalogue: sorted simulator item indices that make up the catalogue (item index
            ``j`` is ``catalogue[j]``; events of other items are dropped); default every item.
        features: attach the user and item tables (through recfunnel's loaders).
    """
    import pandas as pd

    from recfunnel.data.dataset import TrainingData
    from recfunnel.data.interactions import IdMap, Interactions
    from recfunnel.data.simulator.oracle import format_ids

    meta = json.loads((sim_dir / "simulator.json").read_text())
    n_users = int(meta["counts"]["n_users"])
    if catalogue is None:
        catalogue = np.arange(int(meta["counts"]["n_items"]))
    user, item, timestamp = _read_events(sim_dir, events)
    position = np.minimum(np.searchsorted(catalogue, item), len(catalogue) - 1)
    keep = catalogue[position] == item
    if before is not None:
        keep &= timestamp < before
    user, item, timestamp = user[keep], position[keep], timestamp[keep]
    interactions = Interactions(user, item, timestamp, np.ones(len(user), np.float32), n_users, len(catalogue))
    user_ids, item_ids = IdMap(format_ids("u", np.arange(n_users))), IdMap(format_ids("i", catalogue))
    user_features = pd.DataFrame(index=pd.RangeIndex(n_users))
    item_features = pd.DataFrame(index=pd.RangeIndex(len(catalogue)))
    if features:
        from recfunnel.data.loaders import load_items, load_users

        user_features = load_users(sim_dir / "users.parquet").reindex(user_ids.ids).reset_index(drop=True)
        item_features = load_items(sim_dir / "items.parquet").reindex(item_ids.ids).reset_index(drop=True)
    return TrainingData(interactions, user_ids, item_ids, user_features, item_features)


def _stage(kind: str, params: dict, name: str):
    from recfunnel.config import build_dataclass
    from recfunnel.config.registry import config_class, stage_class

    return stage_class(kind)(build_dataclass(config_class(kind), params, kind), name)


# ---- workers (one subprocess each) ----------------------------------------------------------------


def worker_fit(sim_dir: Path, channel: str, events: str, sample_users: int, k: int) -> dict:
    """Fit one collaborative channel on the whole log; time, memory, size, retrieval speed."""
    from recfunnel.storage.user_history import UserHistoryStore

    kind, params = next((kd, p) for name, kd, p in SCALE_CHANNELS if name == channel)
    started = time.perf_counter()
    data = load_training_data(sim_dir, events)
    load_s = time.perf_counter() - started
    data_rss = _rss_mib()
    started = time.perf_counter()
    stage = _stage(kind, params, channel).fit(data)
    fit_s = time.perf_counter() - started
    fit_rss = _rss_mib()
    # retrieval for a sample of active users, as of the end of the log
    store = UserHistoryStore(data.interactions)
    active = np.flatnonzero(np.diff(store.seen.indptr) > 0)
    users = np.random.default_rng(0).choice(active, size=min(sample_users, len(active)), replace=False)
    request = store.request(np.sort(users), history_length=100)
    started = time.perf_counter()
    out = stage.retrieve(request, k)
    retrieve_s = time.perf_counter() - started
    seen = data.interactions.to_csr(binary=True)
    return {
        "channel": channel, "events": events, "n_events": len(data.interactions),
        "distinct_pairs": int(seen.nnz), "n_users": data.n_users, "n_items": data.n_items,
        "active_users": int(len(active)), "active_items": int((np.diff(seen.tocsc().indptr) > 0).sum()),
        "load_s": load_s, "fit_s": fit_s, "data_rss_mib": data_rss, "fit_peak_rss_mib": fit_rss,
        "similarity_nnz": int(stage.similarity_.nnz), "fit_path": getattr(stage, "fit_path_", "-"),
        "ms_per_user": 1000 * retrieve_s / len(users), "candidates_per_user": float(out.valid.sum(axis=1).mean()),
        "peak_rss_mib": _rss_mib(),
    }


def worker_cold(sim_dir: Path, channel: str, test_days: int, new_days: float, sample_users: int, k: int) -> dict:
    """Fit one channel on the training clicks; what it retrieves of the new items, and their truth."""
    import pyarrow.parquet as pq

    from recfunnel.data.simulator import Oracle
    from recfunnel.data.simulator.oracle import sigmoid
    from recfunnel.storage.user_history import UserHistoryStore

    kind, params, group = next((kd, p, g) for name, kd, p, g in COLD_CHANNELS if name == channel)
    params = {**params, **({"max_item_age_days": new_days} if channel == "lookalike (new-item pool)" else {})}
    meta = json.loads((sim_dir / "simulator.json").read_text())
    n_days = int(meta["config"]["n_days"])
    split = int(meta["start_time"]) + (n_days - test_days) * DAY  # T: first test second
    published = pq.read_table(sim_dir / "items.parquet", columns=["publish_time"]).column(0).to_numpy()
    n_published = int(np.searchsorted(published, split))  # items are numbered in publish order
    is_new = np.zeros(len(published), bool)
    is_new[:n_published] = published[:n_published] >= split - new_days * DAY
    click_user, click_item, click_time = _read_events(sim_dir, "clicks")
    train_clicks = np.bincount(click_item[click_time < split], minlength=len(published))
    catalogue = np.arange(n_published)
    if kind == "eges":  # see the module docstring: items with a training click, plus the new items
        catalogue = np.flatnonzero(((train_clicks > 0) | is_new)[:n_published])

    started = time.perf_counter()
    data = load_training_data(sim_dir, "clicks", before=split, catalogue=catalogue, features=True)
    load_s = time.perf_counter() - started
    data_rss = _rss_mib()
    started = time.perf_counter()
    stage = _stage(kind, params, channel).fit(data)
    fit_s = time.perf_counter() - started
    store = UserHistoryStore(data.interactions)

    def retrieve(users: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(items (B, k) simulator indices, valid (B, k), seconds) as of the split time."""
        request = store.request(users, time=split, history_length=100)
        started = time.perf_counter()
        out = stage.retrieve(request, k)
        seconds = time.perf_counter() - started
        valid = out.valid[:, :k]
        return np.where(valid, catalogue[np.maximum(out.item_index[:, :k], 0)], -1), valid, seconds

    # the same users for every channel: a seeded sample of the users with a training click
    history_users = np.flatnonzero(np.bincount(click_user[click_time < split], minlength=data.n_users) > 0)
    users = np.sort(np.random.default_rng(0).choice(history_users, size=min(sample_users, len(history_users)),
                                                    replace=False))
    items, valid, retrieve_s = retrieve(users)
    rows = np.broadcast_to(np.arange(len(users))[:, None], items.shape)
    new = valid & is_new[np.maximum(items, 0)]
    unclicked_new = new & (train_clicks[np.maximum(items, 0)] == 0)

    oracle = Oracle.load(sim_dir)
    relevance = sigmoid(oracle.logit_index(users[rows[new]], items[new], split))
    # baselines for the same users: random new items, and the oracle's best new items
    rng = np.random.default_rng(1)
    new_items = np.flatnonzero(is_new)
    random_items = rng.choice(new_items, size=(len(users), 50))
    random_relevance = sigmoid(oracle.logit_index(np.repeat(users, 50), random_items.ravel(), split))
    best_users = users[: min(len(users), 500)]  # 500 users x every new item
    z = oracle.logit_index(np.repeat(best_users, len(new_items)), np.tile(new_items, len(best_users)), split)
    z = z.reshape(len(best_users), len(new_items))
    best = sigmoid(-np.partition(-z, min(49, z.shape[1] - 1), axis=1)[:, :50])

    # recall of the test clicks on new items (published before T, clicked after it), over every
    # user with a training history who made one: too few are in a 5,000-user sample
    test = (click_time >= split) & is_new[click_item]
    test &= np.isin(click_user, history_users)
    test_pairs = np.unique(click_user[test] * np.int64(len(published)) + click_item[test])
    test_users = np.unique(test_pairs // len(published))
    hits = 0
    if len(test_users):
        test_items, test_valid, _ = retrieve(test_users)
        found = test_valid & is_new[np.maximum(test_items, 0)]
        found_pairs = np.repeat(test_users, found.sum(axis=1)) * np.int64(len(published)) + test_items[found]
        hits = int(np.isin(test_pairs, found_pairs).sum())
    n_candidates = int(valid.sum())
    return {
        "channel": channel, "group": group, "catalogue": int(data.n_items),
        "train_events": len(data.interactions), "new_items": int(is_new.sum()),
        "new_items_with_train_clicks": int((is_new & (train_clicks > 0)).sum()),
        "users": len(users), "k": k, "load_s": load_s, "fit_s": fit_s, "ms_per_user": 1000 * retrieve_s / len(users),
        "candidates_per_user": n_candidates / len(users),
        "new_share": float(new.sum() / max(n_candidates, 1)),
        "users_with_new": float(new.any(axis=1).mean()),
        "distinct_new_items": int(np.unique(items[new]).size),
        "distinct_unclicked_new_items": int(np.unique(items[unclicked_new]).size),
        "unclicked_new_share": float(unclicked_new.sum() / max(n_candidates, 1)),
        "new_test_clicks": int(len(test_pairs)), "new_test_users": int(len(test_users)),
        "new_test_recall": float(hits / max(len(test_pairs), 1)),
        "relevance_new": float(relevance.mean()) if len(relevance) else float("nan"),
        "relevance_random_new": float(random_relevance.mean()),
        "relevance_best_new": float(best.mean()),
        "lift_vs_random": float(relevance.mean() / random_relevance.mean()) if len(relevance) else float("nan"),
        "data_rss_mib": data_rss, "peak_rss_mib": _rss_mib(),
    }


# ---- driver -------------------------------------------------------------------------------------


def _run_worker(args: list[str], timeout: float) -> dict:
    """Run this file as a worker subprocess; its last stdout line is the JSON result."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"error": f"exit {proc.returncode}", "wall_s": wall}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Markdown table: columns are (header, key, format)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key)
            cells.append("-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-dir", type=Path, default=None,
                        help="simulation directory: reused when complete with the same sizes, else written (kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "retrieval_scale.json")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--exposures", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--authors", type=int, default=50_000)
    parser.add_argument("--events", default="clicks,exposures", help="scale part: event sets to fit on")
    parser.add_argument("--sample-users", type=int, default=5_000, help="users retrieved for")
    parser.add_argument("--k", type=int, default=200, help="candidates per user")
    parser.add_argument("--test-days", type=int, default=1)
    parser.add_argument("--new-days", type=float, default=1.0, help="new items: published this many days before T")
    parser.add_argument("--parts", default="scale,cold", help="parts to run: scale, cold")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    if args.worker:  # a subprocess of the driver: one channel, one JSON line
        sim_dir = Path(args.worker[1])
        if args.worker[0] == "fit":
            result = worker_fit(sim_dir, args.worker[2], args.worker[3], args.sample_users, args.k)
        else:
            result = worker_cold(sim_dir, args.worker[2], args.test_days, args.new_days,
                                 args.sample_users, args.k)
        print(json.dumps(result, default=float))
        return 0

    from recfunnel.data.simulator import SimulatorConfig, simulate

    config = SimulatorConfig(n_users=args.users, n_items=args.items, n_days=args.days, n_authors=args.authors)
    sim_dir = args.sim_dir or Path(tempfile.mkdtemp(prefix="recfunnel-scale-"))
    results: dict = {"command": "python benchmarks/bench_retrieval_scale.py " + " ".join(argv or sys.argv[1:]),
                     "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        manifest = sim_dir / "simulator.json"
        reuse = False
        if manifest.exists():
            meta = json.loads(manifest.read_text())
            counts = meta["counts"]
            reuse = (counts["n_items"], counts["n_users"], counts["n_exposures"], meta["config"]["n_days"]) == (
                args.items, args.users, args.exposures, args.days)
        started = time.perf_counter()
        if not reuse:
            simulate(config, sim_dir, progress=False, target_exposures=args.exposures, overwrite=True)
        results["simulate_s"] = None if reuse else time.perf_counter() - started
        meta = json.loads(manifest.read_text())
        results["simulation"] = meta["counts"]
        print(f"simulation: {meta['counts']['n_items']:,} items, {meta['counts']['n_exposures']:,} exposures, "
              f"{meta['counts']['n_clicks']:,} clicks ({'reused' if reuse else 'simulated'}) in {sim_dir}",
              file=sys.stderr, flush=True)
        parts = {p.strip() for p in args.parts.split(",")}
        common = ["--sample-users", str(args.sample_users), "--k", str(args.k)]

        if "scale" in parts:
            scale = []
            for events in [e.strip() for e in args.events.split(",") if e.strip()]:
                for channel, _, _ in SCALE_CHANNELS:
                    row = _run_worker(["--worker", "fit", str(sim_dir), channel, events, *common], args.timeout)
                    row.setdefault("channel", channel)
                    row.setdefault("events", events)
                    print(f"scale {channel} on {events}: {row}", file=sys.stderr, flush=True)
                    scale.append(row)
            results["scale"] = scale
            print(f"\n### ItemCF and Swing on the simulator ({meta['counts']['n_items']:,} items, "
                  f"{meta['counts']['n_exposures']:,} exposures); one subprocess per row\n")
            print(_table(scale, [
                ("channel", "channel", "s"), ("events", "events", "s"), ("events n", "n_events", ",d"),
                ("distinct pairs", "distinct_pairs", ",d"), ("active items", "active_items", ",d"),
                ("load s", "load_s", ".1f"), ("fit s", "fit_s", ".1f"), ("data RSS MiB", "data_rss_mib", ",.0f"),
                ("peak RSS MiB", "peak_rss_mib", ",.0f"), ("similarity nnz", "similarity_nnz", ",d"),
                ("fit path", "fit_path", "s"), ("retrieve ms/user", "ms_per_user", ".2f"),
            ]))

        if "cold" in parts:
            cold = []
            for channel, _, _, _ in COLD_CHANNELS:
                row = _run_worker(["--worker", "cold", str(sim_dir), channel, *common, "--test-days",
                                   str(args.test_days), "--new-days", str(args.new_days)], args.timeout)
                row.setdefault("channel", channel)
                print(f"cold {channel}: {row}", file=sys.stderr, flush=True)
                cold.append(row)
            results["cold_start"] = cold
            first = next((r for r in cold if "new_items" in r), {})
            print(f"\n### Cold start: train = clicks before the last {args.test_days} day(s); new items = "
                  f"{first.get('new_items', 0):,} items published in the {args.new_days:g} day(s) before the split "
                  f"({first.get('new_items_with_train_clicks', 0):,} of them with a training click); "
                  f"{first.get('users', 0):,} sampled users, {args.k} candidates each; relevance = the oracle's "
                  "click probability at position 0, at the split time\n")
            print(_table(cold, [
                ("channel", "channel", "s"), ("kind", "group", "s"), ("catalogue", "catalogue", ",d"),
                ("fit s", "fit_s", ".1f"), ("peak RSS MiB", "peak_rss_mib", ",.0f"),
                ("retrieve ms/user", "ms_per_user", ".2f"), ("candidates/user", "candidates_per_user", ".0f"), ("new-item share", "new_share", ".3f"),
                ("users with new", "users_with_new", ".3f"), ("distinct new items", "distinct_new_items", ",d"),
                ("of them never clicked", "distinct_unclicked_new_items", ",d"),
                ("new-item test recall", "new_test_recall", ".3f"),
                ("relevance of its new items", "relevance_new", ".4f"),
                ("random new items", "relevance_random_new", ".4f"), ("oracle's top-50 new (mean)", "relevance_best_new", ".4f"),
                ("lift vs random", "lift_vs_random", ".2f"),
            ]))
    finally:
        if args.sim_dir is None:
            shutil.rmtree(sim_dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
