"""Model swaps under load against a running service: what the swap test and the reliability benchmark share.

:func:`swaps_under_load` first records each version's answer for every user when
served alone, then keeps ``clients`` threads sending ``/recommend`` while the admin
endpoint alternates the two versions ``swaps`` times. The caller judges the
outcome: the test asserts, the benchmark reports.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SwapRun:
    """What happened during :func:`swaps_under_load`.

    Attributes:
        expected: version -> user -> item ids that version answers when served alone.
        alone_degraded: answers flagged degraded while recording ``expected``.
        results: (user, HTTP status or -1 on a transport error, JSON body or error text, seconds)
            of every request sent during the swaps.
        swap_statuses: status code of each swap request, in order.
        swap_versions: the version each swap response names (None when it had none).
        swap_seconds: duration of each swap request.
    """

    expected: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    alone_degraded: int = 0
    results: list[tuple[str, int, Any, float]] = field(default_factory=list)
    swap_statuses: list[int] = field(default_factory=list)
    swap_versions: list[str | None] = field(default_factory=list)
    swap_seconds: list[float] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[str, int, Any, float]]:
        return [r for r in self.results if r[1] != 200]

    @property
    def mixed(self) -> list[tuple[str, str]]:
        """(user, version) of answers that are not that version's list for that user."""
        return [(u, o["model_version"]) for u, s, o, _ in self.results if s == 200
                and [i["item_id"] for i in o["items"]] != self.expected[o["model_version"]][u]]

    def distinguishable(self, a: str = "v1", b: str = "v2") -> int:
        """Users whose lists differ between versions ``a`` and ``b``."""
        return sum(self.expected[a][u] != self.expected[b][u] for u in self.expected[a])


def _recommend(client: httpx.Client, user: str, k: int) -> tuple[int, Any]:
    r = client.post("/recommend", json={"user_id": user, "k": k})
    return r.status_code, (r.json() if r.status_code == 200 else r.text)


def swaps_under_load(base_url: str, users: list[str], swaps: int, clients: int = 4, k: int = 8,
                     versions: tuple[str, str] = ("v2", "v1"), pause_s: float = 0.1) -> SwapRun:
    """Alternate ``versions`` ``swaps`` times while ``clients`` threads request recommendations.

    Raises:
        AssertionError: when a version cannot be loaded or answered alone (nothing to compare with).
    """
    run = SwapRun()
    with httpx.Client(base_url=base_url, timeout=30) as admin:
        for version in versions:  # each version's answers when served alone
            r = admin.post("/admin/models/load", json={"version": version})
            assert r.status_code == 200, r.text
            run.expected[version] = {}
            for user in users:
                status, out = _recommend(admin, user, k)
                assert status == 200 and out["model_version"] == version, out
                run.alone_degraded += bool(out["degraded"])
                run.expected[version][user] = [i["item_id"] for i in out["items"]]

        stop = threading.Event()
        lock = threading.Lock()

        def load(seed: int) -> None:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                i = seed
                while not stop.is_set():
                    user = users[i % len(users)]
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        status, out = _recommend(client, user, k)
                    except httpx.HTTPError as e:
                        status, out = -1, repr(e)
                    with lock:
                        run.results.append((user, status, out, time.perf_counter() - t0))

        threads = [threading.Thread(target=load, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        try:
            for n in range(swaps):
                version = versions[n % 2]
                t0 = time.perf_counter()
                r = admin.post("/admin/models/load", json={"version": version})
                run.swap_seconds.append(time.perf_counter() - t0)
                run.swap_statuses.append(r.status_code)
                run.swap_versions.append(r.json().get("version") if r.status_code == 200 else None)
                time.sleep(pause_s)  # requests run on the new version before the next swap
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    return run


__all__ = ["SwapRun", "swaps_under_load"]
