"""Download MovieLens data sets from GroupLens.

The archives are fetched from ``files.grouplens.org`` and extracted in
``dest_dir``; an existing extracted folder is reused. Without network access
the error says where to download the files by hand.
"""

from __future__ import annotations

import http.client
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from recfunnel.errors import DataError

MOVIELENS_URLS = {
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    "ml-latest-small": "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
}

#: the interactions file inside each extracted folder (for the hint in errors and for callers)
MOVIELENS_INTERACTIONS = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-latest-small": "ratings.csv"}


def _safe_extract(archive: zipfile.ZipFile, dest_dir: Path) -> None:
    """Extract, refusing members that would land outside ``dest_dir`` (zip slip)."""
    root = dest_dir.resolve()
    for member in archive.infolist():
        target = (root / member.filename).resolve()
        if target != root and root not in target.parents:
            raise DataError(f"refusing to extract {member.filename!r}: it points outside {dest_dir}")
    archive.extractall(root)


def download_movielens(name: str, dest_dir: str | Path, *, timeout: float = 60.0) -> Path:
    """Download and extract a MovieLens data set.

    Args:
        name: ``ml-100k``, ``ml-1m`` or ``ml-latest-small``.
        dest_dir: folder to extract into (created if needed).
        timeout: seconds to wait for the server.

    Returns:
        the extracted folder, ``dest_dir / name`` (e.g. holding ``u.data`` for ml-100k).

    Raises:
        DataError: unknown name, no network, or a broken archive.
    """
    if name not in MOVIELENS_URLS:
        raise DataError(f"unknown MovieLens data set {name!r}; choose one of {sorted(MOVIELENS_URLS)}")
    dest_dir = Path(dest_dir)
    folder = dest_dir / name
    if (folder / MOVIELENS_INTERACTIONS[name]).is_file():
        return folder
    url = MOVIELENS_URLS[name]
    hint = (
        f"could not download {name} from {url} (no network?). Download it by hand from "
        f"https://grouplens.org/datasets/movielens/ and pass the local path, "
        f"e.g. --interactions path/to/{MOVIELENS_INTERACTIONS[name]}"
    )
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as buffer:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, buffer)
            buffer.seek(0)
            with zipfile.ZipFile(buffer) as archive:
                _safe_extract(archive, dest_dir)
    except DataError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DataError(f"{hint} [{type(exc).__name__}: {' '.join(str(exc).split())}]") from exc
    except zipfile.BadZipFile as exc:
        raise DataError(f"{hint} [the download is not a valid zip archive: {exc}]") from exc
    except OSError as exc:
        raise DataError(f"{hint} [{type(exc).__name__}: {' '.join(str(exc).split())}]") from exc
    if not folder.is_dir():
        raise DataError(f"the {name} archive from {url} did not contain a folder {name!r}")
    return folder
