"""Open an event store by URL: the one place that knows every backend.

It lives apart from :mod:`recfunnel.storage.events` (the ``Event`` record and the
``EventStore`` interface), which the backends import: a factory there would import
the backends that import it back.
"""

from __future__ import annotations

from recfunnel.storage.events import EventStore, MemoryEventStore, StorageError


def open_event_store(url: str) -> EventStore:
    """Open an event store by URL.

    * ``memory://`` — :class:`MemoryEventStore`.
    * ``sqlite:///relative/events.db`` or ``sqlite:////absolute/events.db`` (SQLAlchemy's
      convention: the path is what follows ``sqlite:///``) — the embedded default.
    * ``redis://host:port/db`` — Redis; optional query ``?key=NAME`` (key prefix, default
      ``recfunnel:events``) and ``require_durable=0`` to accept a server without
      ``appendonly yes`` + ``appendfsync always`` (refused by default).

    Raises:
        StorageError: unknown scheme, or the backend cannot be opened.
    """
    if not isinstance(url, str):
        raise StorageError(f"event store URL must be a string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StorageError(f"event store URL '{url}' has no scheme (memory://, sqlite:///PATH, redis://HOST:PORT/DB)")
    if scheme == "memory":
        return MemoryEventStore()
    if scheme == "sqlite":
        from recfunnel.storage.sqlite_events import SQLiteEventStore

        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise StorageError(f"event store URL '{url}' names no file (sqlite:///PATH)")
        return SQLiteEventStore(path)
    if scheme in ("redis", "rediss", "unix"):
        from recfunnel.storage.redis_events import RedisEventStore

        return RedisEventStore.from_url(url)
    raise StorageError(f"unknown event store scheme '{scheme}' in '{url}' (memory, sqlite, redis)")
