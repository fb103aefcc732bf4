"""Where the time of one request goes, in process: per-request latency, a cProfile of the funnel,
and the cost per user of batched requests with and without DIEN's once-per-history extractor.

The model is the README tour's (``bench_serving_default.py`` fits it into ``--model`` when
missing); one torch thread, users 1..N of ML-100K.

    .venv/bin/python benchmarks/profile_request.py [--model runs/ml100k] [--profile 100]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving_default import fit_tour_model  # noqa: E402
from serving_common import ROOT  # noqa: E402


def per_user_ms(funnel, users: list[str], batch: int) -> float:
    times = []
    for start in range(0, len(users), batch):
        request = funnel.request(users[start:start + batch])
        t0 = time.perf_counter()
        funnel.run(request, 10)
        times.append((time.perf_counter() - t0) / len(users[start:start + batch]))
    return float(np.median(times) * 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "ml100k")
    parser.add_argument("--profile", type=int, default=100, help="requests under cProfile")
    args = parser.parse_args()
    if not (args.model / "manifest.json").exists():
        fit_tour_model(args.model, None)
    import recfunnel.stages.rank.models.dien as dien
    from recfunnel.pipeline.online.funnel import Funnel

    torch.set_num_threads(1)
    funnel = Funnel.load(args.model)
    users = [str(u) for u in range(1, 944)]
    for user in users[:20]:  # warm-up
        funnel.run(funnel.request([user]), 10)
    latency = []
    for user in users[:200]:
        t0 = time.perf_counter()
        funnel.run(funnel.request([user]), 10)
        latency.append(time.perf_counter() - t0)
    print(f"one request at a time (users 1-200): p50 {np.percentile(latency, 50) * 1e3:.1f} ms, "
          f"p99 {np.percentile(latency, 99) * 1e3:.1f} ms")
    profile = cProfile.Profile()
    profile.enable()
    for user in users[:args.profile]:
        funnel.run(funnel.request([user]), 10)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
    print(out.getvalue())
    distinct_rows = dien.distinct_rows
    print("| batch of users | ms per user, extractor once per history | ms per user, extractor per candidate |")
    print("|---|---|---|")
    for batch in (1, 8):
        with_dedupe = per_user_ms(funnel, users[:160], batch)
        dien.distinct_rows = lambda *tensors: None
        try:
            without = per_user_ms(funnel, users[:160], batch)
        finally:
            dien.distinct_rows = distinct_rows
        print(f"| {batch} | {with_dedupe:.1f} | {without:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
