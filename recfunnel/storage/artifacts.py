"""Safe, atomic model artifacts.

A model directory holds plain files (``.npz`` arrays saved without pickle, JSON,
text) and a ``manifest.json`` listing each file with its SHA-256. Loading checks
every checksum and refuses paths that leave the directory; nothing is ever
unpickled. A whole directory is written to a temporary sibling and renamed into
place, so readers never see half a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from recfunnel.errors import ArtifactError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: read once: os.umask can only be read by setting it, which is not thread-safe
_UMASK = _process_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask),
    not the 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _check_name(name: str) -> None:
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or name in ("", MANIFEST) or "\\" in name:
        raise ArtifactError(f"artifact name '{name}' is not a plain relative path inside the model directory")


def check_replaceable(out_dir: str | Path) -> None:
    """Refuse to write an artifact over anything but nothing, an empty folder or an older artifact.

    Writing replaces the whole directory, so a user's folder must never be a target.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (
            any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file())):
        raise ArtifactError(f"{out_dir} exists and is not a model directory; choose a new --out path")


class ArtifactWriter:
    """Collects the files of one model directory, then commits them atomically.

    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> with ArtifactWriter(d + "/m", kind="demo") as w:
    ...     w.write_arrays("x.npz", {"a": np.arange(3)})
    ...     w.write_json("meta.json", {"k": 1})
    >>> r = ArtifactReader(d + "/m")
    >>> r.read_arrays("x.npz")["a"].tolist(), r.read_json("meta.json")
    ([0, 1, 2], {'k': 1})
    """

    def __init__(self, out_dir: str | Path, kind: str, metadata: dict[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.metadata = dict(metadata or {})
        check_replaceable(self.out_dir)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(dir=self.out_dir.parent, prefix=f".{self.out_dir.name}.", suffix=".tmp"))
        os.chmod(self._tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would hide the model from other users
        self._files: dict[str, str] = {}

    def _path(self, name: str) -> Path:
        _check_name(name)
        path = self._tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _done(self, name: str, path: Path) -> None:
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        self._files[name] = sha256_file(path)

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Save arrays as ``.npz``; object arrays are refused (they would need pickle)."""
        path = self._path(name)
        for key, arr in arrays.items():
            if np.asarray(arr).dtype == object:
                raise TypeError(f"array '{key}' has dtype object; convert it to str or a number type")
        with open(path, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        self._done(name, path)

    def write_json(self, name: str, obj: Any) -> None:
        path = self._path(name)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
        self._done(name, path)

    def write_text(self, name: str, text: str) -> None:
        path = self._path(name)
        path.write_text(text)
        self._done(name, path)

    def write_file(self, name: str, source: str | Path) -> None:
        path = self._path(name)
        shutil.copyfile(source, path)
        self._done(name, path)

    def commit(self) -> Path:
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "created_unix": int(time.time()),
            "files": dict(sorted(self._files.items())),
            "metadata": self.metadata,
        }
        (self._tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
        with open(self._tmp / MANIFEST, "rb+") as f:
            os.fsync(f.fileno())
        _fsync_dir(self._tmp)
        # Swap directories: the old model stays whole until the new one is in place.
        old = None
        if self.out_dir.exists():
            old = self.out_dir.parent / f".{self.out_dir.name}.old.{os.getpid()}.{time.time_ns()}"
            os.replace(self.out_dir, old)
        os.replace(self._tmp, self.out_dir)
        _fsync_dir(self.out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir

    def abort(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class ArtifactReader:
    """Reads a model directory written by :class:`ArtifactWriter`, verifying checksums."""

    def __init__(self, model_dir: str | Path, kind: str | None = None):
        self.model_dir = Path(model_dir)
        manifest_path = self.model_dir / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(f"{self.model_dir} is not a recfunnel model directory (no {MANIFEST})")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{manifest_path} is not valid JSON: {e}") from None
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{manifest_path}: unsupported format_version {self.manifest.get('format_version')}")
        if kind is not None and self.manifest.get("kind") != kind:
            raise ArtifactError(f"{self.model_dir} holds a '{self.manifest.get('kind')}' artifact, expected '{kind}'")
        self.files: dict[str, str] = self.manifest.get("files", {})
        self.metadata: dict[str, Any] = self.manifest.get("metadata", {})

    def path(self, name: str) -> Path:
        """Verified path of ``name``: listed in the manifest, inside the directory, checksum ok."""
        _check_name(name)
        if name not in self.files:
            raise ArtifactError(f"{self.model_dir}: '{name}' is not listed in the manifest")
        root = self.model_dir.resolve()
        path = (self.model_dir / name).resolve()
        if root not in path.parents:
            raise ArtifactError(f"{self.model_dir}: '{name}' resolves outside the model directory")
        if not path.is_file():
            raise ArtifactError(f"{self.model_dir}: '{name}' is missing")
        if sha256_file(path) != self.files[name]:
            raise ArtifactError(f"{self.model_dir}: checksum mismatch for '{name}' (corrupt or tampered)")
        return path

    def has(self, name: str) -> bool:
        return name in self.files

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        path = self.path(name)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except ValueError as e:  # object arrays need pickle: refuse
            raise ArtifactError(f"{self.model_dir}: '{name}' needs pickle to load and is refused ({e})") from None

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text())

    def read_text(self, name: str) -> str:
        return self.path(name).read_text()
