"""The event log: user events (impressions, clicks, likes, ...) stored durably, once each.

Every event the service acknowledges is in an :class:`EventStore` first. The
store is the nearline layer's source of truth: at start-up
:class:`~recfunnel.pipeline.nearline.state.NearlineState` replays
:meth:`EventStore.scan` into memory, so a crash loses no acknowledged event, and
the offline path turns the same log into training data
(:func:`recfunnel.pipeline.nearline.state.events_to_frame`).

Contract of every backend:

* :meth:`EventStore.append` returns only once the new events are durable (SQLite:
  committed with ``synchronous=FULL`` in WAL mode; Redis: ``appendonly yes`` with
  ``appendfsync always``), and reports per event whether it was stored now
  (``True``) or was a duplicate of an ``event_id`` stored before (``False``); a
  duplicate is never stored twice, also within one batch.
* :meth:`EventStore.scan` yields every stored event in append order.
* Appends from many threads at once lose nothing.
* :meth:`EventStore.append_items` stores published items (:class:`PublishedItem`)
  durably in the same log: :meth:`EventStore.scan_all` yields events and items in
  append order, so a replay publishes an item before the events that follow it.
  One record per ``item_id``: publishing an item again keeps its place (that of its
  first publication, so a replay gives it the same index) and takes the latest
  ``publish_time`` and attributes.
* :meth:`EventStore.compact` drops the events older than a cutoff (the retention)
  and keeps every published item and every newer event, in order; an append
  racing with it is kept. A dropped ``event_id`` may be stored again later.
  :func:`compact_events` applies a retention in days.

Backends: :class:`MemoryEventStore` (unit tests),
:class:`~recfunnel.storage.sqlite_events.SQLiteEventStore` (the embedded
default) and :class:`~recfunnel.storage.redis_events.RedisEventStore`; pick one by
URL with :func:`recfunnel.storage.stores.open_event_store`.

>>> store = MemoryEventStore()
>>> store.append([Event("e1", "u1", "i1", "click", 1_700_000_000),
...               Event("e1", "u1", "i1", "click", 1_700_000_000)])
[True, False]
>>> [e.event_id for e in store.scan()], len(store)
(['e1'], 1)
>>> store.append_items([PublishedItem("i9", 1_700_000_100, {"category": "news"})])
>>> store.append([Event("e2", "u1", "i9", "click", 1_700_000_200)])
[True]
>>> [getattr(r, "event_id", None) or r.item_id for r in store.scan_all()]
['e1', 'i9', 'e2']
>>> store.compact(keep_since=1_700_000_100), [e.event_id for e in store.scan()]
(1, ['e2'])
"""

from __future__ import annotations

import json
import math
import numbers
import threading
import time as _time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recfunnel.errors import RecfunnelError

#: event types counted as positive feedback by default
POSITIVE_TYPES = ("click", "like", "purchase", "cart", "fav", "play")
#: the event type of an item shown to the user
IMPRESSION = "impression"


class StorageError(RecfunnelError):
    """An event store cannot be opened or does not meet the durability contract."""


@dataclass(frozen=True)
class Event:
    """One user event.

    Attributes:
        event_id: unique id chosen by the sender; a resent event (same id) is stored once.
        user_id / item_id: external ids (strings).
        type: "impression", "click", "like", "purchase", "cart", "fav", "play", ...
        timestamp: unix seconds.
        value: strength of the event (a rating, a watch time, ...); 1.0 by default.
    """

    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: int
    value: float = 1.0

    def __post_init__(self) -> None:
        for name in ("event_id", "user_id", "item_id", "type"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"Event.{name} must be a non-empty string, got {v!r}")
        if isinstance(self.timestamp, bool) or not isinstance(self.timestamp, numbers.Integral):
            raise ValueError(f"Event.timestamp must be an integer (unix seconds), got {self.timestamp!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Real) or not math.isfinite(self.value):
            raise ValueError(f"Event.value must be a finite number, got {self.value!r}")
        # numpy scalars become plain Python numbers (hashable, JSON-able, equal across backends)
        object.__setattr__(self, "timestamp", int(self.timestamp))
        object.__setattr__(self, "value", float(self.value))

    def to_tuple(self) -> tuple[str, str, str, str, int, float]:
        return (self.event_id, self.user_id, self.item_id, self.type, int(self.timestamp), float(self.value))

    @classmethod
    def from_tuple(cls, row: Sequence[Any]) -> Event:
        event_id, user_id, item_id, type_, timestamp, value = row
        return cls(str(event_id), str(user_id), str(item_id), str(type_), int(timestamp), float(value))


#: a JSON-safe attribute value of a published item
AttributeValue = str | int | float | bool | list


def json_safe(value: Any) -> AttributeValue | None:
    """``value`` as a plain JSON value: numpy scalars unwrapped, sequences as lists, NaN as None.

    Raises:
        ValueError: a value JSON cannot hold (a dict, an object, an infinite number).
    """
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # a numpy scalar
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if not math.isfinite(value):
            raise ValueError(f"attribute value {value!r} is not finite")
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else value
        return [json_safe(v) for v in items]
    raise ValueError(f"attribute value {value!r} ({type(value).__name__}) is not a JSON scalar or list")


@dataclass(frozen=True)
class PublishedItem:
    """One published item as the event log keeps it.

    Attributes:
        item_id: external id.
        publish_time: unix seconds.
        attributes: side information, column -> JSON-safe value (missing values left out).
    """

    item_id: str
    publish_time: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id:
            raise ValueError(f"PublishedItem.item_id must be a non-empty string, got {self.item_id!r}")
        if isinstance(self.publish_time, bool) or not isinstance(self.publish_time, numbers.Integral):
            raise ValueError(f"PublishedItem.publish_time must be an integer, got {self.publish_time!r}")
        attributes = {str(k): json_safe(v) for k, v in dict(self.attributes).items()}
        object.__setattr__(self, "publish_time", int(self.publish_time))
        object.__setattr__(self, "attributes", {k: v for k, v in attributes.items() if v is not None})

    def to_json(self) -> str:
        return json.dumps([self.item_id, self.publish_time, self.attributes], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> PublishedItem:
        item_id, publish_time, attributes = json.loads(text)
        return cls(str(item_id), int(publish_time), attributes)


def compact_events(store: EventStore, retention_days: float, now: int | None = None) -> int:
    """Drop the events older than ``retention_days`` before ``now`` (default: the wall clock).

    Published items and the events the retention keeps stay, in order (:meth:`EventStore.compact`).

    Returns:
        the number of events dropped.
    """
    if not retention_days > 0:
        raise ValueError(f"retention_days must be positive, got {retention_days!r}")
    now = int(_time.time()) if now is None else int(now)
    return store.compact(keep_since=now - int(retention_days * 86_400))


class EventStore(ABC):
    """Durable, idempotent (by ``event_id``), ordered event log; thread-safe."""

    @abstractmethod
    def append(self, events: Sequence[Event]) -> list[bool]:
        """Store ``events`` durably before returning.

        Returns:
            one flag per event: True if stored now, False if its ``event_id`` was stored
            before (or earlier in the same batch); a duplicate is stored once.
        """

    @abstractmethod
    def scan(self) -> Iterator[Event]:
        """Every stored event, in append order."""

    @abstractmethod
    def append_items(self, items: Sequence[PublishedItem]) -> None:
        """Store published items durably before returning, in the log after the events so far.

        An ``item_id`` stored before keeps its place in the log and takes the new
        ``publish_time`` and attributes (the last of a batch wins).
        """

    @abstractmethod
    def scan_all(self) -> Iterator[Event | PublishedItem]:
        """Every stored event and published item, in append order (an item at its first publication)."""

    @abstractmethod
    def compact(self, keep_since: int) -> int:
        """Drop the events with ``timestamp < keep_since``; keep every published item and newer event.

        Atomic with respect to appends: an append racing with it is kept (unless it is
        itself older than ``keep_since`` and lands before the compaction).

        Returns:
            the number of events dropped.
        """

    @abstractmethod
    def __len__(self) -> int:
        """Number of stored events (published items not counted)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the stored events stay."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryEventStore(EventStore):
    """In-memory fake with the same semantics (not durable: for unit tests)."""

    def __init__(self) -> None:
        self._log: list[Event | PublishedItem] = []
        self._ids: set[str] = set()
        self._item_at: dict[str, int] = {}  # item_id -> its place in the log
        self._lock = threading.Lock()

    def append(self, events: Sequence[Event]) -> list[bool]:
        out = []
        with self._lock:
            for e in events:
                new = e.event_id not in self._ids
                if new:
                    self._ids.add(e.event_id)
                    self._log.append(e)
                out.append(new)
        return out

    def append_items(self, items: Sequence[PublishedItem]) -> None:
        with self._lock:
            for item in items:
                at = self._item_at.get(item.item_id)
                if at is None:
                    self._item_at[item.item_id] = len(self._log)
                    self._log.append(item)
                else:
                    self._log[at] = item

    def scan(self) -> Iterator[Event]:
        with self._lock:
            snapshot = [r for r in self._log if isinstance(r, Event)]
        return iter(snapshot)

    def scan_all(self) -> Iterator[Event | PublishedItem]:
        with self._lock:
            snapshot = list(self._log)
        return iter(snapshot)

    def compact(self, keep_since: int) -> int:
        with self._lock:
            dropped = [r for r in self._log if isinstance(r, Event) and r.timestamp < keep_since]
            self._log = [r for r in self._log if not (isinstance(r, Event) and r.timestamp < keep_since)]
            self._ids.difference_update(e.event_id for e in dropped)
            self._item_at = {r.item_id: i for i, r in enumerate(self._log) if isinstance(r, PublishedItem)}
        return len(dropped)

    def __len__(self) -> int:
        return len(self._ids)

    def close(self) -> None:
        pass
