"""Redis event store.

Two keys per store: a set of stored ``event_id`` s (``<key>:ids``) and a list of
the events in append order (``<key>:log``, one JSON array per event). One Lua
script appends a whole batch atomically: ``SADD`` tells whether an id is new and
only new events are pushed, so a resent event is stored once even when two
clients race.

Durability is the server's: with ``appendonly yes`` and ``appendfsync always``
Redis writes and fsyncs the append-only file before it sends the reply, so an
acknowledged append survives a crash of the server. The store checks that
configuration when it opens and refuses a server without it (unless told
``require_durable=False``); on Redis >= 7.2 each append also waits for
``WAITAOF 1 0 0`` (the local fsync) explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from recfunnel.storage.events import Event, EventStore, StorageError

#: default key prefix
DEFAULT_KEY = "recfunnel:events"

#: events read per LRANGE by :meth:`RedisEventStore.scan`
_SCAN_BATCH = 10_000

_APPEND_SCRIPT = """
local out = {}
for i = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off", "")


class RedisEventStore(EventStore):
    """Event log in Redis (idempotent by ``event_id``, ordered, durable with AOF ``always``).

    Args:
        client: a ``redis.Redis`` client (thread-safe: it draws connections from a pool).
        key: key prefix; the store uses ``<key>:ids`` and ``<key>:log``.
        require_durable: refuse a server that does not fsync every write
            (``appendonly yes``, ``appendfsync always``).
    """

    def __init__(self, client, key: str = DEFAULT_KEY, require_durable: bool = True):
        import redis

        self._redis = redis
        self.client = client
        self.key = key
        self._ids_key = f"{key}:ids"
        self._log_key = f"{key}:log"
        try:
            info = client.info("server")
            version = tuple(int(p) for p in str(info.get("redis_version", "0.0.0")).split(".")[:2])
            if require_durable:
                self._check_durable()
            self._script = client.register_script(_APPEND_SCRIPT)
        except redis.RedisError as e:
            raise StorageError(f"cannot use the Redis event store: {e}") from None
        self._waitaof = version >= (7, 2)

    @classmethod
    def from_url(cls, url: str) -> RedisEventStore:
        """``redis://host:port/db[?key=PREFIX&require_durable=0]`` (other query options go to redis-py)."""
        import redis

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        key = query.pop("key", DEFAULT_KEY) or DEFAULT_KEY
        require_durable = _truthy(query.pop("require_durable", "1"))
        plain = urlunsplit(parts._replace(query=urlencode(query)))
        try:
            client = redis.Redis.from_url(plain, socket_timeout=30, socket_connect_timeout=10)
        except (ValueError, redis.RedisError) as e:
            raise StorageError(f"invalid Redis URL '{url}': {e}") from None
        return cls(client, key, require_durable)

    def _check_durable(self) -> None:
        try:
            config = self.client.config_get("append*")
        except self._redis.ResponseError as e:
            raise StorageError(f"cannot read the Redis configuration to check durability ({e}); "
                               "add require_durable=0 to the URL to accept the server as it is") from None
        appendonly = _decode(config.get("appendonly", config.get(b"appendonly", "")))
        appendfsync = _decode(config.get("appendfsync", config.get(b"appendfsync", "")))
        if appendonly != "yes" or appendfsync != "always":
            raise StorageError(
                f"the Redis server is not durable (appendonly={appendonly}, appendfsync={appendfsync}); "
                "run it with 'appendonly yes' and 'appendfsync always', or add require_durable=0 to the URL")

    def append(self, events: Sequence[Event]) -> list[bool]:
        events = list(events)
        if not events:
            return []
        args: list[str] = []
        for e in events:
            args += [e.event_id, json.dumps(e.to_tuple(), separators=(",", ":"))]
        try:
            flags = self._script(keys=[self._ids_key, self._log_key], args=args)
            if self._waitaof:
                self.client.execute_command("WAITAOF", 1, 0, 0)
        except self._redis.RedisError as e:
            raise StorageError(f"Redis event store: append failed: {e}") from None
        return [bool(int(f)) for f in flags]

    def scan(self) -> Iterator[Event]:
        start = 0
        while True:
            try:
                rows = self.client.lrange(self._log_key, start, start + _SCAN_BATCH - 1)
            except self._redis.RedisError as e:
                raise StorageError(f"Redis event store: scan failed: {e}") from None
            for raw in rows:
                yield Event.from_tuple(json.loads(raw))
            if len(rows) < _SCAN_BATCH:
                return
            start += len(rows)

    def __len__(self) -> int:
        try:
            return int(self.client.llen(self._log_key))
        except self._redis.RedisError as e:
            raise StorageError(f"Redis event store: {e}") from None

    def close(self) -> None:
        self.client.close()


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
