"""``recfunnel demo`` wall time, alone and beside a busy process, with the thread count
recfunnel chooses and with one thread per core (what torch chose before).

A new user's 2-core machine often runs something else: with two OpenMP threads and one
core taken, torch's threads wait on the one that is not scheduled. The demo reports the
rank stage's cost per user, which shows it.

    python benchmarks/bench_demo.py [--out bench-out/demo.json]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serving_common import write_json  # noqa: E402


def run_demo(env_extra: dict[str, str]) -> dict[str, float]:
    env = {**os.environ, **env_extra}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "recfunnel.cli", "demo", "--out", tmp, "--quiet"], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: {proc.stderr[-2000:]}")
    rank = re.search(r"^rank\s+\d+\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)", proc.stdout, re.M)
    ndcg = re.search(r"^\| default funnel \|\s+\S+ \|\s+(\S+) \|", proc.stdout, re.M)
    return {"wall_s": round(wall, 1), "rank_ms_per_user": float(rank.group(1)) if rank else float("nan"),
            "ndcg@10": float(ndcg.group(1)) if ndcg else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cores = str(os.cpu_count() or 2)
    rows = {}
    rows["quiet, threads chosen by recfunnel"] = run_demo({})
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core taken
    try:
        time.sleep(1.0)
        rows["one core busy, threads chosen by recfunnel"] = run_demo({})
        rows[f"one core busy, OMP_NUM_THREADS={cores} (one per core)"] = run_demo({"OMP_NUM_THREADS": cores})
    finally:
        busy.kill()
    print("| run | demo wall s | rank ms/user | NDCG@10 |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']:.0f} | {r['rank_ms_per_user']:.1f} | {r['ndcg@10']:.4f} |")
    write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
