"""The online service end to end: the real server (``recfunnel serve``, uvicorn) on loopback, driven over HTTP."""

import json
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.storage.artifacts import sha256_file
from recfunnel.testing.synthetic import make_planted_data

RW, RO = "rw-key-0123456789", "ro-key-0123456789"
W = {"X-API-Key": RW}
R = {"Authorization": f"Bearer {RO}"}
TINY_RANKER = {"kind": "lightgbm", "params": {"n_estimators": 20, "min_child_samples": 5, "num_threads": 1}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, *args: str, timeout: float = 60.0) -> subprocess.Popen:
    """``recfunnel serve`` in a subprocess; returns once /readyz says ready."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RECFUNNEL_API_KEYS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recfunnel.cli", "serve", "--model", str(model), "--port", str(port), "--quiet",
         *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError("server not ready in time")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    data = make_planted_data(n_users_per_group=20, n_groups=3, items_per_group=20, seed=1)
    v1 = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20},
                     {"kind": "new_items", "quota": 10}],
        "ranker": TINY_RANKER, "reranker": {"kind": "mmr"}, "retrieval_k": 40, "rank_k": 30, "history_length": 20,
    })
    fit_funnel(data, v1, progress=False).save(root / "v1")
    v2 = config_from_dict({"channels": [{"kind": "popular", "quota": 30}], "retrieval_k": 30})
    fit_funnel(data, v2, progress=False).save(root / "v2")
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    keys = state / "keys.txt"
    keys.write_text(f"# test keys\nread-write:{RW}\nread-only:{RO}\n")
    port = free_port()
    events_db = state / "events.db"
    proc = start_server(root / "v1", port, "--api-keys", str(keys), "--events", f"sqlite:///{events_db}",
                        "--max-concurrent", "3", "--max-request-bytes", "65536",
                        "--budget-ms", "3000", "--channel-timeout-ms", "1500", "--stage-timeout-ms", "1500")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        client.port = port
        client.events_db = events_db
        yield client
    stop_server(proc)


def recommend(client, user, k=5, **extra):
    r = client.post("/recommend", json={"user_id": user, "k": k, **extra}, headers=R)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_ready_and_metrics(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz").json()
    assert ready["ready"] is True and ready["model_version"] == "v1" and ready["model_id"].startswith("v1@")
    recommend(server, "u00001")
    r = server.get("/metrics", headers=R)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("recfunnel_requests_total{endpoint=\"/recommend\",status=\"200\"}",
                 "recfunnel_request_latency_seconds_bucket", "recfunnel_stage_latency_seconds_bucket{le=\"0.005\",stage=\"rank\"}",
                 "recfunnel_degraded_total", "recfunnel_events_ingested_total", "recfunnel_ready 1.0"):
        assert name in text, name


def test_recommend_with_the_debug_trace_of_every_stage(server):
    out = recommend(server, "u00001", k=5, debug=True)
    assert out["model_version"] == "v1" and out["degraded"] is False and out["degraded_reasons"] == []
    assert [i["rank"] for i in out["items"]] == [1, 2, 3, 4, 5]
    assert len({i["item_id"] for i in out["items"]}) == 5
    for item in out["items"]:
        assert item["channels"] and set(item["channels"]) <= {"itemcf", "popular", "new_items", "fallback"}
        assert isinstance(item["score"], float)
    stages = [t["stage"] for t in out["trace"]]
    assert stages == ["retrieval:itemcf", "retrieval:popular", "retrieval:new_items", "retrieval", "rank", "rerank"]
    by_stage = {t["stage"]: t for t in out["trace"]}
    assert by_stage["retrieval:popular"]["n_out"] == 20 and by_stage["retrieval"]["n_out"] == 40
    assert by_stage["rank"]["n_in"] == 40 and by_stage["rank"]["n_out"] == 30
    assert by_stage["rerank"]["n_in"] == 30 and by_stage["rerank"]["n_out"] == 5
    assert all(t["status"] == "ok" and t["latency_ms"] >= 0 for t in out["trace"])
    assert [c["item_id"] for c in by_stage["rerank"]["candidates"]] == [i["item_id"] for i in out["items"]]
    # an unknown user gets the cold-start answer, never an error
    cold = recommend(server, "somebody-new", k=7)
    assert len(cold["items"]) == 7


def test_events_are_durable_idempotent_and_the_next_request_reflects_the_click(server):
    user = "u00002"
    before = recommend(server, user, k=5, debug=True)
    clicked = before["items"][0]["item_id"]
    itemcf_before = next(t for t in before["trace"] if t["stage"] == "retrieval:itemcf")["candidates"]
    event = {"event_id": "click-1", "user_id": user, "item_id": clicked, "type": "click"}
    r = server.post("/events", json={"events": [event]}, headers=W)
    assert r.status_code == 200 and r.json() == {"received": 1, "stored": 1, "duplicates": 0, "new": [True]}
    # acknowledged means on disk: another connection to the database sees it now
    with sqlite3.connect(server.events_db) as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE event_id='click-1'").fetchone() == (1,)
    after = recommend(server, user, k=5, debug=True)
    assert clicked not in [i["item_id"] for i in after["items"]]  # already seen
    itemcf_after = next(t for t in after["trace"] if t["stage"] == "retrieval:itemcf")["candidates"]
    assert itemcf_after != itemcf_before  # the click is in the history the channels read
    # the same event again, and a batch repeating an id: stored once
    again = server.post("/events", json={"events": [event, {**event, "event_id": "imp-1", "type": "impression"},
                                                       {**event, "event_id": "imp-1", "type": "impression"}]},
                        headers=W)
    assert again.json() == {"received": 3, "stored": 1, "duplicates": 2, "new": [False, True, False]}
    with sqlite3.connect(server.events_db) as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE event_id IN ('click-1', 'imp-1')").fetchone() == (2,)


def test_published_items_are_retrievable_at_once(server):
    r = server.put("/items", json={"items": [{"item_id": "fresh-1", "attributes": {"category": "g0"}},
                                              {"item_id": "fresh-2", "publish_time": int(time.time()) - 60}]},
                   headers=W)
    assert r.status_code == 200 and r.json() == {"received": 2, "published": 2}
    out = recommend(server, "u00003", k=40, debug=True)
    pool = next(t for t in out["trace"] if t["stage"] == "retrieval:new_items")
    assert {"fresh-1", "fresh-2"} <= {c["item_id"] for c in pool["candidates"]}
    found = {i["item_id"]: i["channels"] for i in out["items"]}
    assert "fresh-1" in found and "new_items" in found["fresh-1"]
    # publishing again is harmless
    assert server.put("/items", json={"items": [{"item_id": "fresh-1"}]}, headers=W).json()["published"] == 0


def test_keys_are_required_and_a_read_only_key_cannot_write(server):
    body = {"user_id": "u00001"}
    r = server.post("/recommend", json=body)
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    r = server.post("/recommend", json=body, headers={"X-API-Key": "wrong-key-123456"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
    assert server.get("/metrics").status_code == 401
    event = {"events": [{"event_id": "ro-1", "user_id": "u", "item_id": "i00001", "type": "click"}]}
    for method, path, payload in (("POST", "/events", event), ("PUT", "/items", {"items": [{"item_id": "x"}]}),
                                  ("GET", "/admin/models", None), ("POST", "/admin/models/rollback", None),
                                  ("POST", "/admin/models/load", {"version": "v2"})):
        r = server.request(method, path, json=payload, headers=R)
        assert r.status_code == 403 and "read-only" in r.json()["detail"], (path, r.text)
    # the probes need no key
    assert server.get("/healthz").status_code == 200 and server.get("/readyz").status_code == 200


@pytest.mark.parametrize("body, where", [
    ({"user_id": "u00001", "k": 0}, "k"),
    ({"user_id": "u00001", "k": 100_000}, "k"),
    ({"user_id": "", "k": 5}, "user_id"),
    ({"k": 5}, "user_id"),
    ({"user_id": "u00001", "colour": "red"}, "colour"),
    ({"user_id": "u00001", "exclude": ["x"] * 5000}, "exclude"),
    ({"user_id": "u00001", "context": {"hour": float("nan")}}, None),
])
def test_invalid_requests_are_422_with_a_message(server, body, where):
    r = server.post("/recommend", content=json.dumps(body), headers={**R, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("invalid request") and (where is None or where in detail)


def test_a_body_over_the_limit_is_413(server):
    big = {"events": [{"event_id": f"e{i}", "user_id": "u", "item_id": "i", "type": "click"} for i in range(2000)]}
    r = server.post("/events", json=big, headers=W)
    assert r.status_code == 413 and "larger than 65536 bytes" in r.json()["detail"]
    # a chunked body (no Content-Length) is counted as it arrives
    r = server.post("/events", content=iter([json.dumps(big).encode()[i:i + 8192] for i in range(0, 200_000, 8192)]),
                    headers={**W, "content-type": "application/json"})
    assert r.status_code == 413


def in_flight(client) -> float:
    text = client.get("/metrics", headers=R).text
    return float(next(ln for ln in text.splitlines() if ln.startswith("recfunnel_in_flight_requests ")).split()[1])


def test_beyond_the_concurrency_limit_is_429_with_retry_after(server):
    # three requests whose bodies never finish hold the three slots of --max-concurrent 3
    held = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\nX-API-Key: " + RO.encode() + b"\r\n\r\n{\"user_id\"")
            held.append(s)
        deadline = time.time() + 10
        while in_flight(server) < 4:  # the three held requests and this probe
            assert time.time() < deadline, "the held requests never reached the server"
            time.sleep(0.02)
        r = server.post("/recommend", json={"user_id": "u00001"}, headers=R)
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "concurrent" in r.json()["detail"]
        assert server.get("/healthz").status_code == 200  # probes are never refused
    finally:
        for s in held:
            s.close()
    deadline = time.time() + 5
    while server.post("/recommend", json={"user_id": "u00001"}, headers=R).status_code != 200:
        assert time.time() < deadline
        time.sleep(0.05)


def test_admin_load_and_rollback(server, root):
    models = server.get("/admin/models", headers=W).json()
    assert models["current"]["version"] == "v1"
    assert {"v1", "v2"} <= {v["version"] for v in models["versions"]}
    r = server.post("/admin/models/load", json={"version": "v2"}, headers=W)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "v2" and r.json()["previous"] == "v1"
    out = recommend(server, "u00001", k=5, debug=True)
    assert out["model_version"] == "v2" and [t["stage"] for t in out["trace"]] == ["retrieval:popular", "retrieval"]
    # events and published items follow the model: the new item is known to v2 too
    assert server.put("/items", json={"items": [{"item_id": "fresh-3"}]}, headers=W).json()["published"] == 1
    r = server.post("/admin/models/rollback", headers=W)
    assert r.status_code == 200 and r.json()["version"] == "v1" and r.json()["previous"] == "v2"
    assert recommend(server, "u00001")["model_version"] == "v1"
    assert server.get("/readyz").json()["model_version"] == "v1"
    history = server.get("/admin/models", headers=W).json()["history"]
    assert [h["action"] for h in history] == ["start", "load", "rollback"]


def test_admin_refuses_paths_outside_the_root_and_missing_versions(server, root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    for body, status in (({"version": "../v1"}, 403), ({"path": "/etc"}, 403), ({"path": str(outside)}, 403),
                         ({"version": "link"}, 403), ({"version": "nope"}, 404), ({"path": "v1/../../x"}, 403),
                         ({"version": "v1", "path": "v2"}, 422), ({}, 422), ({"path": "v1\\..\\x"}, 422)):
        r = server.post("/admin/models/load", json=body, headers=W)
        assert r.status_code == status, (body, r.text)
        assert r.json()["detail"]
    assert server.get("/readyz").json()["model_version"] == "v1"


class _Payload:
    """Unpickling this creates a file: proof that something ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_model_with_a_pickle_payload_is_refused_and_nothing_runs(server, root):
    import shutil

    evil = root / "evil"
    shutil.copytree(root / "v2", evil)
    sentinel = root.parent / "pwned.txt"
    arrays = dict(np.load(evil / "ids.npz"))
    arrays["item_ids"] = np.array([_Payload(str(sentinel))], dtype=object)
    with open(evil / "ids.npz", "wb") as f:
        np.savez(f, **arrays, allow_pickle=True)
    # a consistent manifest: the checksum is not what refuses it
    manifest = json.loads((evil / "manifest.json").read_text())
    manifest["files"]["ids.npz"] = sha256_file(evil / "ids.npz")
    (evil / "manifest.json").write_text(json.dumps(manifest))
    assert pickle.dumps(_Payload("x"))  # the payload is a real pickle
    r = server.post("/admin/models/load", json={"version": "evil"}, headers=W)
    assert r.status_code == 422 and "pickle" in r.json()["detail"], r.text
    assert not sentinel.exists()
    assert server.get("/readyz").json()["model_version"] == "v1"
    assert recommend(server, "u00001")["model_version"] == "v1"


def test_serve_refuses_a_non_loopback_host_without_keys(root, tmp_path, monkeypatch, capsys):
    from recfunnel.cli import main

    monkeypatch.delenv("RECFUNNEL_API_KEYS", raising=False)
    code = main(["serve", "--model", str(root / "v1"), "--host", "0.0.0.0", "--events", "memory://"])
    assert code == 2 and "no API key is configured" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    (tmp_path / "keys").write_text("admin:short\n")
    assert main(["serve", "--model", str(root / "v1"), "--api-keys", str(tmp_path / "keys")]) == 2
    assert "expected 'read-write:<key>'" in capsys.readouterr().err


def test_not_ready_until_loaded_and_warmed_up_then_ready(root):
    """In process: with background loading /healthz answers at once, the rest 503 + Retry-After."""
    import threading
    import warnings

    with warnings.catch_warnings():  # starlette's notice about httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from recfunnel.pipeline.online.funnel import Funnel
    from recfunnel.serving.app import create_app
    from recfunnel.serving.settings import ServingSettings

    gate = threading.Event()

    def slow_loader(path):
        gate.wait(30)
        return Funnel.load(path)

    settings = ServingSettings(model_dir=root / "v2", events_url="memory://", load_in_background=True)
    app = create_app(settings, loader=slow_loader)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False and r.headers["retry-after"] == "1"
        r = client.post("/recommend", json={"user_id": "u00001"})
        assert r.status_code == 503 and r.json()["detail"] == "model is loading"
        gate.set()
        deadline = time.time() + 30
        while client.get("/readyz").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)
        assert client.post("/recommend", json={"user_id": "u00001"}).json()["model_version"] == "v2"


# ------------------------------------------------- in process: defects a new user met
def _client(app):
    import warnings

    with warnings.catch_warnings():  # starlette's notice about httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app)


@pytest.mark.parametrize("ref", ["runs/ml100k", "./runs/ml100k", "runs/ml100k/"])
def test_a_relative_model_path_is_served(root, tmp_path, monkeypatch, ref):
    import shutil

    from recfunnel.serving.app import create_app
    from recfunnel.serving.models import UnsafePath
    from recfunnel.serving.settings import ServingSettings

    shutil.copytree(root / "v2", tmp_path / "runs" / "ml100k")
    monkeypatch.chdir(tmp_path)
    app = create_app(ServingSettings(model_dir=ref))  # the default event store: runs/state/events.db
    try:
        client = _client(app)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model_version"] == "ml100k", ready.text
        out = client.post("/recommend", json={"user_id": "u00001", "k": 5})
        assert out.status_code == 200 and len(out.json()["items"]) == 5
        assert (tmp_path / "runs" / "state" / "events.db").is_file()
    finally:
        app.state.service.close()
    # the models root still refuses a model outside it, relative paths included
    (tmp_path / "other").mkdir()
    with pytest.raises(UnsafePath):
        create_app(ServingSettings(model_dir=ref, models_root="other", events_url="memory://"))
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "other", target_is_directory=True)
    with pytest.raises(UnsafePath):
        create_app(ServingSettings(model_dir="runs/link", events_url="memory://"))


@pytest.mark.parametrize("channels", [
    # the default funnel's kinds (BPR left out for time): popularity is one channel of several
    [{"kind": "itemcf", "quota": 30}, {"kind": "usercf", "quota": 20}, {"kind": "popular", "quota": 10}],
    # no popular channel: the popular fallback fills a cold user's list
    [{"kind": "itemcf", "quota": 30}],
], ids=["popular-channel", "fallback-only"])
def test_an_item_many_users_click_reaches_a_cold_user(tmp_path, channels):
    from recfunnel.serving.app import create_app
    from recfunnel.serving.settings import ServingSettings

    data = make_planted_data(n_users_per_group=20, n_groups=3, items_per_group=20, seed=1)
    config = config_from_dict({"channels": channels, "ranker": TINY_RANKER, "reranker": {"kind": "mmr"},
                               "retrieval_k": 40, "rank_k": 30, "history_length": 20})
    fit_funnel(data, config, progress=False).save(tmp_path / "m")
    app = create_app(ServingSettings(model_dir=tmp_path / "m", events_url="memory://"))
    try:
        client = _client(app)
        assert client.put("/items", json={"items": [{"item_id": "trending", "attributes": {"category": "g0"}}]}
                          ).json()["published"] == 1
        events = [{"event_id": f"c{i}", "user_id": f"fan-{i}", "item_id": "trending", "type": "click"}
                  for i in range(40)]
        assert client.post("/events", json={"events": events}).json()["stored"] == 40
        out = client.post("/recommend", json={"user_id": "cold-user", "k": 500, "debug": True}).json()
        found = {i["item_id"]: i["channels"] for i in out["items"]}
        assert "trending" in found, out["trace"]
        assert set(found["trending"]) & {"popular", "fallback"}
    finally:
        app.state.service.close()


def test_a_published_item_is_retrievable_by_a_cold_user_at_once_with_a_fresh_items_channel(root):
    from recfunnel.serving.app import create_app
    from recfunnel.serving.settings import ServingSettings

    app = create_app(ServingSettings(model_dir=root / "v1", events_url="memory://"))  # v1 has new_items
    try:
        client = _client(app)
        assert client.put("/items", json={"items": [{"item_id": "just-out"}]}).json()["published"] == 1
        out = client.post("/recommend", json={"user_id": "cold-user", "k": 500}).json()
        found = {i["item_id"]: i["channels"] for i in out["items"]}
        assert "just-out" in found and "new_items" in found["just-out"]
    finally:
        app.state.service.close()


def test_docs_work_offline_and_stay_public(root, monkeypatch):
    import re

    from recfunnel.serving.app import create_app
    from recfunnel.serving.settings import ServingSettings

    monkeypatch.setenv("RECFUNNEL_TEST_KEYS", f"read-write:{RW}")
    settings = ServingSettings(model_dir=root / "v2", events_url="memory://", api_keys_env="RECFUNNEL_TEST_KEYS",
                               load_in_background=True)
    client = _client(create_app(settings))
    for page, assets in (("/docs", ("js", "css")), ("/redoc", ("js",))):
        r = client.get(page)  # no key: the pages describe the API, as FastAPI's own did
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        urls = re.findall(r'<(?:script|link)[^>]*?(?:src|href)="([^"]+)"', r.text)
        assert urls and not re.search(r"https?://", r.text), r.text
        fetched = set()
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
            fetched.add(url.rsplit(".", 1)[-1])
        assert set(assets) <= fetched
    assert client.get("/openapi.json").status_code == 200
    # the endpoints the pages call still need their key
    assert client.post("/recommend", json={"user_id": "u00001"}).status_code == 401


def test_a_published_item_survives_a_restart(root, tmp_path):
    from recfunnel.serving.app import create_app
    from recfunnel.serving.settings import ServingSettings

    settings = ServingSettings(model_dir=root / "v1", events_url=f"sqlite:///{tmp_path / 'events.db'}")
    answers = []
    for restart in range(2):  # a loop over two starts of the service on one event store
        app = create_app(settings)
        try:
            client = _client(app)
            if restart == 0:
                assert client.put("/items", json={"items": [{"item_id": "kept", "attributes": {"category": "g0"}}]},
                                  ).json()["published"] == 1
                click = {"event_id": "c1", "user_id": "fan", "item_id": "kept", "type": "click"}
                assert client.post("/events", json={"events": [click]}).json()["stored"] == 1
            else:  # known: published again, nothing new
                assert client.put("/items", json={"items": [{"item_id": "kept"}]}).json()["published"] == 0
            cold = client.post("/recommend", json={"user_id": "cold-user", "k": 500}).json()
            fan = client.post("/recommend", json={"user_id": "fan", "k": 500}).json()
            answers.append(({i["item_id"]: i["channels"] for i in cold["items"]},
                            [i["item_id"] for i in fan["items"]]))
        finally:
            app.state.service.close()
    (cold_before, fan_before), (cold_after, fan_after) = answers
    assert "new_items" in cold_before["kept"] and "new_items" in cold_after["kept"]
    assert "kept" not in fan_before and "kept" not in fan_after  # clicked: the fan's filter holds after the restart
