"""Nearline state: what user events change between two model versions, within a second.

:class:`NearlineState` sits between the event log (:mod:`recfunnel.storage.events`)
and a fitted :class:`~recfunnel.pipeline.online.funnel.Funnel`. Every event is
stored durably first (:meth:`NearlineState.ingest`), then applied in memory:

* **user histories** — a positive event (click, like, ...) is appended to the
  user's nearline log; :meth:`NearlineState.request` builds the request batch from
  the offline history (``funnel.history``) followed by the nearline positives,
  newest first, with repeats kept like the offline store, so the next request of
  the user reflects the click. Users unknown to the model get their nearline
  history (their ``user_index`` stays -1).
* **already-shown filters** — items the user had offline, nearline positives and
  impressions (optionally only for ``shown_ttl_seconds``) are excluded.
* **statistics features** — positives and impressions feed growing counters that
  the ranker is given (``ranker.use_statistics``, a
  :class:`~recfunnel.stages.base.StatisticsOverlay`,
  :mod:`recfunnel.pipeline.nearline.counters`): the ranker computes its features
  with the same ``transform`` it was trained with, over its fitted counts and these,
  and reads only events strictly before the request time.
* **stages that learn between fits** — every stage of the funnel that is
  :class:`~recfunnel.stages.base.Incremental` (``funnel.stages()``, the fallback
  included) observes the events on known items as an
  :class:`~recfunnel.stages.base.EventBatch` (``observe``), once per stage object,
  with the users' histories strictly before each event on demand. Today the
  ``lookalike`` channels add the user's vector to a pool item's look-alike sum, and
  the ``popular`` / ``hot`` channels and the popular fallback count positive events
  in their decayed popularity, the lists a user without history gets: an item many
  users click now reaches cold-start users without a refit.

New items arrive with :meth:`NearlineState.publish_items`
(:mod:`recfunnel.pipeline.nearline.items`: ``publish`` of the ``Incremental`` stages). Events on items the model does not
know are stored, and count from the moment the item is published. Published items are
stored in the event log first (:meth:`~recfunnel.storage.events.EventStore.append_items`)
and replayed at start-up in their place among the events (``scan_all``), so an item
keeps its index and the events that follow it apply as before the restart; a new
model version (:meth:`NearlineState.bind`) is given them too.

**Which events are already in the model.** A model was trained on the events up
to its newest training event (the *cutoff*); an event at or before the cutoff is
taken to be part of the model and is not applied again (it still counts in the
already-shown filters). So replaying the whole log at start-up, or into a model
retrained on the log, never counts an event twice; pass
``NearlineConfig(skip_events_in_model=False)`` to apply every event.

**Offline/online consistency.** :func:`events_to_frame` turns the log into the
interaction rows the offline path trains on (positives ``label=1``, impressions
``label=0``), so a model trained on the log and a model fed the same events
nearline compute the same ranking features for the same (user, time)
(``tests/system/test_online_offline_consistency.py``).

Thread safety: :meth:`~NearlineState.ingest`, :meth:`~NearlineState.publish_items`
and :meth:`~NearlineState.bind` are serialised; :meth:`~NearlineState.request` may
run at the same time from any number of threads.
"""

from __future__ import annotations

import bisect
import threading
import time as _time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfunnel.data.interactions import IdMap, Interactions
from recfunnel.errors import DataError
from recfunnel.pipeline.nearline.counters import GrowingCounter
from recfunnel.pipeline.nearline.items import publish_to_channels
from recfunnel.pipeline.online.funnel import Funnel
from recfunnel.stages.base import EventBatch, Incremental, StatisticsOverlay
from recfunnel.storage.events import IMPRESSION, POSITIVE_TYPES, Event, EventStore, PublishedItem
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.types import RequestBatch

_NO_CUTOFF = np.iinfo(np.int64).min // 4
_POSITIVE, _SHOWN = 1, 0


@dataclass(frozen=True)
class NearlineConfig:
    """How events update the nearline state.

    Attributes:
        positive_types: event types that are positive feedback (history, counters, look-alike).
        shown_type: the event type of an impression (exposure counters, already-shown filter).
        history_length: L of the requests; None: ``funnel.config.history_length``.
        shown_ttl_seconds: an impression excludes the item from the user's requests for this
            long; None: for ever.
        skip_events_in_model: events at or before the model's newest training event are
            taken to be in the model and not applied again (see the module doc).
        replay_batch: events applied per batch when replaying the log.
        frozen_stages: names or kinds of stages that do not observe events (they keep
            what they learned at fit; they still take published items).
        lookalike_updates: False freezes the ``lookalike`` stages (``frozen_stages`` shorthand).
        popularity_updates: False freezes the ``popular`` / ``hot`` stages, the popular
            fallback included (``frozen_stages`` shorthand).
        max_clock_skew_seconds: the default request time follows the newest event when a
            client's clock is ahead of the server's, by this much at most (an event stamped
            far in the future does not move every request there).

    Event types that are neither positive nor shown are stored and otherwise ignored.
    """

    positive_types: tuple[str, ...] = POSITIVE_TYPES
    shown_type: str = IMPRESSION
    history_length: int | None = None
    shown_ttl_seconds: int | None = None
    skip_events_in_model: bool = True
    replay_batch: int = 50_000
    frozen_stages: tuple[str, ...] = ()
    lookalike_updates: bool = True
    popularity_updates: bool = True
    max_clock_skew_seconds: int = 3600

    def frozen(self) -> frozenset[str]:
        """Names and kinds of the stages whose ``observe`` is not called."""
        out = set(self.frozen_stages)
        if not self.lookalike_updates:
            out.add("lookalike")
        if not self.popularity_updates:
            out.update(("popular", "hot"))
        return frozenset(out)

    def kind(self, event_type: str) -> int | None:
        if event_type in self.positive_types:
            return _POSITIVE
        if event_type == self.shown_type:
            return _SHOWN
        return None


def events_to_frame(events: Iterable[Event], config: NearlineConfig | None = None) -> pd.DataFrame:
    """The interaction rows the offline path trains on, in log order.

    Positives get ``label=1``, impressions ``label=0`` (exposures); other event types are
    dropped. Columns: ``user_id, item_id, timestamp, label, event, value``. Concatenate
    with older interactions through :func:`append_events` (which labels rows without a
    label as positives) and pass to :func:`~recfunnel.data.dataset.build_training_data`.
    """
    cfg = config or NearlineConfig()
    rows = []
    for e in events:
        kind = cfg.kind(e.type)
        if kind is not None:
            rows.append((e.user_id, e.item_id, int(e.timestamp), int(kind == _POSITIVE), e.type, float(e.value)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "label", "event", "value"])
    return frame.astype({"timestamp": np.int64, "label": np.int64, "value": np.float64})


def append_events(interactions: pd.DataFrame, events: Iterable[Event],
                  config: NearlineConfig | None = None) -> pd.DataFrame:
    """``interactions`` (rows without a ``label`` are positives) followed by :func:`events_to_frame`."""
    base = interactions.reset_index(drop=True).copy()
    if "label" not in base.columns:
        base["label"] = 1
    new = events_to_frame(events, config)
    return pd.concat([base, new[["user_id", "item_id", "timestamp", "label"]]], ignore_index=True)


#: a logged event of a user: (time, seq, item_id, value); lists of them sort by (time, seq)
_Entry = tuple[int, int, str, float]


class _UserLog:
    """A user's nearline positives and impressions, each list sorted by (time, seq)."""

    __slots__ = ("positives", "shown")

    def __init__(self) -> None:
        self.positives: list[_Entry] = []
        self.shown: list[_Entry] = []

    @staticmethod
    def insert(log: list[_Entry], entry: _Entry) -> None:
        if not log or log[-1] <= entry:
            log.append(entry)  # events mostly arrive in time order
        else:
            bisect.insort(log, entry)


@dataclass
class _Applied:
    """Applied events, as arrays (one batch)."""

    user: np.ndarray  # object, external ids
    item: np.ndarray  # object, external ids
    time: np.ndarray  # int64
    kind: np.ndarray  # int8: _POSITIVE / _SHOWN
    value: np.ndarray  # float64
    seq: np.ndarray  # int64

    def take(self, mask: np.ndarray) -> _Applied:
        return _Applied(self.user[mask], self.item[mask], self.time[mask], self.kind[mask], self.value[mask],
                        self.seq[mask])

    def __len__(self) -> int:
        return len(self.seq)

    @staticmethod
    def concat(parts: Sequence[_Applied]) -> _Applied:
        return _Applied(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                          ("user", "item", "time", "kind", "value", "seq")))


class _IndexCache:
    """External id -> index of the ids the nearline logs hold, per id map (the maps are immutable)."""

    def __init__(self) -> None:
        self._maps: weakref.WeakKeyDictionary[IdMap, dict[str, int]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _known(self, id_map: IdMap) -> dict[str, int]:
        with self._lock:
            known = self._maps.get(id_map)
            if known is None:
                known = self._maps[id_map] = {}
            return known

    def index(self, id_map: IdMap, values: list[str]) -> np.ndarray:
        known = self._known(id_map)
        missing = [v for v in set(values) if v not in known]
        if missing:
            found = id_map.index(np.asarray(missing, dtype=object))
            known.update(zip(missing, found.tolist(), strict=True))
        return np.fromiter((known[v] for v in values), np.int64, len(values))

    def lookup(self, id_map: IdMap):
        """A function ``id -> index`` (-1 unknown) for one id at a time."""
        known = self._known(id_map)

        def index_of(value: str) -> int:
            k = known.get(value)
            if k is None:
                k = known[value] = int(id_map.index([value])[0])
            return k

        return index_of


@dataclass
class _Binding:
    """The nearline state of one model version: its counters (given to its ranker) and pending events."""

    funnel: Funnel
    cutoff: int
    counters: dict[str, GrowingCounter] = field(default_factory=dict)
    pending: dict[str, list[_Applied]] = field(default_factory=dict)
    in_model: int = 0


class NearlineState:
    """Nearline updates of a fitted funnel from a durable event log.

    Args:
        funnel: the model version to serve.
        store: the event log; its events are replayed into memory now.
        config: see :class:`NearlineConfig`.
    """

    def __init__(self, funnel: Funnel, store: EventStore, config: NearlineConfig | None = None):
        self.store = store
        self.config = config or NearlineConfig()
        self._users: dict[str, _UserLog] = {}
        self._seq = 0
        self._newest = _NO_CUTOFF
        self._published: list[pd.DataFrame] = []  # every publish_items call, with its publish_time
        self._stats: Counter[str] = Counter()
        self._ingest_lock = threading.RLock()  # ingest / publish / bind, one at a time
        self._state_lock = threading.RLock()  # user logs, held briefly
        #: per funnel, which event seqs its channels took (look-alike sums are applied once)
        self._channel_applied: weakref.WeakKeyDictionary[Funnel, np.ndarray] = weakref.WeakKeyDictionary()
        self._item_index = _IndexCache()
        with self._ingest_lock:
            self._binding = self._new_binding(funnel)
            self._replay()

    # ------------------------------------------------------------------ public
    @property
    def funnel(self) -> Funnel:
        """The model version the state is bound to."""
        return self._binding.funnel

    def ingest(self, events: Sequence[Event]) -> list[bool]:
        """Store ``events`` durably, then apply the new ones in memory.

        Returns:
            per event, True when it was new (stored and applied now), False for a
            duplicate ``event_id`` (stored and applied once, before).
        """
        events = list(events)
        for e in events:
            if not isinstance(e, Event):
                raise DataError(f"ingest takes Event objects, got {type(e).__name__}")
        if not events:
            return []
        with self._ingest_lock:
            flags = self.store.append(events)
            new = [e for e, f in zip(events, flags, strict=True) if f]
            self._stats["duplicates"] += len(events) - len(new)
            self._stats["events_ingested"] += len(new)
            self._apply_events(new)
        return flags

    def request(self, user_ids: Sequence[str], *, time: int | np.ndarray | None = None,
                exclude: Sequence[Sequence[str]] | None = None,
                context: Mapping[str, np.ndarray] | None = None, funnel: Funnel | None = None) -> RequestBatch:
        """The request batch of ``user_ids``: offline history and nearline events before ``time``.

        Args:
            user_ids: B external user ids (unknown ones work: their nearline history is used).
            time: request time, scalar or (B,); default: now, the latest of the wall clock,
                the newest nearline event + 1 (at most ``max_clock_skew_seconds`` ahead of the
                wall clock) and the model's "now" (just after its newest training event).
            exclude: per user, further item ids never to return.
            context: per-request arrays of leading size B, passed through.
            funnel: build the batch for this model version instead of the bound one (a
                request that started before :meth:`bind` keeps its version).
        """
        funnel = funnel or self._binding.funnel
        users = [str(u) for u in user_ids]
        b = len(users)
        if time is None:
            wall = int(_time.time())
            now = max(wall, min(self._newest + 1, wall + self.config.max_clock_skew_seconds),
                      int(funnel.history.now))
            times = np.full(b, now, np.int64)
        else:
            times = np.broadcast_to(np.asarray(time, np.int64), (b,)).copy()
        if exclude is not None and len(exclude) != b:
            raise DataError(f"exclude has {len(exclude)} rows for {b} users")
        return self._request(funnel, users, times, self._history_length(funnel), full=True,
                             extra=exclude, context=context)

    def publish_items(self, items: pd.DataFrame) -> int:
        """Publish new items: stored durably, then retrievable by the next request, without a restart.

        Each item is stored in the event log (:meth:`EventStore.append_items`: its id,
        ``publish_time`` and attributes, missing values left out) before it is
        published, so a restart replays it in its place among the events, with the
        same index. Publishing an item again stores its latest attributes (used when
        a new model version is bound or the log is replayed) and leaves the bound
        model as it is.

        Args:
            items: indexed by ``item_id``; side-information columns (as in the training
                item table: JSON scalars or lists) and optionally ``publish_time`` (unix
                seconds; default now).

        Returns:
            the number of items new to the model (known ones are left as they are).
        """
        if not isinstance(items, pd.DataFrame):
            raise DataError("publish_items takes a DataFrame indexed by item_id")
        frame = items.copy()
        frame.index = pd.Index(frame.index.astype(str), name="item_id")
        frame = frame[~frame.index.duplicated(keep="last")]
        now = int(_time.time())
        if "publish_time" in frame.columns:
            published = pd.to_numeric(frame["publish_time"], errors="coerce")
            if published.isna().any():
                raise DataError("publish_items: publish_time must be a number (unix seconds) for every item")
            times = published.to_numpy(np.float64).astype(np.int64)
        else:
            times = np.full(len(frame), now, np.int64)
        frame["publish_time"] = times
        attributes = frame.drop(columns="publish_time")
        try:
            records = [PublishedItem(item_id, int(t), {
                str(column): value for column, value in zip(attributes.columns, row, strict=True)
                if not (pd.api.types.is_scalar(value) and pd.isna(value))})
                for item_id, t, row in zip(frame.index, times, attributes.itertuples(index=False), strict=True)]
        except ValueError as e:
            raise DataError(f"publish_items: {e}") from None
        with self._ingest_lock:
            self.store.append_items(records)
            return self._publish_frame(frame, times)

    def _publish_frame(self, frame: pd.DataFrame, times: np.ndarray) -> int:
        """Publish a normalised frame (``publish_time`` filled) into the bound model (ingest lock held)."""
        self._published.append(frame)
        n_new = self._publish_into(self._binding, frame, times)
        self._stats["items_published"] += n_new
        return n_new

    def bind(self, funnel: Funnel) -> None:
        """Re-point to a new model version: re-apply nearline events and published items to it.

        Counters are rebuilt for ``funnel`` (its ranker gets a fresh overlay), published
        items it does not know are published into it, and events newer than its cutoff
        are applied (look-alike updates only once per funnel object, so binding an older
        version again, a rollback, does not count them twice). Ingestion waits meanwhile.
        """
        with self._ingest_lock:
            if funnel is self._binding.funnel:
                return
            binding = self._new_binding(funnel)
            if self._published:
                frame = pd.concat(self._published)
                frame = frame[~frame.index.duplicated(keep="last")]
                self._publish_into(binding, frame, frame["publish_time"].to_numpy(np.int64))
            with self._state_lock:
                applied = self._all_applied()
            for lo in range(0, len(applied), self.config.replay_batch):
                self._apply_to_binding(binding, applied.take(np.arange(lo, min(lo + self.config.replay_batch,
                                                                                  len(applied)))))
            self._binding = binding
            self._stats["binds"] += 1

    def item_counts(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Nearline counts per item (events applied to the bound model, any time).

        Returns:
            ``{"clicks": (N,) int64 positives, "impressions": (N,) int64 impressions}``; 0 for
            unknown items.
        """
        binding = self._binding
        idx = binding.funnel.item_ids.index(np.asarray([str(i) for i in item_ids], dtype=object))
        return {
            "clicks": binding.counters["positives_by_item"].totals(idx).astype(np.int64),
            "impressions": binding.counters["shown_by_item"].totals(idx).astype(np.int64),
        }

    def stats(self) -> dict[str, int]:
        """``events_ingested`` (new events stored by :meth:`ingest`), ``events_replayed`` (from the
        log at start-up), ``duplicates``, ``users_tracked``, ``items_published`` (new to the model,
        replayed ones included), ``items_replayed`` (item records read from the log), and
        ``events_ignored`` (types neither positive nor shown), ``events_in_model`` (at or before
        the cutoff of the bound model), ``events_pending`` (on items not published yet), ``binds``."""
        binding = self._binding
        out = {k: 0 for k in ("events_ingested", "events_replayed", "duplicates", "items_published", "items_replayed",
                              "events_ignored", "binds")}
        out.update({k: int(v) for k, v in self._stats.items()})
        out["users_tracked"] = len(self._users)
        out["events_pending"] = sum(len(p) for parts in binding.pending.values() for p in parts)
        out["events_in_model"] = binding.in_model
        return out

    # ------------------------------------------------------------ internals
    def _history_length(self, funnel: Funnel) -> int:
        return int(self.config.history_length or funnel.config.history_length)

    def _cutoff(self, funnel: Funnel) -> int:
        """Newest event time the model was trained on (events up to it are in the model)."""
        if not self.config.skip_events_in_model:
            return _NO_CUTOFF
        cutoff = int(funnel.history.now) - 1 if funnel.history.n_users and len(funnel.history.times) else _NO_CUTOFF
        newest = funnel.ranker.statistics_time() if funnel.ranker is not None else None
        return cutoff if newest is None else max(cutoff, newest)

    def _new_binding(self, funnel: Funnel) -> _Binding:
        counters = {name: GrowingCounter() for name in (
            "positives_by_item", "positives_by_user", "shown_by_item", "exposures_by_item",
            "values_by_item", "values_by_user")}
        binding = _Binding(funnel, self._cutoff(funnel), counters)
        if funnel.ranker is not None:
            funnel.ranker.use_statistics(StatisticsOverlay(
                positives_by_item=counters["positives_by_item"], positives_by_user=counters["positives_by_user"],
                exposures_by_item=counters["exposures_by_item"], values_by_item=counters["values_by_item"],
                values_by_user=counters["values_by_user"]))
        self._channel_applied.setdefault(funnel, np.zeros(1024, bool))
        return binding

    def _replay(self) -> None:
        """The log into memory: runs of events applied in batches, each published item in its place."""
        events: list[Event] = []
        items: list[PublishedItem] = []
        for record in self.store.scan_all():  # a loop over the log: flush a run when the kind changes
            if isinstance(record, Event):
                if items:
                    self._replay_items(items)
                    items = []
                events.append(record)
                if len(events) >= self.config.replay_batch:
                    self._replay_events(events)
                    events = []
            else:
                if events:
                    self._replay_events(events)
                    events = []
                items.append(record)
        if items:
            self._replay_items(items)
        if events:
            self._replay_events(events)

    def _replay_events(self, events: list[Event]) -> None:
        self._stats["events_replayed"] += len(events)
        self._apply_events(events)

    def _replay_items(self, items: list[PublishedItem]) -> None:
        frame = pd.DataFrame([{"publish_time": i.publish_time, **i.attributes} for i in items],
                             index=pd.Index([i.item_id for i in items], name="item_id"))
        frame = frame[~frame.index.duplicated(keep="last")]
        self._stats["items_replayed"] += len(frame)
        self._publish_frame(frame, frame["publish_time"].to_numpy(np.int64))

    def _apply_events(self, events: Sequence[Event]) -> None:
        """Add new (stored) events to the user logs and to the bound model's state."""
        cfg = self.config
        rows = []
        with self._state_lock:
            for e in events:  # a loop over the batch: user logs are per-user lists
                kind = cfg.kind(e.type)
                if kind is None:
                    self._stats["events_ignored"] += 1
                    continue
                self._seq += 1
                log = self._users.get(e.user_id)
                if log is None:
                    log = self._users[e.user_id] = _UserLog()
                entry = (int(e.timestamp), self._seq, e.item_id, float(e.value))
                _UserLog.insert(log.positives if kind == _POSITIVE else log.shown, entry)
                self._newest = max(self._newest, int(e.timestamp))
                rows.append((e.user_id, e.item_id, int(e.timestamp), kind, float(e.value), self._seq))
        if rows:
            user, item, t, kind, value, seq = zip(*rows, strict=True)
            applied = _Applied(np.array(user, dtype=object), np.array(item, dtype=object), np.array(t, np.int64),
                               np.array(kind, np.int8), np.array(value, np.float64), np.array(seq, np.int64))
            self._apply_to_binding(self._binding, applied)

    def _all_applied(self) -> _Applied:
        """Every logged event (positive or shown), in seq order."""
        rows = []
        for user, log in self._users.items():
            for kind, entries in ((_POSITIVE, log.positives), (_SHOWN, log.shown)):
                rows += [(user, item, t, kind, value, seq) for t, seq, item, value in entries]
        if not rows:
            empty = np.zeros(0, dtype=object)
            return _Applied(empty, empty, np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0),
                            np.zeros(0, np.int64))
        rows.sort(key=lambda r: r[5])
        user, item, t, kind, value, seq = zip(*rows, strict=True)
        return _Applied(np.array(user, dtype=object), np.array(item, dtype=object), np.array(t, np.int64),
                        np.array(kind, np.int8), np.array(value, np.float64), np.array(seq, np.int64))

    def _apply_to_binding(self, binding: _Binding, events: _Applied) -> None:
        """Counters and look-alike sums of one model version (events already in the user logs)."""
        if len(events) == 0:
            return
        funnel = binding.funnel
        in_model = events.time <= binding.cutoff
        binding.in_model += int(in_model.sum())
        events = events.take(~in_model)
        item = funnel.item_ids.index(events.item)
        unknown = item < 0
        if unknown.any():
            missing = events.take(unknown)
            for item_id in pd.unique(missing.item):  # a loop over the distinct unknown items
                binding.pending.setdefault(item_id, []).append(missing.take(missing.item == item_id))
        events, item = events.take(~unknown), item[~unknown]
        if len(events) == 0:
            return
        user = funnel.user_ids.index(events.user)
        pos = events.kind == _POSITIVE
        c = binding.counters
        c["positives_by_item"].add(item[pos], events.time[pos])
        c["positives_by_user"].add(user[pos], events.time[pos])
        c["values_by_item"].add(item[pos], events.time[pos], events.value[pos])
        c["values_by_user"].add(user[pos], events.time[pos], events.value[pos])
        c["shown_by_item"].add(item[~pos], events.time[~pos])
        c["exposures_by_item"].add(item, events.time)
        self._update_stages(binding, events, user, item)

    def _update_stages(self, binding: _Binding, events: _Applied, user: np.ndarray, item: np.ndarray) -> None:
        """Events on known items into the funnel's :class:`Incremental` stages (``observe``).

        The stages belong to the funnel object, so each event reaches them once per
        funnel (binding an older version again, a rollback, does not count it twice).
        """
        frozen = self.config.frozen()
        funnel = binding.funnel
        stages: dict[int, Incremental] = {}
        for spec, stage in funnel.stages():  # a loop over stages
            if isinstance(stage, Incremental) and not frozen & {spec.name, spec.kind}:
                stages.setdefault(id(stage), stage)
        if not stages:
            return
        applied = self._channel_applied.get(funnel)
        top = int(events.seq.max()) + 1
        if applied is None or len(applied) < top:
            grown = np.zeros(max(top, 2 * (0 if applied is None else len(applied))), bool)
            if applied is not None:
                grown[:len(applied)] = applied
            applied = self._channel_applied[funnel] = grown
        fresh = ~applied[events.seq]
        if not fresh.any():
            return
        events, user, item = events.take(fresh), user[fresh], item[fresh]
        applied[events.seq] = True
        users, times = events.user, events.time

        def history_before(rows: np.ndarray, history_length: int) -> RequestBatch:
            rows = np.asarray(rows, np.int64)
            return self._request(funnel, list(users[rows]), times[rows], history_length, full=False)

        batch = EventBatch(user, item, events.time, events.kind == _POSITIVE, events.value, history_before)
        for stage in stages.values():  # a loop over stages
            stage.observe(batch)

    def _publish_into(self, binding: _Binding, frame: pd.DataFrame, times: np.ndarray) -> int:
        funnel = binding.funnel
        ids = frame.index.to_numpy(dtype=object)
        new = funnel.item_ids.index(ids) < 0
        if not new.any():
            return 0
        new_ids = ids[new]
        # the id map first: a channel may return a new item as soon as it has it
        funnel.item_ids = funnel.item_ids.extended(new_ids)
        index = funnel.item_ids.index(new_ids)
        publish_to_channels([stage for _, stage in funnel.stages()], index, frame.loc[new], times[new])
        waiting = [part for item_id in new_ids for part in binding.pending.pop(item_id, [])]
        if waiting:
            self._apply_to_binding(binding, _Applied.concat(waiting))
        return int(new.sum())

    def _request(self, funnel: Funnel, users: list[str], times: np.ndarray, history_length: int, *,
                 full: bool, extra: Sequence[Sequence[str]] | None = None,
                 context: Mapping[str, np.ndarray] | None = None) -> RequestBatch:
        """Offline history + nearline events strictly before ``times``.

        ``full``: also the exclusions (offline items, nearline positives, impressions); else
        only the history (look-alike user vectors of a whole batch of events).
        """
        b = len(users)
        user_index = funnel.user_ids.index(np.asarray(users, dtype=object)) if b else np.zeros(0, np.int64)
        base = funnel.history.request(user_index, time=times, history_length=history_length, exclude_seen=full)
        cutoff = self._cutoff(funnel)
        ttl = self.config.shown_ttl_seconds
        time_list = times.tolist()
        # per distinct user, the span of their log the rows need; read under the lock
        rows_of: dict[str, list[int]] = {}
        for row, user in enumerate(users):  # a loop over rows: group them by user
            rows_of.setdefault(user, []).append(row)
        log_user: list[int] = []
        log_item: list[str] = []
        log_time: list[int] = []
        ex_rows: list[int] = []
        ex_items: list[str] = []
        with self._state_lock:
            for code, (user, rows) in enumerate(rows_of.items()):  # a loop over the distinct users
                log = self._users.get(user)
                if log is None:
                    continue
                pos = log.positives
                lo = bisect.bisect_left(pos, (cutoff + 1,)) if cutoff > _NO_CUTOFF else 0
                row_times = [time_list[r] for r in rows]
                hi = bisect.bisect_left(pos, (max(row_times),))
                # the L newest before the earliest row are enough unless some items are unknown
                start = max(lo, bisect.bisect_left(pos, (min(row_times),)) - history_length)
                span = pos[start:hi]
                if start > lo and any(self._item_index.lookup(funnel.item_ids)(e[2]) < 0 for e in span):
                    span = pos[lo:hi]
                log_user += [code] * len(span)
                log_item += [e[2] for e in span]
                log_time += [e[0] for e in span]
                if full:
                    for r, t in zip(rows, row_times, strict=True):
                        seen = pos[:bisect.bisect_left(pos, (t,))]
                        shown_lo = 0 if ttl is None else bisect.bisect_left(log.shown, (t - ttl,))
                        shown = log.shown[shown_lo:bisect.bisect_left(log.shown, (t,))]
                        ex_rows += [r] * (len(seen) + len(shown))
                        ex_items += [e[2] for e in seen] + [e[2] for e in shown]
        history, history_time = base.history, base.history_time
        if log_user:
            history, history_time = self._merge_history(
                funnel, rows_of, log_user, log_item, log_time, times, history, history_time, history_length)
        n_items = len(funnel.item_ids)
        ex = base.exclude.tocoo()
        rows = [ex.row.astype(np.int64)]
        cols = [ex.col.astype(np.int64)]
        if ex_rows:
            rows.append(np.asarray(ex_rows, np.int64))
            cols.append(self._item_index.index(funnel.item_ids, ex_items))
        if extra is not None:
            counts = [len(x) for x in extra]
            flat = [str(i) for x in extra for i in x]
            if flat:
                rows.append(np.repeat(np.arange(b), counts))
                cols.append(funnel.item_ids.index(np.asarray(flat, dtype=object)))
        r, c = np.concatenate(rows), np.concatenate(cols)
        ok = c >= 0
        exclude = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (r[ok], c[ok])), shape=(b, n_items))
        exclude.sum_duplicates()
        exclude.data[:] = 1.0
        return RequestBatch(user_index, base.time, history, history_time, exclude, dict(context or {}))

    def _merge_history(self, funnel: Funnel, rows_of: dict[str, list[int]], log_user: list[int],
                       log_item: list[str], log_time: list[int], times: np.ndarray, history: np.ndarray,
                       history_time: np.ndarray, history_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's nearline positives before its time merged into its offline history, newest first.

        The nearline log entries (known items only) are indexed like the offline store
        (a :class:`UserHistoryStore` over the batch's users, ties in time kept in log
        order), queried for all rows at once, and merged by time: nearline events come
        after the model's events in the log, so at equal times they are the newer ones.
        """
        item = self._item_index.index(funnel.item_ids, log_item)
        known = item >= 0  # items not published yet are ignored
        codes = np.asarray(log_user, np.int64)[known]
        nearline = UserHistoryStore(Interactions(
            codes, item[known], np.asarray(log_time, np.int64)[known], np.ones(int(known.sum()), np.float32),
            len(rows_of), len(funnel.item_ids)))
        row_code = np.empty(len(times), np.int64)
        for code, rows in enumerate(rows_of.values()):  # a loop over the distinct users
            row_code[rows] = code
        nl = nearline.request(row_code, time=times, history_length=history_length, exclude_seen=False)
        items = np.concatenate([nl.history, history], axis=1)
        item_times = np.concatenate([nl.history_time, history_time], axis=1)
        # newest first, padding last; a stable sort keeps nearline columns first among equal times
        key = np.where(items >= 0, -item_times, np.iinfo(np.int64).max)
        order = np.argsort(key, axis=1, kind="stable")[:, :history_length]
        merged = np.take_along_axis(items, order, axis=1)
        merged_time = np.take_along_axis(item_times, order, axis=1)
        pad = merged < 0
        return np.where(pad, -1, merged).astype(np.int64), np.where(pad, 0, merged_time).astype(np.int64)
