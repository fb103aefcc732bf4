"""One contract, every event store backend: memory, SQLite, Redis (a real server)."""

import threading
from pathlib import Path

import pytest

from recfunnel.storage.events import (
    Event,
    MemoryEventStore,
    PublishedItem,
    StorageError,
    compact_events,
)
from recfunnel.storage.redis_events import RedisEventStore
from recfunnel.storage.sqlite_events import SQLiteEventStore
from recfunnel.storage.stores import open_event_store
from recfunnel.testing.redis_server import running_redis_or_skip

T0 = 1_700_000_000


class Backend:
    """Opens, reopens and (for durable backends) restarts one store."""

    def __init__(self, kind: str, tmp_path: Path):
        self.kind = kind
        self.tmp_path = tmp_path
        self.server = None
        self._memory = None
        if kind == "redis":
            self.server = running_redis_or_skip(tmp_path / "redis")

    def url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp_path / 'events.db'}"
        if self.kind == "redis":
            return self.server.url
        return "memory://"

    def open(self):
        if self.kind == "memory":
            self._memory = self._memory or MemoryEventStore()
            return self._memory
        return open_event_store(self.url())

    def restart(self, crash: bool) -> None:
        """What a durable backend must survive: the server (or the process) going away."""
        if self.server is not None:
            self.server.restart(crash=crash)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path)
    yield b
    b.close()


def ev(i: int, user: str = "u1", item: str | None = None, type_: str = "click") -> Event:
    return Event(f"e{i}", user, item or f"i{i % 7}", type_, T0 + i, 1.0 + i % 3)


def test_open_event_store_picks_the_backend(backend):
    store = backend.open()
    expected = {"memory": MemoryEventStore, "sqlite": SQLiteEventStore, "redis": RedisEventStore}[backend.kind]
    assert isinstance(store, expected)
    store.close()


def test_idempotent_by_event_id_and_order_kept(backend):
    store = backend.open()
    first = [ev(i) for i in range(5)]
    assert store.append(first) == [True] * 5
    # a resend, new events and a duplicate inside the same batch
    again = [ev(3), ev(5), ev(1), ev(6), ev(5)]
    assert store.append(again) == [False, True, False, True, False]
    assert store.append([]) == []
    assert len(store) == 7
    assert [e.event_id for e in store.scan()] == [f"e{i}" for i in range(7)]
    # every field round-trips
    assert list(store.scan())[:5] == first
    store.close()


def test_scan_after_reopen_returns_everything(backend):
    store = backend.open()
    events = [ev(i, user=f"u{i % 3}", type_="impression" if i % 2 else "like") for i in range(50)]
    for lo in range(0, 50, 7):
        store.append(events[lo:lo + 7])
    store.close()
    backend.restart(crash=False)
    store = backend.open()
    assert list(store.scan()) == events
    assert store.append([events[10]]) == [False]  # ids survive too
    store.close()


def test_acknowledged_events_survive_a_crash(backend):
    if backend.kind == "memory":
        pytest.skip("the memory store is not durable")
    store = backend.open()
    events = [ev(i) for i in range(30)]
    assert store.append(events) == [True] * 30
    # no close: the process (sqlite) or the server (redis, kill -9) just goes away
    backend.restart(crash=True)
    reopened = backend.open()
    assert list(reopened.scan()) == events
    assert reopened.append([ev(29), ev(30)]) == [False, True]
    reopened.close()
    store.close()


def test_concurrent_appends_lose_nothing(backend):
    store = backend.open()
    n_threads, per_thread = 8, 60
    results: dict[int, list[bool]] = {}

    def worker(t: int) -> None:
        # overlapping ids: thread t sends ids t*30 .. t*30+59, so neighbours share 30 ids
        batch = [ev(t * 30 + j, user=f"t{t}") for j in range(per_thread)]
        out = []
        for lo in range(0, per_thread, 5):
            out += store.append(batch[lo:lo + 5])
        results[t] = out

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    unique = {f"e{t * 30 + j}" for t in range(n_threads) for j in range(per_thread)}
    stored = [e.event_id for e in store.scan()]
    assert len(stored) == len(set(stored)) == len(unique) == len(store)
    assert set(stored) == unique
    assert sum(sum(r) for r in results.values()) == len(unique)  # each id acknowledged as new once
    store.close()


def test_bad_urls_and_events_are_refused(tmp_path):
    with pytest.raises(StorageError):
        open_event_store("mysql://nowhere")
    with pytest.raises(StorageError):
        open_event_store("events.db")
    with pytest.raises(StorageError):
        open_event_store("sqlite:///")
    with pytest.raises(ValueError):
        Event("", "u", "i", "click", T0)
    with pytest.raises(ValueError):
        Event("e", "u", "i", "click", 1.5)
    with pytest.raises(ValueError):
        Event("e", "u", "i", "click", T0, float("nan"))


def test_redis_refuses_a_server_that_does_not_fsync(tmp_path):
    server = running_redis_or_skip(tmp_path / "redis")
    try:
        import redis

        client = redis.Redis(port=server.port)
        client.config_set("appendfsync", "everysec")
        with pytest.raises(StorageError, match="not durable"):
            open_event_store(server.url)
        relaxed = open_event_store(server.url + "?require_durable=0&key=other")
        assert relaxed.append([ev(1)]) == [True]
        assert open_event_store(server.url + "?require_durable=0").append([ev(1)]) == [True]  # separate keys
        relaxed.close()
        client.close()
    finally:
        server.stop()


_WRITER = """
import sys
from recfunnel.storage.events import Event
from recfunnel.storage.stores import open_event_store
store = open_event_store(sys.argv[1])
i = 0
while True:
    batch = [Event(f"k{i}-{j}", "u", "i", "click", 1_700_000_000 + i) for j in range(3)]
    store.append(batch)
    print(i, flush=True)  # acknowledged: durable now
    i += 1
"""


def test_sqlite_acknowledged_events_survive_kill_9_of_the_writer(tmp_path):
    import signal
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'events.db'}"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, url], stdout=subprocess.PIPE, text=True)
    acked = -1
    try:
        for line in proc.stdout:  # kill it mid-stream, after 40 acknowledged batches
            acked = int(line)
            if acked >= 40:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert acked >= 40
    stored = {e.event_id for e in open_event_store(url).scan()}
    assert {f"k{i}-{j}" for i in range(acked + 1) for j in range(3)} <= stored
    assert len(stored) % 3 == 0  # a batch is one transaction: all of it or none


# ------------------------------------------------------- published items and compaction
def item(item_id: str, t: int = T0, **attributes) -> PublishedItem:
    return PublishedItem(item_id, t, attributes)


def kinds(store) -> list[str]:
    return [r.event_id if isinstance(r, Event) else f"item:{r.item_id}" for r in store.scan_all()]


def test_published_items_keep_their_place_among_the_events_and_survive_a_restart(backend):
    store = backend.open()
    store.append([ev(0), ev(1)])
    store.append_items([item("new1", T0 + 5, category="g0", tags=["a", "b"], price=2.5, hot=True),
                        item("new2", T0 + 6)])
    store.append([ev(2)])
    # published again: one record, in its first place, with the latest attributes
    store.append_items([item("new1", T0 + 9, category="g1")])
    store.append([ev(3)])
    assert len(store) == 4 and [e.event_id for e in store.scan()] == ["e0", "e1", "e2", "e3"]
    expected = ["e0", "e1", "item:new1", "item:new2", "e2", "e3"]
    assert kinds(store) == expected
    backend.restart(crash=True)
    if backend.kind != "memory":
        store.close()
        store = backend.open()
    assert kinds(store) == expected
    records = {r.item_id: r for r in store.scan_all() if isinstance(r, PublishedItem)}
    assert records["new1"] == item("new1", T0 + 9, category="g1")
    assert records["new2"] == item("new2", T0 + 6)
    store.close()


def test_item_attributes_must_be_json_scalars_or_lists():
    import numpy as np

    record = PublishedItem("x", np.int64(T0), {"n": np.int64(3), "f": np.float32(0.5), "missing": float("nan"),
                                               "v": np.array([1, 2])})
    assert record.attributes == {"n": 3, "f": 0.5, "v": [1, 2]} and PublishedItem.from_json(record.to_json()) == record
    with pytest.raises(ValueError, match="JSON"):
        PublishedItem("x", T0, {"d": {"nested": 1}})


def test_compaction_keeps_every_event_the_retention_keeps(backend):
    import random

    rng = random.Random(7)
    store = backend.open()
    log: list = []  # what the store holds, in order
    for step in range(40):  # a loop over random appends: events at random times, items now and then
        if rng.random() < 0.2:
            record = item(f"it{rng.randrange(6)}", T0 + step, step=step)
            store.append_items([record])
            known = [i for i, r in enumerate(log) if isinstance(r, PublishedItem) and r.item_id == record.item_id]
            if known:
                log[known[0]] = record
            else:
                log.append(record)
        else:
            batch = [Event(f"r{step}-{j}", f"u{rng.randrange(5)}", f"i{rng.randrange(9)}", "click",
                           T0 + rng.randrange(1000)) for j in range(rng.randrange(1, 6))]
            store.append(batch)
            log += batch
    for keep_since in (T0 + 200, T0 + 500, T0 + 800):  # a loop over ever shorter retentions
        dropped = store.compact(keep_since)
        expected = [r for r in log if not (isinstance(r, Event) and r.timestamp < keep_since)]
        assert dropped == len(log) - len(expected)
        assert list(store.scan_all()) == expected
        assert len(store) == sum(isinstance(r, Event) for r in expected)
        log = expected
    # a dropped event may be stored again; a kept one is still a duplicate
    old = next(e for e in expected if isinstance(e, Event))
    assert store.append([old]) == [False]
    store.close()


def test_appends_racing_with_compaction_are_kept(backend):
    store = backend.open()
    store.append([Event(f"old{i}", "u", "i", "click", T0 + i % 100) for i in range(3000)])
    store.append_items([item("kept", T0)])
    appended: list[str] = []
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set() or n < 20:
            store.append([Event(f"new{n}", "u", "i", "click", T0 + 10_000)])
            appended.append(f"new{n}")
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            store.compact(T0 + 50)
    finally:
        stop.set()
        thread.join()
    ids = [e.event_id for e in store.scan()]
    assert set(appended) <= set(ids) and [i for i in ids if i.startswith("new")] == appended
    assert sorted(i for i in ids if i.startswith("old")) == sorted(f"old{i}" for i in range(3000) if i % 100 >= 50)
    assert "item:kept" in kinds(store)
    store.close()


def test_compact_events_applies_a_retention_in_days():
    store = MemoryEventStore()
    store.append([Event("a", "u", "i", "click", T0 - 3 * 86_400), Event("b", "u", "i", "click", T0 - 86_400)])
    assert compact_events(store, retention_days=2, now=T0) == 1
    assert [e.event_id for e in store.scan()] == ["b"]
    with pytest.raises(ValueError):
        compact_events(store, retention_days=0)
