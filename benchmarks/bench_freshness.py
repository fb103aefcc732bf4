"""How long from an acknowledged event to a changed recommendation, over HTTP.

The README tour's model (``benchmarks/bench_serving_default.py`` fits it when missing) is served
by ``recfunnel serve`` with its defaults and a SQLite event store (durable: each ``POST /events``
is fsynced before its answer). For each trial a user's top-10 is read, a click on its first item
is posted, and ``/recommend`` is asked again until the answer changes (the clicked item is then
seen, so it must leave the list); the time is from the event's acknowledgement to the first
changed answer, and from the post to it (the write included). One request at a time.

    .venv/bin/python benchmarks/bench_freshness.py [--model runs/ml100k] [--trials 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving_default import fit_tour_model  # noqa: E402
from serving_common import ROOT, RawHTTP, free_port, pct, start_server, stop_server, write_json  # noqa: E402


async def trials(port: int, n: int) -> dict:
    client = RawHTTP("127.0.0.1", port)
    ack_to_change, post_to_change, polls = [], [], []
    for t in range(n):
        user = str(1 + (t * 37) % 943)
        status, body = await client.post("/recommend", {"user_id": user, "k": 10})
        assert status == 200, body
        before = [i["item_id"] for i in json.loads(body)["items"]]
        event = {"events": [{"event_id": f"fresh-{time.time_ns()}-{t}", "user_id": user, "item_id": before[0],
                             "type": "click"}]}
        t0 = time.perf_counter()
        status, body = await client.post("/events", event)
        acked = time.perf_counter()
        assert status == 200, body
        asked = 0
        while True:
            asked += 1
            status, body = await client.post("/recommend", {"user_id": user, "k": 10})
            if [i["item_id"] for i in json.loads(body)["items"]] != before:
                done = time.perf_counter()
                break
            if asked >= 1000:
                raise RuntimeError(f"user {user}: the answer never changed")
        ack_to_change.append(done - acked)
        post_to_change.append(done - t0)
        polls.append(asked)
    client.close()
    return {"trials": n, "ack_to_change_ms": [pct(ack_to_change, q) for q in (50, 99)],
            "post_to_change_ms": [pct(post_to_change, q) for q in (50, 99)],
            "requests_until_changed_max": max(polls)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "ml100k")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.model / "manifest.json").exists():
        fit_tour_model(args.model, None)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(args.model, port, "--events", f"sqlite:///{Path(tmp) / 'events.db'}")
        try:
            result = asyncio.run(trials(port, args.trials))
        finally:
            stop_server(proc)
    print("| trials | ack -> changed answer p50 / p99 ms | post -> changed answer p50 / p99 ms | "
          "requests until changed (max) |")
    print("|---|---|---|---|")
    a, p = result["ack_to_change_ms"], result["post_to_change_ms"]
    print(f"| {result['trials']} | {a[0]:.1f} / {a[1]:.1f} | {p[0]:.1f} / {p[1]:.1f} | "
          f"{result['requests_until_changed_max']} |")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
