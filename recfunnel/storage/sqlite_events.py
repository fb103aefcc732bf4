"""SQLite event store: the embedded default.

One table, ``events(seq INTEGER PRIMARY KEY, event_id TEXT UNIQUE, ...)``: ``seq``
is the append order, the unique ``event_id`` makes appends idempotent. The
database runs in WAL mode with ``synchronous=FULL``, and each :meth:`append` is
one ``BEGIN IMMEDIATE ... COMMIT`` transaction, so when it returns the events are
in the fsynced WAL and survive a ``kill -9`` or a power cut; a transaction cut
short by a crash leaves none of its events behind.

Published items live in a second table, ``items(pos, item_id UNIQUE, after_seq,
publish_time, attributes)``: ``after_seq`` is the last event ``seq`` handed out
when the item was first published (``sqlite_sequence``, which deletions never
lower), so :meth:`SQLiteEventStore.scan_all` yields the item after that event and
before the next one; publishing it again updates the row in place.
:meth:`SQLiteEventStore.compact` is one ``DELETE`` transaction.

One connection is shared by the threads of a process behind a lock (SQLite
serialises writers anyway); other processes may open the same file.

>>> import tempfile, os
>>> from recfunnel.storage.events import Event
>>> path = os.path.join(tempfile.mkdtemp(), "events.db")
>>> with SQLiteEventStore(path) as store:
...     store.append([Event("a", "u", "i", "click", 5), Event("b", "u", "j", "impression", 6)])
[True, True]
>>> with SQLiteEventStore(path) as store:
...     store.append([Event("b", "u", "j", "impression", 6)]), [e.event_id for e in store.scan()]
([False], ['a', 'b'])
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from recfunnel.storage.events import Event, EventStore, PublishedItem, StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    value REAL NOT NULL
)
"""

_ITEMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    after_seq INTEGER NOT NULL,
    publish_time INTEGER NOT NULL,
    attributes TEXT NOT NULL
)
"""

#: rows read per query by :meth:`SQLiteEventStore.scan`
_SCAN_BATCH = 10_000


class SQLiteEventStore(EventStore):
    """Event log in one SQLite file (WAL, ``synchronous=FULL``, one transaction per append).

    Args:
        path: database file; created (with its directory) when missing.
        timeout: seconds to wait for another process holding the write lock.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the SQLite event store {self.path}: {e}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"SQLite event store {self.path}: WAL mode unavailable (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
            conn.execute(_ITEMS_SCHEMA)
        except sqlite3.Error as e:
            conn.close()
            raise StorageError(f"SQLite event store {self.path} is not usable: {e}") from None
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"SQLite event store {self.path} is closed")
        return self._conn

    def append(self, events: Sequence[Event]) -> list[bool]:
        events = list(events)
        if not events:
            return []
        rows = [e.to_tuple() for e in events]
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = []
                for row in rows:  # a loop over the batch: each row needs its own "was it new?"
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO events (event_id, user_id, item_id, type, timestamp, value) "
                        "VALUES (?, ?, ?, ?, ?, ?)", row)
                    out.append(cur.rowcount == 1)
                conn.execute("COMMIT")  # synchronous=FULL: the WAL is fsynced before this returns
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return out

    def append_items(self, items: Sequence[PublishedItem]) -> None:
        rows = [(i.item_id, i.publish_time, json.dumps(i.attributes, separators=(",", ":"))) for i in items]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
                after_seq = int(found[0]) if found else 0
                conn.executemany(
                    "INSERT INTO items (item_id, after_seq, publish_time, attributes) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(item_id) DO UPDATE SET publish_time = excluded.publish_time, "
                    "attributes = excluded.attributes",
                    [(item_id, after_seq, t, attributes) for item_id, t, attributes in rows])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def scan(self) -> Iterator[Event]:
        for _, row in self._scan_events():
            yield Event.from_tuple(row)

    def scan_all(self) -> Iterator[Event | PublishedItem]:
        with self._lock:
            items = self._connection().execute(
                "SELECT after_seq, item_id, publish_time, attributes FROM items ORDER BY after_seq, pos").fetchall()
        at = 0
        for seq, row in self._scan_events():
            while at < len(items) and items[at][0] < seq:
                yield _item(items[at])
                at += 1
            yield Event.from_tuple(row)
        for row in items[at:]:
            yield _item(row)

    def _scan_events(self) -> Iterator[tuple[int, tuple]]:
        last = 0
        while True:
            with self._lock:
                rows = self._connection().execute(
                    "SELECT seq, event_id, user_id, item_id, type, timestamp, value FROM events "
                    "WHERE seq > ? ORDER BY seq LIMIT ?", (last, _SCAN_BATCH)).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[0], row[1:]
            last = rows[-1][0]

    def compact(self, keep_since: int) -> int:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                dropped = conn.execute("DELETE FROM events WHERE timestamp < ?", (int(keep_since),)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return int(dropped)

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _item(row: tuple) -> PublishedItem:
    _, item_id, publish_time, attributes = row
    return PublishedItem(str(item_id), int(publish_time), json.loads(attributes))
