"""The online service under load: the real server on loopback, open-loop request rates, per-stage latency.

Steps:

1. simulate a platform (default 100,000 items, 20,000 users, 14 days, 2M exposures;
   the simulated period ends at the last local midnight, so the new-item pools hold
   items at request time) and fit a fast funnel on its clicks: ItemCF 200 + popular 100
   + new items 50 merged to 200, a LightGBM ranker (100 trees, one thread) to 100, MMR;
2. the cost of the service over the bare call, measured one request at a time for the
   same users in alternating blocks: the in-process ``Funnel.request`` + ``Funnel.run``,
   the in-process service path (nearline request + budgeted run), and ``POST /recommend``
   over HTTP (keep-alive);
3. an open-loop load generator (Poisson arrivals at a fixed rate, bounded in requests
   and seconds per rate) at increasing rates until the service saturates (achieved
   throughput under 90% of the offered rate, over 1% errors, over 10% of the answers
   degraded (the service shedding stages to keep up), or p99 over 2 s). One
   request in ``--debug-every`` asks for the debug trace: the per-stage latencies come
   from those, the end-to-end latencies from the others. End-to-end latency is measured
   from each request's scheduled start (so a client falling behind counts, no
   coordinated omission).

The server runs with its defaults (budget 250 ms, channel and stage timeouts 100 ms,
64 concurrent requests, SQLite event store): under overload answers degrade or are
refused with 429 rather than queue. The load generator is a light asyncio HTTP/1.1
client in this process; it shares the machine's cores with the server.

    .venv/bin/python benchmarks/bench_serving.py [--rates 5,10,20,30,40,60,80,120,160,240] [--duration 20]

Writes ``bench-out/serving.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_common import ROOT, RawHTTP, fmt, free_port, pct, start_server, stop_server  # noqa: E402

CHANNELS = ("itemcf", "popular", "new_items")
STAGES = [f"retrieval:{c}" for c in CHANNELS] + ["merge", "rank", "rerank"]


def fast_config() -> dict:
    return {
        "channels": [{"kind": "itemcf", "quota": 200}, {"kind": "popular", "quota": 100},
                     {"kind": "new_items", "quota": 50}],
        "ranker": {"kind": "lightgbm", "params": {"n_estimators": 100, "num_threads": 1, "max_train_users": 5000}},
        "reranker": {"kind": "mmr"},
        "retrieval_k": 200, "rank_k": 100, "history_length": 50,
    }


def build_model(work: Path, args, log) -> tuple[Path, dict]:
    """Simulate and fit; returns the model directory and facts about both."""
    from recfunnel.config import config_from_dict
    from recfunnel.data.dataset import build_training_data
    from recfunnel.data.loaders import load_interactions, load_items, load_users
    from recfunnel.data.simulator import SimulatorConfig, simulate
    from recfunnel.pipeline.offline.fit import fit_funnel

    # day 0 at local midnight (UTC+8, the simulator's convention) so that the simulated
    # period ends at the last midnight before now
    now = int(time.time())
    midnight = (now + 8 * 3600) // 86_400 * 86_400 - 8 * 3600
    start = midnight - args.days * 86_400
    sim = work / "platform"
    t0 = time.perf_counter()
    summary = simulate(SimulatorConfig(n_users=args.users, n_items=args.items, n_days=args.days,
                                       n_authors=max(10, args.items // 20), seed=args.seed, start_time=start),
                       sim, progress=False, target_exposures=args.exposures, overwrite=True)
    sim_s = time.perf_counter() - t0
    log(f"simulated {args.items:,} items, {args.users:,} users, {summary.n_exposures:,} exposures, "
        f"{summary.n_clicks:,} clicks in {sim_s:.1f}s")
    t0 = time.perf_counter()
    data = build_training_data(load_interactions(sim / "interactions.parquet"), load_users(sim / "users.parquet"),
                               load_items(sim / "items.parquet"))
    funnel = fit_funnel(data, config_from_dict(fast_config()), progress=False, log=log)
    model = work / "models" / "v1"
    funnel.save(model)
    fit_s = time.perf_counter() - t0
    log(f"fitted the funnel on {len(data.interactions):,} clicks ({data.n_items:,} items) in {fit_s:.1f}s")
    return model, {"users": args.users, "items": data.n_items, "days": args.days, "exposures": summary.n_exposures,
                   "clicks": summary.n_clicks, "simulate_s": round(sim_s, 1), "fit_s": round(fit_s, 1),
                   "config": fast_config()}


# ------------------------------------------------------------------- cost of the service
def measure_cost(model: Path, port: int, users: list[str], k: int, blocks: int, per_block: int, log) -> dict:
    """p50 of three paths, one request at a time, for the same users, in alternating blocks."""
    from recfunnel.pipeline.nearline.state import NearlineState
    from recfunnel.pipeline.online.funnel import Funnel
    from recfunnel.pipeline.online.runners import Budget, BudgetedRunner
    from recfunnel.storage.stores import open_event_store

    funnel = Funnel.load(model)
    state = NearlineState(funnel, open_event_store("memory://"))
    runner = BudgetedRunner(Budget())  # the service's default budget
    client = RawHTTP("127.0.0.1", port)
    times: dict[str, list[float]] = {"bare": [], "service_in_process": [], "http": []}
    server_ms: list[float] = []

    def bare(user: str) -> None:
        funnel.run(funnel.request([user], time=int(time.time())), k)

    def service(user: str) -> None:
        funnel.run(state.request([user], funnel=funnel), k, trace=True, runner=runner.start())

    async def http_block(block: list[str]) -> list[float]:
        out = []
        for user in block:
            t0 = time.perf_counter()
            status, body = await client.post("/recommend", {"user_id": user, "k": k})
            out.append(time.perf_counter() - t0)
            assert status == 200, body[:300]
            server_ms.append(json.loads(body)["latency_ms"])
        return out

    async def run_all() -> None:
        for user in users[:20]:  # warm-up of every path
            bare(user)
            service(user)
            await client.post("/recommend", {"user_id": user, "k": k})
        for b in range(blocks):
            block = [users[(b * per_block + i) % len(users)] for i in range(per_block)]
            for user in block:
                t0 = time.perf_counter()
                bare(user)
                times["bare"].append(time.perf_counter() - t0)
            for user in block:
                t0 = time.perf_counter()
                service(user)
                times["service_in_process"].append(time.perf_counter() - t0)
            times["http"].extend(await http_block(block))
        client.close()

    try:
        asyncio.run(run_all())
    finally:
        runner.close()
    out = {name: {"n": len(v), "p50_ms": pct(v, 50), "p90_ms": pct(v, 90), "p99_ms": pct(v, 99)}
           for name, v in times.items()}
    out["server_handler"] = {"n": len(server_ms), "p50_ms": float(np.median(server_ms)),
                             "p99_ms": float(np.percentile(server_ms, 99))}
    out["ratio_http_over_bare_p50"] = out["http"]["p50_ms"] / out["bare"]["p50_ms"]
    out["ratio_service_in_process_over_bare_p50"] = out["service_in_process"]["p50_ms"] / out["bare"]["p50_ms"]
    out["ratio_http_over_service_in_process_p50"] = out["http"]["p50_ms"] / out["service_in_process"]["p50_ms"]
    log(f"cost: bare p50 {out['bare']['p50_ms']:.2f} ms, service in process {out['service_in_process']['p50_ms']:.2f} "
        f"ms, HTTP {out['http']['p50_ms']:.2f} ms -> {out['ratio_http_over_bare_p50']:.2f}x")
    return out


# ------------------------------------------------------------------------ open-loop load
async def open_loop(port: int, rate: float, n: int, duration: float, users: list[str], k: int,
                    debug_every: int, seed: int, drain: float) -> dict:
    """Poisson arrivals at ``rate`` for ``duration`` seconds (``n`` requests at most)."""
    rng = random.Random(seed)
    client = RawHTTP("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    records: list[dict] = []

    async def one(i: int, scheduled: float) -> None:
        debug = debug_every > 0 and i % debug_every == 0
        sent = loop.time()
        status, body = await client.post("/recommend", {"user_id": rng.choice(users), "k": k, "debug": debug},
                                         timeout=drain)
        done = loop.time()
        rec = {"status": status, "latency": done - scheduled, "lag": sent - scheduled, "done": done, "debug": debug}
        if status == 200:
            try:
                out = json.loads(body)
                rec["degraded"] = out["degraded"]
                rec["server_ms"] = out["latency_ms"]
                if debug:
                    rec["trace"] = {t["stage"]: (t["latency_ms"], t["status"]) for t in out["trace"]}
            except (ValueError, KeyError, TypeError):
                rec["status"] = -2  # an answer that is not the service's JSON
        records.append(rec)

    tasks = []
    start = loop.time() + 0.05
    at = start
    for i in range(n):
        if at - start > duration:
            break
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, at)))
        at += rng.expovariate(rate)
    sent = len(tasks)
    arrivals_s = at - start
    if tasks:
        await asyncio.wait(tasks, timeout=drain + 5)
    for t in tasks:
        t.cancel()
    client.close()
    ok = [r for r in records if r["status"] == 200]
    last = max((r["done"] for r in ok), default=start)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    unanswered = sent - len(records)
    if unanswered:
        statuses["unanswered"] = unanswered
    plain = [r["latency"] for r in ok if not r["debug"]]
    traced = [r for r in ok if r["debug"]]
    stages: dict[str, dict] = {}
    for stage in STAGES:
        if stage == "merge":
            # the "retrieval" entry is the wall time of the channels and the merge together; the
            # merge is what remains after the slowest channel
            vals = [r["trace"]["retrieval"][0] - max(r["trace"].get(f"retrieval:{c}", (0.0, ""))[0] for c in CHANNELS)
                    for r in traced if "retrieval" in r["trace"]]
        else:
            vals = [r["trace"][stage][0] for r in traced if stage in r["trace"] and r["trace"][stage][1] == "ok"]
        vals_s = np.asarray(vals, dtype=np.float64) / 1e3
        stages[stage] = {"n": len(vals), "p50_ms": pct(vals_s, 50), "p99_ms": pct(vals_s, 99)}
    server = np.asarray([r["server_ms"] for r in ok], dtype=np.float64) / 1e3
    return {
        "offered_rps": rate, "sent": sent, "arrivals_s": round(arrivals_s, 2), "traced": len(traced),
        "ok": len(ok), "errors": sent - len(ok), "statuses": statuses,
        "achieved_rps": len(ok) / max(last - start, 1e-9),
        "degraded": sum(bool(r["degraded"]) for r in ok), "connections": client.opened,
        "p50_ms": pct(plain, 50), "p90_ms": pct(plain, 90), "p99_ms": pct(plain, 99), "max_ms": pct(plain, 100),
        "server_p50_ms": pct(server, 50), "server_p99_ms": pct(server, 99),
        "client_lag_p99_ms": pct([r["lag"] for r in records], 99),
        "stages": stages,
    }


def saturated(row: dict) -> bool:
    return (row["achieved_rps"] < 0.9 * row["offered_rps"] or row["errors"] > 0.01 * row["sent"]
            or row["degraded"] > 0.1 * max(row["ok"], 1) or (row["p99_ms"] or 0) > 2000)


def tables(result: dict) -> str:
    c = result["cost"]
    lines = ["### Cost of the service over the bare funnel call (one request at a time, same users)", "",
             "| path | requests | p50 ms | p90 ms | p99 ms | p50 / bare p50 |", "|---|---|---|---|---|---|"]
    for name, label in (("bare", "in-process `Funnel.request` + `Funnel.run`"),
                        ("service_in_process", "in-process service path (nearline request + budgeted run)"),
                        ("http", "`POST /recommend` over HTTP (loopback, keep-alive)")):
        r = c[name]
        lines.append(f"| {label} | {r['n']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['p50_ms'] / c['bare']['p50_ms']:.2f}x |")
    lines.append(f"| (server-side handler time of the HTTP requests, `latency_ms`) | {c['server_handler']['n']} | "
                 f"{c['server_handler']['p50_ms']:.2f} | - | {c['server_handler']['p99_ms']:.2f} | "
                 f"{c['server_handler']['p50_ms'] / c['bare']['p50_ms']:.2f}x |")
    lines += ["", "### Open-loop load (Poisson arrivals), end to end from the scheduled send time", "",
              "| offered req/s | sent | achieved req/s | errors | degraded | e2e p50 ms | e2e p99 ms | "
              "server p50 ms | server p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rates"]:
        errs = r["errors"]
        detail = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items() if k != "200")
        lines.append(f"| {r['offered_rps']:g} | {r['sent']} | {r['achieved_rps']:.1f} | {errs}"
                     f"{f' ({detail})' if errs else ''} | {r['degraded']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                     f"{fmt(r['server_p50_ms'])} | {fmt(r['server_p99_ms'])} |")
    lines += ["", "### Per stage, p50 / p99 ms (from the debug traces; a stage that timed out or was skipped is "
              "not counted; merge = retrieval wall time minus the slowest channel's run time, so it includes "
              "waiting for a pool thread)", "",
              "| offered req/s | traced | rank timed out / skipped | " + " | ".join(STAGES) + " |",
              "|---|---|---|" + "---|" * len(STAGES)]
    for r in result["rates"]:
        s = r["stages"]
        cells = [f"{fmt(s[st]['p50_ms'], 2)} / {fmt(s[st]['p99_ms'], 2)}" for st in STAGES]
        lines.append(f"| {r['offered_rps']:g} | {r['traced']} | {r['traced'] - s['rank']['n']} | "
                     + " | ".join(cells) + " |")
    over, sat = result["p99_over_50ms_at_rps"], result["saturated_at_rps"]
    lines += ["", f"p99 first exceeds 50 ms at: {'no rate tried' if over is None else f'{over:g} req/s'}; "
              f"saturated at: {'no rate tried' if sat is None else f'{sat:g} req/s'}; "
              f"highest achieved throughput: {result['max_achieved_rps']:.1f} req/s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--exposures", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rates", default="5,10,20,30,40,60,80,120,160,240", help="offered req/s, increasing")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals per rate")
    parser.add_argument("--max-requests", type=int, default=3000, help="requests per rate at most")
    parser.add_argument("--drain", type=float, default=20.0, help="seconds to wait for answers after the last arrival")
    parser.add_argument("--debug-every", type=int, default=4, help="one request in N asks for the debug trace")
    parser.add_argument("--cost-blocks", type=int, default=4)
    parser.add_argument("--cost-per-block", type=int, default=75)
    parser.add_argument("--work", type=Path, default=None, help="working directory (kept); default a temp dir")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "serving.json")
    args = parser.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",") if x.strip()]

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="recfunnel-bench-serving-"))
    proc = None
    try:
        model, facts = build_model(work, args, log)
        from recfunnel.pipeline.online.funnel import Funnel

        ids = Funnel.load(model).user_ids.ids
        rng = random.Random(args.seed)
        users = [str(u) for u in rng.sample(list(ids), min(5000, len(ids)))]
        port = free_port()
        t0 = time.perf_counter()
        proc = start_server(model, port, "--events", f"sqlite:///{work / 'state' / 'events.db'}",
                            log=work / "server.log")
        facts["server_start_s"] = round(time.perf_counter() - t0, 1)
        log(f"server ready on port {port} in {facts['server_start_s']}s")
        cost = measure_cost(model, port, users[:args.cost_blocks * args.cost_per_block], args.k, args.cost_blocks,
                            args.cost_per_block, log)
        rows = []
        for i, rate in enumerate(rates):
            row = asyncio.run(open_loop(port, rate, args.max_requests, args.duration, users, args.k, args.debug_every,
                                        args.seed + i, args.drain))
            rows.append(row)
            log(f"{rate:g} req/s: sent {row['sent']}, achieved {row['achieved_rps']:.1f} req/s, "
                f"errors {row['errors']}, degraded {row['degraded']}, p50 {fmt(row['p50_ms'])} ms, "
                f"p99 {fmt(row['p99_ms'])} ms")
            if saturated(row):
                break
            time.sleep(1.0)  # let the server's queues empty between rates
    finally:
        if proc is not None:
            stop_server(proc)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    over = next((r["offered_rps"] for r in rows if (r["p99_ms"] or 0) > 50), None)
    sat = next((r["offered_rps"] for r in rows if saturated(r)), None)
    result = {
        "bench": "serving", "setup": facts, "k": args.k, "duration_s": args.duration,
        "max_requests": args.max_requests, "debug_every": args.debug_every,
        "server": "recfunnel serve defaults (budget 250 ms, channel/stage timeout 100 ms, max 64 concurrent, "
                  "SQLite events)",
        "cost": cost, "rates": rows, "p99_over_50ms_at_rps": over, "saturated_at_rps": sat,
        "max_achieved_rps": max(r["achieved_rps"] for r in rows),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(tables(result))
    print(f"\n(whole run {result['wall_s']:.0f}s; JSON in {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
