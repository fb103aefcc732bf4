"""Reliability of the online service, each check with its figure: the real server, driven over HTTP.

1. ``kill -9`` during event ingestion (``--rounds``, default 50): the logic of
   ``tests/system/test_kill9_events.py`` (SQLite store; batches of new events, resends
   of acknowledged ones, repeats within a batch, retries of unanswered ones; SIGKILL at
   a random moment; restart on the same store). Figures: events acknowledged, lost,
   duplicates stored.
2. ``--swaps`` (default 20) model swaps under the load of 4 concurrent clients (the
   logic of ``tests/system/test_model_swap.py``): failed requests, answers that are not
   exactly their version's list (mixed versions).
3. A retrieval channel made to raise, then to hang (``benchmarks/faulty_server.py``; the
   service's default budget of 250 ms): share of requests answered with 200 and a full
   list, within the budget, flagged ``degraded``.
4. Schemathesis over the OpenAPI schema (``tests/system/test_service_schema.py`` with
   ``RECFUNNEL_SCHEMA_EXAMPLES``, default 1000 examples per operation): cases
   run, server errors, failed checks (a 4xx without a message is a failure).
5. A model whose ``ids.npz`` / a stage's arrays carry a pickle payload, and model
   references that leave the models root: status, and that nothing ran (no file
   written by the payload, the served version unchanged, no load in the history).

    .venv/bin/python benchmarks/bench_reliability.py [--rounds 50] [--swaps 20] [--schema-examples 1000]

Writes ``bench-out/reliability.json`` and prints a markdown table (one row per check).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_common import ROOT, free_port, pct, start_server, stop_server  # noqa: E402

from recfunnel.testing.swaps import swaps_under_load  # noqa: E402

K = 8


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _import_test(name: str):
    path = ROOT / "tests" / "system" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fit_models(root: Path) -> None:
    """v1: ItemCF + popular + new items, LightGBM, MMR; v2: popular alone (answers differ per user)."""
    from recfunnel.config import config_from_dict
    from recfunnel.pipeline.offline.fit import fit_funnel
    from recfunnel.testing.synthetic import make_planted_data

    data = make_planted_data(n_users_per_group=20, n_groups=3, items_per_group=20, seed=2)
    v1 = {"channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20},
                       {"kind": "new_items", "quota": 10}],
          "ranker": {"kind": "lightgbm", "params": {"n_estimators": 20, "min_child_samples": 5, "num_threads": 1}},
          "reranker": {"kind": "mmr"}, "retrieval_k": 40, "rank_k": 30, "history_length": 20}
    v2 = {"channels": [{"kind": "popular", "quota": 40, "params": {"half_life_days": 3.0}}], "retrieval_k": 40}
    for name, cfg in (("v1", v1), ("v2", v2)):
        fit_funnel(data, config_from_dict(cfg), progress=False).save(root / name)


def users_of(model: Path) -> list[str]:
    from recfunnel.pipeline.online.funnel import Funnel

    return [str(u) for u in Funnel.load(model).user_ids.ids]


# ----------------------------------------------------------------------------- 1. kill -9
def check_kill9(work: Path, rounds: int) -> dict:
    mod = _import_test("test_kill9_events")
    model = mod.fit_small_model(work / "kill9-models")
    every = max(1, rounds // 10)

    def progress(msg: str) -> None:
        n = int(msg.split("/")[0].split()[-1])
        if n % every == 0 or n == rounds:
            log("kill -9 " + msg)

    return mod.run_kill9(model, work / "kill9-state" / "events.db", rounds, seed=7, log=progress)


# ----------------------------------------------------------------------------- 2. swaps
def check_swaps(root: Path, swaps: int, clients: int = 4) -> dict:
    """The logic of ``tests/system/test_model_swap.py`` (shared in recfunnel.testing.swaps), reported."""
    users = users_of(root / "v1")[::5] + ["someone-new"]
    port = free_port()
    # generous budgets, as in the test: on two shared cores a late channel would change an answer
    proc = start_server(root / "v1", port, "--events", "memory://", "--budget-ms", "20000",
                        "--channel-timeout-ms", "10000", "--stage-timeout-ms", "10000")
    try:
        run = swaps_under_load(f"http://127.0.0.1:{port}", users, swaps, clients, K)
    finally:
        stop_server(proc)
    ok = [o for _, s, o, _ in run.results if s == 200]
    swap_status = Counter(run.swap_statuses)
    return {"swaps": swaps, "swaps_ok": swap_status[200], "swap_statuses": dict(swap_status),
            "swap_mean_ms": float(np.mean(run.swap_seconds) * 1e3), "clients": clients,
            "requests": len(run.results), "failed": len(run.failed), "mixed": len(run.mixed),
            "degraded": sum(o["degraded"] for o in ok),
            "per_version": dict(Counter(o["model_version"] for o in ok)),
            "distinguishable_users": f"{run.distinguishable()}/{len(users)}",
            "p99_ms": pct([r[3] for r in run.results], 99)}


# -------------------------------------------------------------------- 3. faulty channel
def check_faulty_channel(root: Path, mode: str, requests: int, clients: int = 4, budget_ms: float = 250.0) -> dict:
    users = users_of(root / "v1") + ["someone-new"]
    port = free_port()
    cmd = [sys.executable, str(ROOT / "benchmarks" / "faulty_server.py"), "--model", str(root / "v1"),
           "--port", str(port), "--channel", "itemcf", "--mode", mode, "--hang-s", "2.0",
           "--budget-ms", str(budget_ms)]
    proc = start_server(root / "v1", port, command=cmd)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as probe:  # until the fault is armed (not counted)
            deadline = time.time() + 10
            while not probe.post("/recommend", json={"user_id": users[0], "k": K}).json()["degraded"]:
                assert time.time() < deadline, "the fault never showed"
                time.sleep(0.02)
        results: list[dict] = []
        lock = threading.Lock()
        counter = iter(range(requests))

        def client_loop(seed: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    user = users[(i * 7 + seed) % len(users)]
                    t0 = time.perf_counter()
                    try:
                        r = client.post("/recommend", json={"user_id": user, "k": K, "debug": True})
                        status = r.status_code
                        out = r.json() if status == 200 else {}
                    except httpx.HTTPError:
                        status, out = -1, {}
                    rec = {"status": status, "e2e": time.perf_counter() - t0}
                    if status == 200:
                        rec.update(server_ms=out["latency_ms"], degraded=out["degraded"], n=len(out["items"]),
                                   channel=next(t["status"] for t in out["trace"] if t["stage"] == "retrieval:itemcf"))
                    with lock:
                        results.append(rec)

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        wall = time.perf_counter() - t0
    finally:
        stop_server(proc)
    ok = [r for r in results if r["status"] == 200]
    n = len(results)
    return {
        "mode": mode, "requests": n, "clients": clients, "budget_ms": budget_ms, "wall_s": round(wall, 1),
        "answered_200": len(ok), "full_list": sum(r["n"] == K for r in ok),
        "within_budget_server": sum(r["server_ms"] <= budget_ms for r in ok),
        "within_budget_e2e": sum(r["e2e"] * 1e3 <= budget_ms for r in ok),
        "degraded": sum(bool(r["degraded"]) for r in ok),
        "channel_status": dict(Counter(r["channel"] for r in ok)),
        "server_p50_ms": float(np.median([r["server_ms"] for r in ok])) if ok else None,
        "server_max_ms": max((r["server_ms"] for r in ok), default=None),
        "e2e_p50_ms": pct([r["e2e"] for r in ok], 50), "e2e_p99_ms": pct([r["e2e"] for r in ok], 99),
        "e2e_max_ms": pct([r["e2e"] for r in ok], 100),
    }


# -------------------------------------------------------------------------- 4. schemathesis
def check_schema(examples: int) -> dict:
    env = {**os.environ, "RECFUNNEL_SCHEMA_EXAMPLES": str(examples), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/system/test_service_schema.py", "-q", "-s",
                           "-p", "no:cacheprovider", "-o", "addopts="], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    seen = re.search(r"schemathesis: (\d+) cases, statuses (\{[^}]*\})", out)
    summary = re.findall(r"(\d+) (passed|failed|error|errors)", out)
    counts = {kind: int(n) for n, kind in summary}
    statuses = {int(k): int(v) for k, v in re.findall(r"(\d+): (\d+)", seen.group(2))} if seen else {}
    return {"examples_per_operation": examples, "cases": int(seen.group(1)) if seen else None,
            "statuses": statuses, "server_errors": sum(v for k, v in statuses.items() if k >= 500),
            "tests_passed": counts.get("passed", 0), "tests_failed": counts.get("failed", 0) + counts.get("error", 0)
            + counts.get("errors", 0), "exit_code": proc.returncode, "wall_s": round(wall, 1),
            "tail": out[-1500:] if proc.returncode else ""}


# --------------------------------------------------------------- 5. pickle and path escapes
class _Payload:
    """Unpickling this creates a file: proof that something ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant_pickle(model: Path, file: str, key: str | None, sentinel: Path) -> None:
    from recfunnel.storage.artifacts import sha256_file

    arrays = dict(np.load(model / file))
    key = key or next(iter(arrays))
    arrays[key] = np.array([_Payload(str(sentinel))], dtype=object)
    with open(model / file, "wb") as f:
        np.savez(f, **arrays, allow_pickle=True)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"][file] = sha256_file(model / file)  # consistent: the checksum is not what refuses it
    (model / "manifest.json").write_text(json.dumps(manifest))


def check_refusals(root: Path, work: Path) -> list[dict]:
    sentinels = []
    # two pickle-carrying models: the id arrays, and a stage's arrays
    for name, file, key in (("evil-ids", "ids.npz", "item_ids"), ("evil-stage", None, None)):
        shutil.copytree(root / "v1", root / name)
        if file is None:
            file = str(next(p for p in sorted((root / name).rglob("*.npz")) if "stages" in p.parts)
                       .relative_to(root / name))
        sentinel = work / f"pwned-{name}.txt"
        _plant_pickle(root / name, file, key, sentinel)
        sentinels.append((name, file, sentinel))
    outside = work / "outside"
    shutil.copytree(root / "v1", outside / "model")  # a valid model: only its place refuses it
    (root / "link").symlink_to(outside / "model", target_is_directory=True)
    port = free_port()
    proc = start_server(root / "v1", port, "--events", "memory://")
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for name, file, sentinel in sentinels:
                r = c.post("/admin/models/load", json={"version": name})
                current = c.get("/readyz").json()["model_version"]
                rows.append({"check": f"pickle payload in {file}", "ref": {"version": name}, "status": r.status_code,
                             "detail": r.json().get("detail", ""), "code_ran": sentinel.exists(),
                             "serving": current, "refused": r.status_code in (403, 422) and "pickle" in r.text
                             and not sentinel.exists() and current == "v1"})
            for ref in ({"version": "../v1"}, {"path": "/etc"}, {"path": str(outside / "model")},
                        {"version": "link"}, {"path": "v1/../../outside/model"}, {"path": "v1\\..\\..\\x"},
                        {"version": "nope"}):
                r = c.post("/admin/models/load", json=ref)
                current = c.get("/readyz").json()["model_version"]
                expected = 404 if ref == {"version": "nope"} else (422, 403)
                refused = (r.status_code == expected if isinstance(expected, int) else r.status_code in expected)
                rows.append({"check": "model reference outside the models root" if ref != {"version": "nope"}
                             else "missing version", "ref": ref, "status": r.status_code,
                             "detail": r.json().get("detail", ""), "code_ran": False, "serving": current,
                             "refused": refused and current == "v1"})
            history = c.get("/admin/models").json()["history"]
    finally:
        stop_server(proc)
    for row in rows:
        row["loads_in_history"] = sum(h["action"] == "load" for h in history)
        # the temporary directory is not part of the figure
        row["ref"] = json.loads(json.dumps(row["ref"]).replace(str(work), "<tmp>"))
        row["detail"] = row["detail"].replace(str(work), "<tmp>")
    return rows


def table(result: dict) -> str:
    k, s, sc = result["kill9"], result["swaps"], result["schema"]
    lines = ["| check | figure | target | ok |", "|---|---|---|---|"]

    def row(check: str, figure: str, target: str, ok: bool) -> None:
        lines.append(f"| {check} | {figure} | {target} | {'yes' if ok else '**NO**'} |")

    row(f"`kill -9` during ingestion, {k['rounds']} rounds (SQLite)",
        f"{k['acknowledged']:,} events acknowledged ({k['resends']:,} resends of acknowledged events), "
        f"lost {k['lost']}, duplicates stored {k['duplicates_stored']}, repeats within a batch stored twice "
        f"{k['batch_repeats_stored']}, stored not as sent {k['mismatched']}; {k['failed_requests']} requests cut by "
        f"the kills (their events retried in the next round; after the last kill {k['uncertain_stored']} unanswered "
        f"events were stored, {k['uncertain_absent']} not); all acknowledged posted again after the last restart: "
        f"{k['final_resend_stored']} stored",
        "0 lost, 0 duplicates", k["lost"] == 0 and k["duplicates_stored"] == 0 and k["batch_repeats_stored"] == 0
        and k["mismatched"] == 0 and k["final_resend_stored"] == 0)
    row(f"{s['swaps']} model swaps under {s['clients']} concurrent clients",
        f"{s['requests']:,} requests, {s['failed']} failed, {s['mixed']} mixing versions, {s['degraded']} degraded; "
        f"{s['swaps_ok']}/{s['swaps']} swaps answered 200 (mean {s['swap_mean_ms']:.0f} ms); per version "
        f"{s['per_version']}", "0 failed, 0 mixed",
        s["failed"] == 0 and s["mixed"] == 0 and s["swaps_ok"] == s["swaps"])
    for f in result["faulty"]:
        n = max(f["requests"], 1)
        row(f"channel `itemcf` made to {f['mode']}" + (" (2 s per call)" if f["mode"] == "hang" else "")
            + f", {f['clients']} clients, budget {f['budget_ms']:g} ms",
            f"{f['requests']} requests: {100 * f['answered_200'] / n:.1f}% answered 200 with a full list "
            f"({f['full_list']}), {100 * f['within_budget_server'] / n:.1f}% within budget server-side "
            f"(max {f['server_max_ms']:.0f} ms), {100 * f['within_budget_e2e'] / n:.1f}% end to end "
            f"(p99 {f['e2e_p99_ms']:.0f} ms, max {f['e2e_max_ms']:.0f} ms), {100 * f['degraded'] / n:.1f}% "
            f"flagged degraded; channel {f['channel_status']}", "100% answered in budget, degraded",
            f["answered_200"] == f["requests"] == f["full_list"] == f["within_budget_server"] == f["degraded"])
    row(f"schemathesis, {sc['examples_per_operation']} examples per operation",
        f"{sc['cases']:,} cases ({sum(v for c, v in sc['statuses'].items() if c not in (401, 405)):,} past the key "
        f"check and routing), statuses {sc['statuses']}, server errors {sc['server_errors']}; "
        f"{sc['tests_passed']} operations passed, {sc['tests_failed']} failed (checks: schema conformance, "
        f"no 5xx, every 4xx with a message)", "0 server errors",
        sc["server_errors"] == 0 and sc["tests_failed"] == 0 and sc["exit_code"] == 0)
    for r in result["refusals"]:
        row(f"{r['check']}: `{json.dumps(r['ref'])}`",
            f"{r['status']} \"{r['detail'][:90]}\"; "
            + (f"payload ran: {'yes' if r['code_ran'] else 'no'}; " if "pickle" in r["check"] else "")
            + f"still serving {r['serving']}", "refused, nothing runs", r["refused"] and not r["code_ran"])
    lines.append(f"\n(loads in the model history after all refusals: {result['refusals'][-1]['loads_in_history']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="kill -9 rounds")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--fault-requests", type=int, default=400, help="requests per fault mode")
    parser.add_argument("--schema-examples", type=int, default=1000, help="schemathesis examples per operation")
    parser.add_argument("--only", default="kill9,swaps,faulty,schema,refusals")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "reliability.json")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="recfunnel-bench-reliability-"))
    result: dict = {"bench": "reliability"}
    try:
        root = work / "models"
        fit_models(root)
        if "refusals" in only:
            log("pickle payloads and path escapes")
            result["refusals"] = check_refusals(root, work)
        if "faulty" in only:
            result["faulty"] = []
            for mode in ("raise", "hang"):
                log(f"channel made to {mode}")
                result["faulty"].append(check_faulty_channel(root, mode, args.fault_requests))
        if "swaps" in only:
            log(f"{args.swaps} model swaps under load")
            result["swaps"] = check_swaps(root, args.swaps)
        if "kill9" in only:
            log(f"kill -9: {args.rounds} rounds")
            result["kill9"] = check_kill9(work, args.rounds)
        if "schema" in only:
            log(f"schemathesis, {args.schema_examples} examples per operation")
            result["schema"] = check_schema(args.schema_examples)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(wall_s=round(time.perf_counter() - started, 1), python=platform.python_version(),
                  cpus=os.cpu_count())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    if only >= {"kill9", "swaps", "faulty", "schema", "refusals"}:
        print(table(result))
    else:
        print(json.dumps(result, indent=2, default=str))
    print(f"\n(whole run {result['wall_s']:.0f}s; JSON in {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
