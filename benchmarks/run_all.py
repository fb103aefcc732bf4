"""``make bench``: run every benchmark, each in its own process, and collect the results.

Each benchmark prints its own markdown table; the combined output goes to
``bench-out/`` (JSON per benchmark and ``bench-out/summary.md``). Numbers quoted
in BENCHMARKS.md come from these files, with the command that produced them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"

BENCHMARKS = [
    ("make demo: wall time alone and beside a busy process", ["benchmarks/bench_demo.py", "--out", "bench-out/demo.json"]),
    ("ML-100K top-K: default funnel vs implicit", ["benchmarks/bench_ml100k.py", "--out", "bench-out/ml100k.json"]),
    ("Taobao (first 84k events) top-K: the funnel's defaults on sparse data",
     ["benchmarks/bench_taobao.py", "--out", "bench-out/taobao.json"]),
    ("Simulator at 1M items / 10M exposures", ["benchmarks/bench_simulator.py", "--no-progress"]),
    ("Retrieval on ML-100K: every channel, the merged set, ItemCF against implicit",
     ["benchmarks/bench_retrieval.py", "--out", "bench-out/retrieval.json"]),
    # the two parts of the simulator retrieval benchmark run apart so each stays under ~10 minutes
    # on 2 cores; each simulates the same (seeded) 1M-item log
    ("Retrieval at scale: ItemCF and Swing on the simulator at 1M items / 10M exposures",
     ["benchmarks/bench_retrieval_scale.py", "--parts", "scale", "--out", "bench-out/retrieval_scale.json"]),
    ("Cold-start retrieval on the simulator at 1M items",
     ["benchmarks/bench_retrieval_scale.py", "--parts", "cold", "--out", "bench-out/retrieval_cold.json"]),
    ("Ranking on ML-100K as CTR: the model zoo, LightGBM and DeepCTR-Torch",
     ["benchmarks/bench_ranking.py", "--out", "bench-out/ranking.json"]),
    ("Serving on the simulator at 100k items: load generator over loopback",
     ["benchmarks/bench_serving.py"]),
    ("Serving the default funnel (ML-100K tour model) over HTTP: open-loop load",
     ["benchmarks/bench_serving_default.py", "--out", "bench-out/serving_default.json"]),
    ("From an acknowledged event to a changed recommendation (ML-100K tour model)",
     ["benchmarks/bench_freshness.py", "--out", "bench-out/freshness.json"]),
    ("Reliability of the service: kill -9, model swaps, faults, schemathesis, refusals",
     ["benchmarks/bench_reliability.py"]),
]


def main() -> int:
    OUT.mkdir(exist_ok=True)
    sections = []
    failed = 0
    for title, args in BENCHMARKS:
        print(f"== {title}: python {' '.join(args)}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed += 1
            print(proc.stderr[-4000:], file=sys.stderr)
        sections.append(f"## {title}\n\nCommand: `python {' '.join(args)}` ({wall:.0f}s, exit {proc.returncode})\n\n"
                        f"{proc.stdout.strip()}\n")
    (OUT / "summary.md").write_text("\n".join(sections))
    print(f"summary written to {OUT / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
