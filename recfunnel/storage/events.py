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
"""

from __future__ import annotations

import math
import numbers
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    def __len__(self) -> int:
        """Number of stored events."""

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
        self._events: list[Event] = []
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def append(self, events: Sequence[Event]) -> list[bool]:
        out = []
        with self._lock:
            for e in events:
                new = e.event_id not in self._ids
                if new:
                    self._ids.add(e.event_id)
                    self._events.append(e)
                out.append(new)
        return out

    def scan(self) -> Iterator[Event]:
        with self._lock:
            snapshot = list(self._events)
        return iter(snapshot)

    def __len__(self) -> int:
        return len(self._events)

    def close(self) -> None:
        pass
