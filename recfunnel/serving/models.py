"""Model versions: load a new one while serving, swap it in atomically, roll back.

A version is a model directory inside the models root (``recfunnel fit --out
ROOT/v2``); its name is its path relative to the root. Loading builds the whole new
:class:`Funnel` (every artifact checked against the manifest, nothing unpickled:
see :mod:`recfunnel.storage.artifacts`), warms it up with a request, and only then
replaces one reference, :attr:`ModelRegistry.current`. A request reads that
reference once and uses the version it got from start to end, so no answer ever
mixes two versions. The previous version stays loaded for an instant rollback.

A name or path that leaves the models root (``..``, an absolute path elsewhere, a
symbolic link pointing out) is refused before anything is read.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from recfunnel.errors import ArtifactError, RecfunnelError
from recfunnel.pipeline.online.funnel import ARTIFACT_KIND, Funnel
from recfunnel.storage.artifacts import MANIFEST
from recfunnel.types import Candidates

#: user id of the warm-up request (unknown to every model: the cold-start path)
WARMUP_USER = "\x00recfunnel-warmup"


class VersionNotFound(RecfunnelError):
    """No model version of that name inside the models root."""


class UnsafePath(RecfunnelError):
    """A version name or path that would leave the models root."""


class LoadInProgress(RecfunnelError):
    """Another load is running."""


class NoPreviousVersion(RecfunnelError):
    """Rollback asked for but no earlier version is loaded."""


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """One loaded model.

    Attributes:
        version: its path relative to the models root ("v2").
        path: the resolved model directory.
        model_id: ``version@`` + the first 12 hex digits of the manifest's SHA-256
            (distinguishes two models written to the same directory).
        funnel: the loaded funnel.
        loaded_unix / load_seconds: when it was loaded and how long it took (with warm-up).
        static_fallback: (1, F) the fallback's list for an unknown user, used if the
            fallback itself fails during a request.
    """

    version: str
    path: Path
    model_id: str
    funnel: Funnel
    loaded_unix: float
    load_seconds: float
    static_fallback: Candidates | None = None

    def describe(self) -> dict:
        f = self.funnel
        return {"version": self.version, "model_id": self.model_id, "loaded_unix": round(self.loaded_unix, 3),
                "load_seconds": round(self.load_seconds, 3), "n_users": len(f.user_ids),
                "n_items": len(f.item_ids), "channels": [c.name for c in f.channels],
                "ranker": None if f.ranker is None else f.ranker.name,
                "reranker": None if f.reranker is None else f.reranker.name}


def resolve_inside(root: Path, ref: str) -> Path:
    """The model directory ``ref`` names inside ``root`` (relative, or absolute inside it).

    Raises:
        UnsafePath: ``ref`` is empty, has ``..``, a backslash or control characters, or
            resolves (symbolic links followed) outside ``root``.
        VersionNotFound: no model directory there.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> resolve_inside(root, "../etc")
    Traceback (most recent call last):
    ...
    recfunnel.serving.models.UnsafePath: '../etc' leaves the models root
    """
    if not ref or len(ref) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in ref) or "\\" in ref:
        raise UnsafePath(f"{ref!r} is not a valid model version name or path")
    root = Path(root).resolve()
    posix = PurePosixPath(ref)
    if ".." in posix.parts:
        raise UnsafePath(f"{ref!r} leaves the models root")
    try:
        path = (root / posix).resolve() if not posix.is_absolute() else Path(ref).resolve()
    except (OSError, RuntimeError) as e:  # a symbolic link loop, a name too long
        raise UnsafePath(f"{ref!r} cannot be resolved: {e.strerror if isinstance(e, OSError) else e}") from None
    if root not in path.parents:
        raise UnsafePath(f"{ref!r} leaves the models root")
    try:
        found = (path / MANIFEST).is_file()
    except OSError:
        found = False
    if not found:
        raise VersionNotFound(f"no model version {ref!r} in the models root")
    return path


class ModelRegistry:
    """The loaded model versions and the one being served.

    Args:
        root: the models root; every version is loaded from inside it.
        loader: builds a funnel from a directory (``Funnel.load``).
        warmup_k: k of the warm-up request run before a version is activated.
    """

    def __init__(self, root: str | Path, *, loader: Callable[[Path], Funnel] = Funnel.load, warmup_k: int = 10):
        self.root = Path(root).resolve()
        self.loader = loader
        self.warmup_k = warmup_k
        #: the version being served: a request reads this reference once and keeps what it got
        self.current: ModelVersion | None = None
        self.previous: ModelVersion | None = None
        self._load_lock = threading.Lock()  # one load or rollback at a time
        self._swap_lock = threading.Lock()
        self.history: list[dict] = []

    # ---------------------------------------------------------------- reading
    def name_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def versions(self) -> list[dict]:
        """Every model directory directly inside the root (plus the loaded ones)."""
        found: dict[str, dict] = {}
        try:
            children = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            children = []
        for p in children:
            if (p / MANIFEST).is_file():
                found[p.name] = {"version": p.name, "loaded": False, "current": False}
        for v in (self.current, self.previous):
            if v is not None:
                entry = found.setdefault(v.version, {"version": v.version})
                entry.update(v.describe(), loaded=True, current=v is self.current)
        return list(found.values())

    # ---------------------------------------------------------------- loading
    def build(self, ref: str | Path) -> ModelVersion:
        """Load and warm up the version ``ref`` (not activated)."""
        t0 = time.perf_counter()
        path = resolve_inside(self.root, str(ref))
        manifest = (path / MANIFEST).read_bytes()
        funnel = self.loader(path)
        if not isinstance(funnel, Funnel):  # a loader must build a Funnel, nothing else
            raise ArtifactError(f"{path}: not a {ARTIFACT_KIND} model")
        request = funnel.request([WARMUP_USER])
        funnel.run(request, self.warmup_k, trace=True)
        known = funnel.user_ids.ids[:1]
        if len(known):
            funnel.run(funnel.request(list(known)), self.warmup_k)
        static = funnel.fallback.retrieve(request, funnel.config.retrieval_k)
        name = self.name_of(path)
        model_id = f"{name}@{hashlib.sha256(manifest).hexdigest()[:12]}"
        return ModelVersion(name, path, model_id, funnel, time.time(), time.perf_counter() - t0, static)

    def load(self, ref: str | Path, activate: Callable[[ModelVersion], None] | None = None,
             *, wait: bool = False) -> ModelVersion:
        """Build version ``ref`` then make it current; the old one becomes ``previous``.

        ``activate`` runs just before the swap (the service rebinds
        its nearline state there); if it raises, nothing changes.

        Raises:
            LoadInProgress: another load runs (unless ``wait``).
            UnsafePath / VersionNotFound / ArtifactError: the version is refused.
        """
        if not self._load_lock.acquire(blocking=wait):
            raise LoadInProgress("another model load is in progress; try again when it ends")
        try:
            new = self.build(ref)
            self.activate(new, activate, "load")
            return new
        finally:
            self._load_lock.release()

    def rollback(self, activate: Callable[[ModelVersion], None] | None = None) -> ModelVersion:
        """Serve the previous version again (the current one becomes ``previous``)."""
        if not self._load_lock.acquire(blocking=False):
            raise LoadInProgress("a model load is in progress; try again when it ends")
        try:
            if self.previous is None:
                raise NoPreviousVersion("no previous model version to roll back to")
            target = self.previous
            self.activate(target, activate, "rollback")
            return target
        finally:
            self._load_lock.release()

    def activate(self, new: ModelVersion, activate: Callable[[ModelVersion], None] | None,
                 action: str) -> None:
        """Make ``new`` current after ``activate(new)`` succeeded (one reference swap)."""
        with self._swap_lock:
            old = self.current
            if activate is not None:
                activate(new)
            self.previous, self.current = old, new
        self.history.append({"action": action, "version": new.version, "model_id": new.model_id,
                             "unix": round(time.time(), 3)})
        del self.history[:-100]
