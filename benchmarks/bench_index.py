"""ANN index benchmark: build time, queries/s and recall@10 against exact search, every kind.

Data: 100k x 64 float32 vectors from a Gaussian mixture (1,000 unit-variance
centres plus unit noise, so clusters overlap), 1k queries from the same
mixture, maximum inner product. Recall@10 is measured against the exact
``flat`` index (faiss ``contrib/evaluation.py`` protocol). Each index is built
once at its defaults; rows with a search parameter (``nprobe``, ``ef_search``)
re-time the same build after ``set_search_params``. Also timed: single-query
latency and one ``update`` of 1,000 items (remove + add, no rebuild).

    python benchmarks/bench_index.py [--n 100000] [--dim 64] [--threads N] [--out bench-out/index.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
K = 10
COLUMNS = ["build_s", "batch_qps", "single_ms", f"recall@{K}", "update_1k_s", "saved_mb"]

#: (row name, kind, build params, search-parameter variants timed on the same build)
CONFIGS = [
    ("flat", "flat", {}, []),
    ("ivf_flat", "ivf_flat", {}, [{"nprobe": 8}, {"nprobe": 160}]),
    ("ivf_pq", "ivf_pq", {}, [{"nprobe": 160}]),
    ("ivf_pq m=32", "ivf_pq", {"m": 32}, []),
    ("hnsw", "hnsw", {}, [{"ef_search": 32}, {"ef_search": 512}]),
]


def mixture(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim))).astype(np.float32)


def time_search(index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(scores, ids, seconds for one batched search, ms per query searched one at a time)."""
    index.search(queries[:10], K)  # warm-up
    t0 = time.perf_counter()
    scores, found = index.search(queries, K)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in queries[:100]:
        index.search(q[None, :], K)
    return scores, found, batch_s, (time.perf_counter() - t0) / 100 * 1e3


def format_table(results: dict[str, dict], params: dict[str, dict]) -> str:
    lines = ["| index | params | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for name, row in results.items():
        cells = ["" if row[c] is None else f"{row[c]:.3f}" if c in (f"recall@{K}", "single_ms", "update_1k_s") else
                 f"{row[c]:.1f}" if c in ("build_s", "saved_mb") else f"{row[c]:,.0f}" for c in COLUMNS]
        shown = ", ".join(f"{k}={v}" for k, v in params[name].items()) or "-"
        lines.append(f"| {name} | {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "index.json")
    args = parser.parse_args(argv)

    import faiss

    from recfunnel.index import build_index, recall_at_k
    from recfunnel.storage.artifacts import ArtifactWriter

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1_000, args.dim)).astype(np.float32)
    vectors = mixture(args.n, args.dim, centres, rng)
    queries = mixture(args.queries, args.dim, centres, rng)
    ids = rng.permutation(10 * args.n)[: args.n].astype(np.int64)
    moved = rng.choice(args.n, 1_000, replace=False)
    new_vectors = mixture(len(moved), args.dim, centres, rng)

    exact_ids = None
    results: dict[str, dict] = {}
    resolved: dict[str, dict] = {}
    for name, kind, params, variants in CONFIGS:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index = build_index(vectors, ids, kind=kind, **params)
        build_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            with ArtifactWriter(Path(tmp) / "index", kind="bench") as writer:
                index.save(writer, "")
            saved_mb = sum(f.stat().st_size for f in (Path(tmp) / "index").iterdir()) / 2**20
        defaults = dataclasses.asdict(index.params)
        for variant in [{}, *variants]:
            index.set_search_params(**{**{f: defaults[f] for f in index.search_param_names}, **variant})
            row_name = name + "".join(f" {k}={v}" for k, v in variant.items())
            _, found, batch_s, single_ms = time_search(index, queries)
            if exact_ids is None:
                exact_ids = found  # the first row is the exact index
            results[row_name] = {"build_s": build_s, "batch_qps": len(queries) / batch_s,
                                 "single_ms": single_ms, f"recall@{K}": recall_at_k(found, exact_ids),
                                 "update_1k_s": None, "saved_mb": saved_mb}
            resolved[row_name] = dataclasses.asdict(index.params) | (
                {} if index.kind == kind else {"fell_back_to": index.kind})
            print(f"{row_name}: {results[row_name]}", flush=True)
        index.set_search_params(**{f: defaults[f] for f in index.search_param_names})
        t0 = time.perf_counter()
        index.update(ids[moved], new_vectors)
        results[name]["update_1k_s"] = time.perf_counter() - t0

    env = {"n": args.n, "dim": args.dim, "queries": args.queries, "faiss": faiss.__version__,
           "faiss_threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "machine": platform.machine()}
    print()
    print(f"n={args.n:,} x d={args.dim}, {args.queries:,} queries, k={K}, inner product; "
          f"faiss {env['faiss']} with {env['faiss_threads']} threads on {env['cpus']} CPUs")
    print()
    print(format_table(results, resolved))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"env": env, "params": resolved, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
