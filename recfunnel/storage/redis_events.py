"""Redis event store.

Two keys per store: a set of stored ``event_id`` s (``<key>:ids``) and a list of
the events in append order (``<key>:log``, one JSON array per event). One Lua
script appends a whole batch atomically: ``SADD`` tells whether an id is new and
only new events are pushed, so a resent event is stored once even when two
clients race.

Published items: ``<key>:items`` is a hash ``item_id -> [item_id, publish_time,
attributes]`` (JSON) holding each item's latest record, and the log holds a marker
``{"item": item_id}`` (a JSON object, where events are arrays) pushed at the item's
first publication, in the same script, so :meth:`RedisEventStore.scan_all` yields it
in append order.

Compaction (:meth:`RedisEventStore.compact`) copies the kept entries of the first
``n`` log entries (``n`` read at the start) to a new key without blocking the
server, then one script appends the entries pushed meanwhile (those after ``n``)
to it and renames it over the log, so no racing append is lost; a generation
counter (``<key>:gen``) makes a compaction that raced with another start again.

Durability is the server's: with ``appendonly yes`` and ``appendfsync always``
Redis writes and fsyncs the append-only file before it sends the reply, so an
acknowledged append survives a crash of the server. The store checks that
configuration when it opens and refuses a server without it (unless told
``require_durable=False``); on Redis >= 7.2 each append also waits for
``WAITAOF 1 0 0`` (the local fsync) explicitly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from recfunnel.storage.events import Event, EventStore, PublishedItem, StorageError

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

_APPEND_ITEMS_SCRIPT = """
for i = 1, #ARGV, 3 do
  if redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 2])
  end
end
return 1
"""

#: KEYS: log, new log, generation; ARGV: generation at the start, n entries copied
_SWAP_SCRIPT = """
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[1] then
  return 0
end
local tail = redis.call('LRANGE', KEYS[1], tonumber(ARGV[2]), -1)
for i = 1, #tail, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(tail, i, math.min(i + 999, #tail)))
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
redis.call('INCR', KEYS[3])
return 1
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
        self._items_key = f"{key}:items"
        self._gen_key = f"{key}:gen"
        try:
            info = client.info("server")
            version = tuple(int(p) for p in str(info.get("redis_version", "0.0.0")).split(".")[:2])
            if require_durable:
                self._check_durable()
            self._script = client.register_script(_APPEND_SCRIPT)
            self._items_script = client.register_script(_APPEND_ITEMS_SCRIPT)
            self._swap_script = client.register_script(_SWAP_SCRIPT)
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

    def append_items(self, items: Sequence[PublishedItem]) -> None:
        args: list[str] = []
        for item in items:
            args += [item.item_id, item.to_json(), json.dumps({"item": item.item_id}, separators=(",", ":"))]
        if not args:
            return
        try:
            self._items_script(keys=[self._items_key, self._log_key], args=args)
            if self._waitaof:
                self.client.execute_command("WAITAOF", 1, 0, 0)
        except self._redis.RedisError as e:
            raise StorageError(f"Redis event store: storing items failed: {e}") from None

    def scan(self) -> Iterator[Event]:
        for rows in self._log_batches():
            for raw in rows:
                if not _is_item(raw):
                    yield Event.from_tuple(json.loads(raw))

    def scan_all(self) -> Iterator[Event | PublishedItem]:
        for rows in self._log_batches():
            item_ids = [json.loads(raw)["item"] for raw in rows if _is_item(raw)]
            try:
                records = iter(self.client.hmget(self._items_key, item_ids) if item_ids else [])
            except self._redis.RedisError as e:
                raise StorageError(f"Redis event store: scan failed: {e}") from None
            for raw in rows:
                if _is_item(raw):
                    record = next(records)
                    if record is not None:
                        yield PublishedItem.from_json(record)
                else:
                    yield Event.from_tuple(json.loads(raw))

    def _log_batches(self, stop: int | None = None) -> Iterator[list[bytes]]:
        start = 0
        while stop is None or start < stop:
            end = start + _SCAN_BATCH - 1 if stop is None else min(start + _SCAN_BATCH, stop) - 1
            try:
                rows = self.client.lrange(self._log_key, start, end)
            except self._redis.RedisError as e:
                raise StorageError(f"Redis event store: scan failed: {e}") from None
            if rows:
                yield rows
            if len(rows) < end - start + 1:
                return
            start += len(rows)

    def compact(self, keep_since: int, attempts: int = 5) -> int:
        new_key = f"{self._log_key}:compacting:{uuid.uuid4().hex}"
        try:
            for _ in range(attempts):  # a loop over tries: another compaction may have swapped the log
                with self.client.pipeline(transaction=True) as pipe:
                    generation, n = pipe.get(self._gen_key).llen(self._log_key).execute()
                generation = _decode(generation) if generation is not None else "0"
                dropped: list[str] = []
                for rows in self._log_batches(stop=int(n)):
                    kept = []
                    for raw in rows:
                        if _is_item(raw):
                            kept.append(raw)
                            continue
                        event = json.loads(raw)
                        if int(event[4]) >= keep_since:
                            kept.append(raw)
                        else:
                            dropped.append(event[0])
                    if kept:
                        self.client.rpush(new_key, *kept)
                if self._swap_script(keys=[self._log_key, new_key, self._gen_key], args=[generation, int(n)]):
                    # the dropped ids may be stored again (after the swap: a resend meanwhile was a duplicate)
                    for lo in range(0, len(dropped), _SCAN_BATCH):
                        self.client.srem(self._ids_key, *dropped[lo:lo + _SCAN_BATCH])
                    if self._waitaof:
                        self.client.execute_command("WAITAOF", 1, 0, 0)
                    return len(dropped)
                self.client.delete(new_key)
        except self._redis.RedisError as e:
            raise StorageError(f"Redis event store: compaction failed: {e}") from None
        finally:
            try:
                self.client.delete(new_key)
            except self._redis.RedisError:
                pass
        raise StorageError(f"Redis event store: compaction raced with another {attempts} times; try again")

    def __len__(self) -> int:
        try:
            return int(self.client.scard(self._ids_key))
        except self._redis.RedisError as e:
            raise StorageError(f"Redis event store: {e}") from None

    def close(self) -> None:
        self.client.close()


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_item(raw: bytes | str) -> bool:
    """A log entry that marks a published item (a JSON object; events are arrays)."""
    return raw[:1] in (b"{", "{")
