"""Settings of the online service: one frozen dataclass, checked once at start.

API keys are never part of the settings' values or the code: the settings name a
file (``api_keys_file``) and an environment variable (``api_keys_env``) to read
them from (see :mod:`recfunnel.serving.security` for the format).

>>> s = ServingSettings(model_dir=Path("/srv/models/v1"))
>>> s.host, s.port, s.models_root.as_posix(), s.events_url
('127.0.0.1', 8000, '/srv/models', 'sqlite:////srv/models/state/events.db')

Relative paths (``runs/ml100k``, ``./runs/ml100k``, ``runs/ml100k/``) are made absolute
against the working directory when the settings are made, so the served version is found
inside its models root whatever the process's directory is later:

>>> ServingSettings(model_dir=Path("./runs/ml100k/")).model_dir == Path.cwd() / "runs" / "ml100k"
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recfunnel.errors import ConfigError

#: the environment variable read for API keys unless the settings name another
DEFAULT_API_KEYS_ENV = "RECFUNNEL_API_KEYS"

#: name of the folder next to the model directory that holds the service's state
STATE_DIR = "state"


@dataclass(frozen=True)
class ServingSettings:
    """Everything the service needs to start.

    Attributes:
        model_dir: the model version served at start (a directory written by ``recfunnel fit``);
            a relative path is taken from the working directory (made absolute here).
        models_root: the only folder admin loads may read models from; default the parent
            of ``model_dir`` (so its sibling directories are the other versions); relative
            paths as for ``model_dir``.
        host / port: where to listen; loopback unless told otherwise.
        events_url: event store, ``sqlite:///path``, ``redis://host:port/db`` or ``memory://``;
            default a SQLite file in the ``state`` folder next to the model directory.
        api_keys_file: file of API keys (``role:key`` per line); None: none from a file.
        api_keys_env: environment variable holding API keys (same format, comma or
            newline separated); an unset or empty variable adds none.
        allow_anonymous: with no key configured, serve without authentication. Only ever
            honoured on a loopback host: a service reachable from elsewhere needs keys.
        max_k: the largest ``k`` a request may ask for.
        max_request_bytes: the largest request body (413 beyond it).
        max_concurrent: requests handled at once (429 with ``Retry-After`` beyond it).
        max_events / max_items / max_exclude: the longest lists one request may carry.
        budget_ms: end-to-end budget of a recommendation; stages that would run past it
            are skipped and the answer is filled from the fallback (``degraded``).
        channel_timeout_ms: the longest a retrieval channel may take; a late channel is dropped.
        stage_timeout_ms: the longest the ranker or the re-ranker may take.
        channel_workers: threads running retrieval channels and stages concurrently.
        max_late_per_channel: calls of one channel still running past their timeout after
            which the channel is skipped outright until they finish (a hung channel must
            not occupy every worker).
        trace_items: candidates listed per stage in a debug trace.
        retry_after_s: the ``Retry-After`` of 429/503 answers.
        admission_control: answer 503 with ``Retry-After`` at once when a recommendation has
            less of its budget left than a request usually takes (it queued too long for a
            worker), instead of answering after the budget (:mod:`recfunnel.serving.admission`).
        event_retention_days: compact the event log at start-up and every hour: events older
            than this many days are dropped (published items and newer events are kept, in
            order; :func:`recfunnel.storage.events.compact_events`). None keeps every event.
        batch_max: the most recommendations run as one batch: requests that queue while a batch
            runs are run together (:mod:`recfunnel.pipeline.online.batching`); 1 turns it off.
        batch_window_ms: how long a batch waits for more requests after its first (0: none; it
            takes what has queued).
        batch_workers: batches run at once.
        load_in_background: load the model after the server starts (``/healthz`` answers
            at once, ``/readyz`` once loaded); False loads inside ``create_app``.
    """

    model_dir: Path
    models_root: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    events_url: str | None = None
    api_keys_file: Path | None = None
    api_keys_env: str = DEFAULT_API_KEYS_ENV
    allow_anonymous: bool = True
    max_k: int = 500
    max_request_bytes: int = 1 << 20
    max_concurrent: int = 64
    max_events: int = 5_000
    max_items: int = 5_000
    max_exclude: int = 1_000
    budget_ms: float = 250.0
    channel_timeout_ms: float = 100.0
    stage_timeout_ms: float = 100.0
    channel_workers: int = 16
    max_late_per_channel: int = 2
    trace_items: int = 50
    retry_after_s: int = 1
    admission_control: bool = True
    event_retention_days: float | None = None
    batch_max: int = 16
    batch_window_ms: float = 0.0
    batch_workers: int = 2
    load_in_background: bool = False

    def __post_init__(self) -> None:
        # absolute now: the registry resolves a relative name against the models root, so a
        # relative model_dir ("runs/ml100k") would be looked for at ROOT/runs/ml100k
        object.__setattr__(self, "model_dir", _absolute(self.model_dir))
        if self.models_root is None:
            object.__setattr__(self, "models_root", self.model_dir.parent)
        else:
            object.__setattr__(self, "models_root", _absolute(self.models_root))
        if self.api_keys_file is not None:
            object.__setattr__(self, "api_keys_file", Path(self.api_keys_file))
        if self.events_url is None:
            db = self.model_dir.parent / STATE_DIR / "events.db"
            object.__setattr__(self, "events_url", f"sqlite:///{db.as_posix()}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        for name in ("max_k", "max_request_bytes", "max_concurrent", "max_events", "max_items",
                     "max_exclude", "channel_workers", "max_late_per_channel", "trace_items",
                     "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("budget_ms", "channel_timeout_ms", "stage_timeout_ms"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.batch_max < 1 or self.batch_workers < 1 or not self.batch_window_ms >= 0:
            raise ConfigError("batch_max and batch_workers must be >= 1 and batch_window_ms >= 0")
        if self.event_retention_days is not None and not self.event_retention_days > 0:
            raise ConfigError(f"event_retention_days must be positive, got {self.event_retention_days!r}")

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute against the working directory (``.``, ``..`` and ``x/`` normalised).

    Symbolic links are kept (not resolved): the models root check resolves them later
    and refuses a link that leaves the root.
    """
    return Path(os.path.abspath(os.fspath(path)))


def is_loopback_host(host: str) -> bool:
    """True for hosts only this machine can reach.

    >>> [is_loopback_host(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.0.0.5")]
    [True, True, True, False, False]
    """
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
