"""The default funnel served over HTTP: open-loop Poisson load at fixed rates, from another process.

The model is the README tour's: ``recfunnel split`` (per-user temporal 80/20) and ``recfunnel fit``
with the default config on ML-100K (DIEN over 300 candidates); it is fitted into ``--model`` when
that folder does not exist. ``recfunnel serve`` runs with its defaults plus the given server
arguments (``--batch-max 1`` turns micro-batching off, ``--no-admission-control`` the 503s);
this process sends the requests (``benchmarks/bench_serving.py``'s open-loop client: latency
from each request's scheduled time, so a client falling behind counts).

    .venv/bin/python benchmarks/bench_serving_default.py [--model runs/ml100k] [--rates 10,25,50,75]
        [--duration 15] [--source DIR] [-- SERVER ARGS...]

``--source DIR`` fits and serves with the recfunnel package of another checkout (``git worktree
add /tmp/before COMMIT``), for the same table on the code before a change; give it its own
``--model`` (older code may not read newer model configs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the server's torch: one thread per request path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import open_loop  # noqa: E402
from serving_common import ROOT, free_port, start_server, stop_server, write_json  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k"


def _cli(source: Path | None) -> list[str]:
    """``recfunnel`` from this checkout, or from ``source`` (put first on sys.path)."""
    if source is None:
        return [sys.executable, "-m", "recfunnel.cli"]
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(source)!r}); "
            "from recfunnel.cli import main; sys.exit(main())"]


def fit_tour_model(model: Path, source: Path | None) -> None:
    data = model.parent / f"{model.name}-data"
    cli = _cli(source)
    # the split with this checkout's command (older code had none), the fit with the source's
    subprocess.run([*_cli(None), "split", "--interactions", str(ML100K / "ml-100k.inter"), "--out", str(data), "--quiet"],
                   check=True, cwd=ROOT)
    subprocess.run([*cli, "fit", "--interactions", str(data / "train.csv"), "--users", str(ML100K / "ml-100k.user"),
                    "--items", str(ML100K / "ml-100k.item"), "--out", str(model), "--quiet"], check=True, cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "ml100k")
    parser.add_argument("--rates", default="10,25,50,75")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--source", type=Path, default=None, help="serve another checkout's recfunnel")
    parser.add_argument("server_args", nargs="*", help="extra `recfunnel serve` arguments (after --)")
    args = parser.parse_args()
    if not (args.model / "manifest.json").exists():
        fit_tour_model(args.model, args.source)
    users = [str(u) for u in range(1, 944)]
    port = free_port()
    command = None
    if args.source is not None:
        command = [*_cli(args.source), "serve", "--model", str(args.model), "--port", str(port), "--quiet",
                   "--events", "memory://", *args.server_args]
    proc = start_server(args.model, port, "--events", "memory://", *args.server_args, command=command)
    rows = []
    try:
        asyncio.run(open_loop(port, 5, 20, 4, users, 10, 0, 1, 10))  # warm-up
        for rate in (float(r) for r in args.rates.split(",")):
            r = asyncio.run(open_loop(port, rate, 100_000, args.duration, users, 10, 0, int(rate), 10))
            rows.append({"rate": rate, **{k: v for k, v in r.items() if not isinstance(v, list)}})
    finally:
        stop_server(proc)
    print(f"source: {args.source or 'this checkout'}; server args: {' '.join(args.server_args) or '(defaults)'}")
    print("| offered req/s | achieved | p50 ms | p99 ms | server p99 ms | degraded | refused (503) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        sent = max(r["sent"], 1)
        print(f"| {r['rate']:.0f} | {r['achieved_rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['server_p99_ms']:.0f} | {r['degraded'] / sent:.1%} | {r['statuses'].get('503', 0) / sent:.1%} |")
    write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
