"""20 model swaps under a load of concurrent requests: no request fails, no answer mixes versions.

The two versions are fitted with different configs (v1: ItemCF + popular, re-ranked by
MMR; v2: popular alone), so each user's list identifies the version that made it.
Each answer must be exactly the list its ``model_version`` gives that user when
served alone.
"""

import os
import socket
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.testing.swaps import swaps_under_load
from recfunnel.testing.synthetic import make_planted_data

SWAPS = int(os.environ.get("RECFUNNEL_SWAPS", "20"))
CLIENTS = 4
K = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    data = make_planted_data(n_users_per_group=20, n_groups=3, items_per_group=20, seed=2)
    v1 = {"channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20}],
          "reranker": {"kind": "mmr"}, "retrieval_k": 40, "history_length": 20}
    v2 = {"channels": [{"kind": "popular", "quota": 40, "params": {"half_life_days": 3.0}}], "retrieval_k": 40}
    for name, cfg in (("v1", v1), ("v2", v2)):
        fit_funnel(data, config_from_dict(cfg), progress=False).save(root / name)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RECFUNNEL_API_KEYS", None)
    # generous budgets: on two shared cores a late channel would change the answer (degraded)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recfunnel.cli", "serve", "--model", str(root / "v1"), "--port", str(port),
         "--events", "memory://", "--quiet", "--budget-ms", "20000", "--channel-timeout-ms", "10000",
         "--stage-timeout-ms", "10000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        assert proc.poll() is None and time.time() < deadline, "server did not start"
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    users = [str(u) for u in data.user_ids.ids[::5]] + ["someone-new"]
    yield base, users
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_twenty_swaps_under_load_lose_no_request_and_mix_no_versions(server):
    base, users = server
    run = swaps_under_load(base, users, SWAPS, CLIENTS, K)
    assert run.alone_degraded == 0
    assert run.distinguishable() >= len(users) - 1, "the two versions must be distinguishable by their answers"
    assert run.swap_statuses == [200] * SWAPS
    assert run.swap_versions == ["v2" if n % 2 == 0 else "v1" for n in range(SWAPS)]
    assert not run.failed, run.failed[:3]
    assert not run.mixed, run.mixed[:3]
    assert not any(o["degraded"] for _, _, o, _ in run.results)
    per_version = Counter(o["model_version"] for _, _, o, _ in run.results)
    assert per_version["v1"] > 0 and per_version["v2"] > 0, per_version
    mean_ms = sum(run.swap_seconds) / len(run.swap_seconds) * 1e3
    print(f"\n{SWAPS} swaps (mean {mean_ms:.0f} ms each) under {CLIENTS} concurrent clients: "
          f"{len(run.results)} requests, 0 failed, 0 mixed, per version {dict(per_version)}")
