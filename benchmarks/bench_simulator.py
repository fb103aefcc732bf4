"""Benchmark of the platform simulator at scale (not part of the test suite).

Simulates a catalogue of ``--items`` notes and ``--exposures`` exposures into a
temporary directory (or ``--out``) and reports wall time, throughput, peak
resident memory (``ru_maxrss``) and output size as one JSON line and one
markdown table row.

    .venv/bin/python benchmarks/bench_simulator.py --items 1000000 --exposures 10000000 --users 200000 --days 30
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from recfunnel.data.simulator import SimulatorConfig, simulate


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--exposures", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--authors", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="output directory (kept); default a temp dir (removed)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    config = SimulatorConfig(n_users=args.users, n_items=args.items, n_days=args.days,
                             n_authors=args.authors, seed=args.seed)
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="recfunnel-sim-"))
    try:
        started = time.perf_counter()
        summary = simulate(config, out, progress=not args.no_progress, target_exposures=args.exposures,
                           overwrite=args.out is not None)
        wall = time.perf_counter() - started
        # Linux reports ru_maxrss in KiB, macOS in bytes
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mib = rss / 1024 if sys.platform != "darwin" else rss / 2**20
        result = {
            "bench": "simulator", "users": args.users, "items": args.items, "days": args.days,
            "exposures": summary.n_exposures, "clicks": summary.n_clicks, "ctr": round(summary.ctr, 4),
            "parts": summary.n_parts, "wall_s": round(wall, 1),
            "exposures_per_s": round(summary.n_exposures / wall), "peak_rss_mib": round(peak_mib),
            "output_mib": round(_dir_bytes(out) / 2**20), "python": platform.python_version(),
        }
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result))
    print("| users | items | days | exposures | clicks | wall s | exp/s | peak RSS MiB | output MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {result['users']:,} | {result['items']:,} | {result['days']} | {result['exposures']:,} | "
          f"{result['clicks']:,} | {result['wall_s']} | {result['exposures_per_s']:,} | "
          f"{result['peak_rss_mib']:,} | {result['output_mib']:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
