"""SQLite event store: the embedded default.

One table, ``events(seq INTEGER PRIMARY KEY, event_id TEXT UNIQUE, ...)``: ``seq``
is the append order, the unique ``event_id`` makes appends idempotent. The
database runs in WAL mode with ``synchronous=FULL``, and each :meth:`append` is
one ``BEGIN IMMEDIATE ... COMMIT`` transaction, so when it returns the events are
in the fsynced WAL and survive a ``kill -9`` or a power cut; a transaction cut
short by a crash leaves none of its events behind.

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

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from recfunnel.storage.events import Event, EventStore, StorageError

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

    def scan(self) -> Iterator[Event]:
        last = 0
        while True:
            with self._lock:
                rows = self._connection().execute(
                    "SELECT seq, event_id, user_id, item_id, type, timestamp, value FROM events "
                    "WHERE seq > ? ORDER BY seq LIMIT ?", (last, _SCAN_BATCH)).fetchall()
            if not rows:
                return
            for row in rows:
                yield Event.from_tuple(row[1:])
            last = rows[-1][0]

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
