"""Inner-product ANN indexes on faiss: exact, IVF-Flat, IVF-PQ and HNSW.

All four answer :meth:`~recfunnel.index.base.VectorIndex.search` the same way
and take external int64 ids:

===========  ===================================  ===============================
kind         faiss index                          add / remove
===========  ===================================  ===============================
``flat``     ``IndexIDMap2(IndexFlatIP)``          in place (``remove_ids``)
``ivf_flat`` ``IndexIVFFlat`` (ids stored in the   in place; new vectors go to the
             inverted lists)                      centroids learned at build
``ivf_pq``   ``IndexIVFPQ`` (ditto), approximate   same as ``ivf_flat``
             scores from PQ codes
``hnsw``     ``IndexIDMap2(IndexHNSWFlat)``        add in place; remove by
                                                  tombstone (faiss HNSW cannot
                                                  delete graph nodes)
===========  ===================================  ===============================

HNSW removal: a removed item stays in the graph (it still routes searches) and
is marked dead in a tombstone mask over faiss's internal positions. Searches
pass the live positions to faiss as an ``IDSelectorBitmap``, so dead items are
skipped *while* the graph is walked rather than filtered afterwards, and a
query still gets ``k`` live results whenever the beam (``ef_search``) reaches
them. Tombstones cost memory and some speed until :meth:`HNSWIndex.compact`
rebuilds the graph from the live vectors. When the beam would hold every live
item (``max(k, ef_search) >= len(index)``), HNSW scans its stored vectors
exactly instead: no slower than the walk, and complete.

IVF training follows the faiss guidelines (wiki "Guidelines to choose an
index"): ``nlist ~ 4 sqrt(n)`` lists, at most ``n / 39`` so that k-means has 39
points per centroid; too few vectors to train (IVF-PQ needs ``2**nbits`` per
codebook) falls back to the exact ``flat`` index with a warning. Centroids are
not re-learned on :meth:`add`; rebuild when the catalogue drifts far from the
vectors the index was trained on.

Persistence: ``faiss.serialize_index`` bytes as a uint8 array in
``{prefix}index.npz`` (no pickle) and ``{prefix}index.json`` (kind, dim,
count, metric, params, tombstones), both checksummed by the
:class:`~recfunnel.storage.artifacts.ArtifactWriter`; loading checks the
deserialised index against that manifest.

Threads: faiss uses OpenMP with whatever ``faiss.omp_set_num_threads`` was set
to; nothing here changes it. Concurrent searches are safe; a search concurrent
with ``add``/``remove``/``update`` is not (faiss does not lock).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> vectors = rng.standard_normal((50, 8)).astype(np.float32)
>>> index = build_index(vectors, np.arange(100, 150), kind="hnsw")
>>> scores, ids = index.search(vectors[:2], k=3)
>>> scores.shape, ids.dtype.name
((2, 3), 'int64')
>>> bool((ids == build_index(vectors, np.arange(100, 150)).search(vectors[:2], k=3)[1]).all())
True
>>> index.remove(np.array([133, 7]))
1
>>> 133 in index.search(vectors, k=60)[1]
False
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import faiss
import numpy as np

from recfunnel.errors import ArtifactError, ConfigError
from recfunnel.index.base import (
    MISSING_ID,
    MISSING_SCORE,
    VectorIndex,
    as_ids,
    as_k,
    as_vectors,
    padding,
)
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter

MANIFEST_FORMAT = "recfunnel.index/1"
METRIC = "inner_product"
#: faiss k-means warns below 39 training points per centroid (Clustering.h)
MIN_POINTS_PER_CENTROID = 39


# --------------------------------------------------------------------------- params


def _check_positive(owner: str, **values: int | None) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"{owner}.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class FlatParams:
    """Exact search has no parameters."""


@dataclass(frozen=True)
class IVFFlatParams:
    """IVF-Flat: vectors bucketed by their nearest of ``nlist`` k-means centroids.

    Attributes:
        nlist: number of inverted lists; ``None`` = ``4 sqrt(n)`` clipped to ``[1, n / 39]``.
        nprobe: lists scanned per query, at most ``nlist``; ``None`` = ``max(16, nlist / 32)``
            (recall@10 0.97-0.98 on the 5k test mixture, 0.998 on the 100k benchmark,
            see ``benchmarks/bench_index.py``).
    """

    nlist: int | None = None
    nprobe: int | None = None

    def __post_init__(self) -> None:
        _check_positive(type(self).__name__, nlist=self.nlist, nprobe=self.nprobe)


@dataclass(frozen=True)
class IVFPQParams(IVFFlatParams):
    """IVF-PQ: IVF lists holding product-quantised residuals (Jégou et al. 2011).

    Attributes:
        m: sub-quantisers (bytes per vector at ``nbits=8``); must divide ``dim``;
            ``None`` = the largest divisor of ``dim`` that is <= ``dim / 4``
            (4 dimensions per code).
        nbits: bits per sub-quantiser code (1..16); each codebook needs ``2**nbits``
            training vectors.
    """

    m: int | None = None
    nbits: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(type(self).__name__, m=self.m, nbits=self.nbits)
        if self.nbits > 16:
            raise ConfigError(f"IVFPQParams.nbits must be in 1..16, got {self.nbits}")


@dataclass(frozen=True)
class HNSWParams:
    """HNSW graph (Malkov & Yashunin 2018).

    Attributes:
        M: neighbours per node (graph degree; 2M on the bottom layer).
        ef_construction: beam width while inserting.
        ef_search: beam width while searching (faiss uses ``max(ef_search, k)``).
    """

    M: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def __post_init__(self) -> None:
        _check_positive(type(self).__name__, M=self.M, ef_construction=self.ef_construction,
                        ef_search=self.ef_search)
        if self.M < 2:
            raise ConfigError(f"HNSWParams.M must be >= 2, got {self.M}")


def default_nlist(n: int) -> int:
    """``4 sqrt(n)`` inverted lists, at most ``n / 39`` (faiss's points-per-centroid floor), at least 1.

    >>> default_nlist(100_000), default_nlist(5_000), default_nlist(10)
    (1265, 128, 1)
    """
    return int(max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID)))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query by default: ``max(16, nlist / 32)``, at most ``nlist``.

    A floor of lists for small indexes (whose clusters are loose) and a fixed share
    (~3%) for large ones.

    >>> default_nprobe(128), default_nprobe(1265), default_nprobe(4)
    (16, 40, 4)
    """
    return min(nlist, max(16, math.ceil(nlist / 32)))


def default_pq_m(dim: int) -> int:
    """Largest divisor of ``dim`` that is <= ``dim / 4`` (at least 1).

    >>> default_pq_m(64), default_pq_m(100), default_pq_m(7)
    (16, 25, 1)
    """
    limit = max(1, dim // 4)
    return max(m for m in range(1, limit + 1) if dim % m == 0)


def _make_params(cls: type, params: dict[str, Any], kind: str) -> Any:
    try:
        return cls(**params)
    except TypeError:
        known = ", ".join(f.name for f in dataclasses.fields(cls)) or "none"
        unknown = sorted(set(params) - {f.name for f in dataclasses.fields(cls)})
        raise ConfigError(f"index kind '{kind}' got unknown parameters {unknown}; it takes: {known}") from None


# --------------------------------------------------------------------------- indexes


class FaissIndex(VectorIndex):
    """A :class:`VectorIndex` over one faiss index; subclasses fix the faiss type.

    Construct with :meth:`build` (or :func:`build_index`) and :meth:`load`; the
    constructor wraps an already built faiss index.

    Attributes:
        params: the resolved parameters (``None`` defaults replaced by the values used).
    """

    params_class: ClassVar[type] = FlatParams
    #: whether :meth:`remove` frees the item (False: tombstoned until compaction)
    removes_in_place: ClassVar[bool] = True
    #: fields of :attr:`params` that only affect search (changeable by :meth:`set_search_params`)
    search_param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, index: faiss.Index, params: Any, ids: np.ndarray):
        self._index = index
        self.params = params
        self.dim = int(index.d)
        self._ids = np.sort(np.asarray(ids, np.int64))
        self._configure()

    # -- building

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray | None = None, **params: Any) -> FaissIndex:
        """Build (and train, if needed) an index of this kind over ``vectors``.

        Args:
            vectors: (n, d) finite float vectors.
            ids: (n,) unique non-negative int64 ids; default ``arange(n)``.
            **params: fields of :attr:`params_class`.

        Returns:
            The index; a :class:`FlatIndex` (with a warning) when ``n`` is too small to train.
        """
        vectors = as_vectors(vectors)
        ids = np.arange(len(vectors), dtype=np.int64) if ids is None else as_ids(ids, len(vectors))
        resolved = _make_params(cls.params_class, params, cls.kind)
        return cls._build(vectors, ids, resolved)

    @classmethod
    def _build(cls, vectors: np.ndarray, ids: np.ndarray, params: Any) -> FaissIndex:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        index.add_with_ids(vectors, ids)
        return cls(index, params, ids)

    def _configure(self) -> None:
        """Apply search-time parameters to the faiss index."""

    def set_search_params(self, **params: Any) -> None:
        """Change search-time parameters without a rebuild (they are saved with the index).

        Args:
            **params: ``nprobe`` (IVF kinds; ``None`` = the default) or ``ef_search`` (HNSW).

        Raises:
            ConfigError: a parameter this kind does not have, or that needs a rebuild.
        """
        wrong = sorted(set(params) - set(self.search_param_names))
        if wrong:
            raise ConfigError(f"'{self.kind}' index: {wrong} cannot change after the build; "
                              f"search parameters: {list(self.search_param_names)}")
        self.params = self._resolve_search(dataclasses.replace(self.params, **params))
        self._configure()

    def _resolve_search(self, params: Any) -> Any:
        return params

    # -- queries and edits

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 sorted ids of the live items (a copy)."""
        return self._ids.copy()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = as_k(k)
        queries = as_vectors(queries, self.dim, name="queries")
        scores, ids = padding(len(queries), k)
        if len(queries) == 0 or len(self) == 0:
            return scores, ids
        kk = min(k, int(self._index.ntotal))
        found_scores, found_ids = self._search(queries, kk)
        scores[:, :kk] = found_scores
        ids[:, :kk] = found_ids
        missing = ids < 0
        if missing.any():
            # faiss pads with -FLT_MAX; make padding -inf and keep it after every real hit.
            scores[missing] = MISSING_SCORE
            order = np.argsort(-scores, axis=1, kind="stable")
            scores = np.take_along_axis(scores, order, axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
        return scores, ids

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(queries, k)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = as_vectors(vectors, self.dim)
        ids = as_ids(ids, len(vectors))
        if len(ids) == 0:
            return
        present = ids[self._contains(ids)]
        if len(present):
            raise ValueError(f"{len(present)} ids are already in the index (e.g. {present[:5].tolist()}); "
                             "use update() to replace their vectors")
        self._add(ids, vectors)
        new = np.sort(ids)
        self._ids = np.insert(self._ids, np.searchsorted(self._ids, new), new)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, ids)

    def copy(self) -> FaissIndex:
        """An independent copy: the faiss index cloned, the id bookkeeping arrays copied."""
        out = object.__new__(type(self))
        out.__dict__.update({k: v.copy() if isinstance(v, np.ndarray) else v for k, v in vars(self).items()})
        out._index = faiss.clone_index(self._index)
        out._configure()
        return out

    def remove(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids)
        if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        ids = np.unique(ids.astype(np.int64))
        ids = ids[self._contains(ids)]
        if len(ids) == 0:
            return 0
        self._remove(ids)
        self._ids = self._ids[~np.isin(self._ids, ids, assume_unique=True)]
        return len(ids)

    def _remove(self, ids: np.ndarray) -> None:
        removed = self._index.remove_ids(faiss.IDSelectorBatch(ids))
        if removed != len(ids):  # the id bookkeeping and faiss disagree: a bug, not bad input
            raise RuntimeError(f"faiss removed {removed} items, expected {len(ids)}")

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        """(n,) bool: which ``ids`` are live (binary search in the sorted id array)."""
        if len(self._ids) == 0:
            return np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return self._ids[pos] == ids

    # -- persistence

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self),
            "metric": METRIC,
            "params": dataclasses.asdict(self.params),
            "tombstones": 0,
            "faiss_version": faiss.__version__,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"faiss": faiss.serialize_index(self._index)}

    def save(self, writer: ArtifactWriter, prefix: str) -> None:
        """Write ``{prefix}index.npz`` (faiss bytes) and ``{prefix}index.json`` (manifest)."""
        writer.write_arrays(f"{prefix}index.npz", self._arrays())
        writer.write_json(f"{prefix}index.json", self._manifest())

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str) -> FaissIndex:
        """Restore an index saved by :meth:`save`; on :class:`FaissIndex` itself, of any kind.

        Raises:
            ArtifactError: missing/tampered files (checksums), an unknown or unexpected
                kind, or a faiss index that disagrees with the manifest's kind, dim,
                metric or count.
        """
        meta = reader.read_json(f"{prefix}index.json")
        where = f"{reader.model_dir}/{prefix}index"
        if not isinstance(meta, dict) or meta.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"{where}.json is not a {MANIFEST_FORMAT} manifest")
        kind = meta.get("kind")
        target = INDEX_CLASSES.get(kind)
        if target is None:
            raise ArtifactError(f"{where}.json: unknown index kind {kind!r}; known: {list(INDEX_CLASSES)}")
        if cls is not FaissIndex and target is not cls:
            raise ArtifactError(f"{where}.json holds a '{kind}' index, expected '{cls.kind}'")
        if meta.get("metric") != METRIC:
            raise ArtifactError(f"{where}.json: metric {meta.get('metric')!r}, expected '{METRIC}'")
        try:
            params = target.params_class(**meta.get("params", {}))
        except (TypeError, ConfigError) as e:
            raise ArtifactError(f"{where}.json: invalid params ({e})") from None
        arrays = reader.read_arrays(f"{prefix}index.npz")
        if "faiss" not in arrays or arrays["faiss"].dtype != np.uint8 or arrays["faiss"].ndim != 1:
            raise ArtifactError(f"{where}.npz has no 1-D uint8 'faiss' array")
        try:
            index = faiss.deserialize_index(arrays["faiss"])
        except RuntimeError as e:
            raise ArtifactError(f"{where}.npz: faiss could not read the index ({str(e).splitlines()[-1]})") from None
        if index.d != meta.get("dim"):
            raise ArtifactError(f"{where}: index has dimension {index.d}, manifest says {meta.get('dim')}")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ArtifactError(f"{where}: faiss index does not use the inner product")
        loaded = target._restore(index, params, arrays, meta, where)
        if (np.diff(loaded._ids) == 0).any():
            raise ArtifactError(f"{where}: the index holds repeated ids")
        if len(loaded) != meta.get("count"):
            raise ArtifactError(f"{where}: index holds {len(loaded)} items, manifest says {meta.get('count')}")
        return loaded

    @classmethod
    def _restore(cls, index: faiss.Index, params: Any, arrays: dict[str, np.ndarray],
                 meta: dict[str, Any], where: str) -> FaissIndex:
        """Check the faiss type and rebuild the id bookkeeping of a deserialised index."""
        inner = _unwrap_idmap(index, where)
        if not isinstance(inner, faiss.IndexFlat):
            raise ArtifactError(f"{where}: expected a flat index, found {type(inner).__name__}")
        return cls(index, params, faiss.vector_to_array(index.id_map))


def _unwrap_idmap(index: faiss.Index, where: str) -> faiss.Index:
    if not isinstance(index, faiss.IndexIDMap2):
        raise ArtifactError(f"{where}: expected an IndexIDMap2, found {type(index).__name__}")
    return faiss.downcast_index(index.index)


class FlatIndex(FaissIndex):
    """Exact maximum inner product search (``IndexIDMap2(IndexFlatIP)``); the reference for recall."""

    kind = "flat"
    params_class = FlatParams


class IVFFlatIndex(FaissIndex):
    """Inverted file over k-means lists, full vectors in the lists (approximate, exact scores)."""

    kind = "ivf_flat"
    params_class = IVFFlatParams
    search_param_names = ("nprobe",)

    @classmethod
    def _min_train(cls, params: Any) -> int:
        return 1

    @classmethod
    def _build(cls, vectors: np.ndarray, ids: np.ndarray, params: Any) -> FaissIndex:
        n, dim = vectors.shape
        if n < cls._min_train(params):
            warnings.warn(f"{n} vectors are too few to train a '{cls.kind}' index (needs "
                          f"{cls._min_train(params)}); building the exact 'flat' index instead",
                          stacklevel=4)
            return FlatIndex._build(vectors, ids, FlatParams())
        params = cls._resolve(params, n, dim)
        index = cls._new_ivf(faiss.IndexFlatIP(dim), dim, params, n)
        # faiss sets spherical k-means for the inner product (IndexIVF constructor): centroids
        # on the unit sphere, so large-norm centroids do not swallow every vector.
        index.train(vectors)
        index.add_with_ids(vectors, ids)
        return cls(index, params, ids)

    @classmethod
    def _resolve(cls, params: Any, n: int, dim: int) -> Any:
        """Replace ``None`` defaults with the values for ``n`` training vectors of dimension ``dim``."""
        nlist = params.nlist or default_nlist(n)
        if nlist > n:
            warnings.warn(f"nlist={nlist} exceeds the {n} training vectors; using nlist={n}", stacklevel=5)
            nlist = n
        return dataclasses.replace(params, nlist=nlist, nprobe=min(params.nprobe or default_nprobe(nlist), nlist))

    def _resolve_search(self, params: Any) -> Any:
        nprobe = params.nprobe or default_nprobe(params.nlist)
        return dataclasses.replace(params, nprobe=min(nprobe, params.nlist))

    @classmethod
    def _new_ivf(cls, quantizer: faiss.Index, dim: int, params: Any, n: int) -> faiss.IndexIVF:
        return faiss.IndexIVFFlat(quantizer, dim, params.nlist, faiss.METRIC_INNER_PRODUCT)

    def _configure(self) -> None:
        self._index.nprobe = self.params.nprobe

    @classmethod
    def _restore(cls, index: faiss.Index, params: Any, arrays: dict[str, np.ndarray],
                 meta: dict[str, Any], where: str) -> FaissIndex:
        if type(index) is not cls._faiss_type() or not index.is_trained:
            raise ArtifactError(f"{where}: expected a trained {cls._faiss_type().__name__}, "
                                f"found {type(index).__name__}")
        if index.nlist != params.nlist:
            raise ArtifactError(f"{where}: index has nlist={index.nlist}, manifest says {params.nlist}")
        return cls(index, params, _ivf_ids(index))

    @staticmethod
    def _faiss_type() -> type:
        return faiss.IndexIVFFlat


def _ivf_ids(index: faiss.IndexIVF) -> np.ndarray:
    """All ids stored in an IVF's inverted lists (one pass over the lists, not the items)."""
    invlists = index.invlists
    chunks = [faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
              for lst in range(index.nlist) if invlists.list_size(lst)]
    return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)


class IVFPQIndex(IVFFlatIndex):
    """IVF with product-quantised residuals: compact (``m`` bytes/vector) and approximate scores."""

    kind = "ivf_pq"
    params_class = IVFPQParams

    @classmethod
    def _min_train(cls, params: Any) -> int:
        return 2 ** params.nbits  # each PQ codebook is k-means with 2**nbits centroids

    @classmethod
    def _resolve(cls, params: Any, n: int, dim: int) -> Any:
        m = params.m or default_pq_m(dim)
        if dim % m:
            raise ConfigError(f"IVFPQParams.m={m} must divide the dimension {dim}")
        return super()._resolve(dataclasses.replace(params, m=m), n, dim)

    @classmethod
    def _new_ivf(cls, quantizer: faiss.Index, dim: int, params: Any, n: int) -> faiss.IndexIVF:
        index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.m, params.nbits,
                                 faiss.METRIC_INNER_PRODUCT)
        wanted = MIN_POINTS_PER_CENTROID * 2 ** params.nbits
        if n < wanted:
            # One Python warning instead of faiss printing one line per sub-quantiser to stderr.
            warnings.warn(f"IVF-PQ codebooks trained on {n} vectors; faiss recommends >= {wanted} "
                          f"({MIN_POINTS_PER_CENTROID} per centroid); recall may suffer", stacklevel=5)
            index.pq.cp.min_points_per_centroid = 1
        return index

    @classmethod
    def _restore(cls, index: faiss.Index, params: Any, arrays: dict[str, np.ndarray],
                 meta: dict[str, Any], where: str) -> FaissIndex:
        restored = super()._restore(index, params, arrays, meta, where)
        if (index.pq.M, index.pq.nbits) != (params.m, params.nbits):
            raise ArtifactError(f"{where}: index has m={index.pq.M}, nbits={index.pq.nbits}; "
                                f"manifest says m={params.m}, nbits={params.nbits}")
        return restored

    @staticmethod
    def _faiss_type() -> type:
        return faiss.IndexIVFPQ


class HNSWIndex(FaissIndex):
    """HNSW graph (``IndexIDMap2(IndexHNSWFlat)``); removal by tombstones, see the module docstring."""

    kind = "hnsw"
    params_class = HNSWParams
    removes_in_place = False
    search_param_names = ("ef_search",)

    def __init__(self, index: faiss.Index, params: Any, ids: np.ndarray,
                 live: np.ndarray | None = None):
        # faiss's internal position -> external id; a position whose item was removed is dead.
        self._id_map = np.asarray(ids, np.int64).copy()
        self._live = np.ones(len(self._id_map), bool) if live is None else live
        super().__init__(index, params, self._id_map[self._live])

    @classmethod
    def _build(cls, vectors: np.ndarray, ids: np.ndarray, params: Any) -> FaissIndex:
        graph = faiss.IndexHNSWFlat(vectors.shape[1], params.M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = params.ef_construction
        index = faiss.IndexIDMap2(graph)
        index.add_with_ids(vectors, ids)
        return cls(index, params, ids)

    def _graph(self) -> faiss.IndexHNSWFlat:
        return faiss.downcast_index(self._index.index)

    def _configure(self) -> None:
        hnsw = self._graph().hnsw
        hnsw.efSearch = self.params.ef_search
        hnsw.efConstruction = self.params.ef_construction  # used by later add()s

    @property
    def n_tombstones(self) -> int:
        """Removed (or replaced) items still held in the graph."""
        return int(len(self._live) - self._live.sum())

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        graph = self._graph()
        exhaustive = max(k, self.params.ef_search) >= len(self)
        # HNSW search params subclass the plain ones; a flat scan only reads ``sel``.
        search_params = faiss.SearchParameters() if exhaustive else faiss.SearchParametersHNSW()
        if not exhaustive:
            search_params.efSearch = self.params.ef_search
        bitmap = None
        if self.n_tombstones:
            # faiss reads bit i of the bitmap as (bitmap[i >> 3] >> (i & 7)) & 1: little bit order.
            bitmap = np.packbits(self._live, bitorder="little")
            search_params.sel = faiss.IDSelectorBitmap(len(self._live), faiss.swig_ptr(bitmap))
        # A beam as wide as the live set would visit every node anyway: scanning the stored
        # vectors is cheaper, exact and complete (the walk can miss nodes it cannot reach).
        target = faiss.downcast_index(graph.storage) if exhaustive else graph
        scores, positions = target.search(queries, k, params=search_params)
        del bitmap  # the selector points into it: keep it alive until the search is done
        ids = np.where(positions >= 0, self._id_map[np.maximum(positions, 0)], MISSING_ID)
        return scores, ids

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, ids)  # appended at positions ntotal..ntotal+n-1
        self._id_map = np.concatenate([self._id_map, ids])
        self._live = np.concatenate([self._live, np.ones(len(ids), bool)])

    def _remove(self, ids: np.ndarray) -> None:
        self._live &= ~np.isin(self._id_map, ids)

    def compact(self) -> None:
        """Rebuild the graph from the live vectors, dropping every tombstone (O(n log n))."""
        if not self.n_tombstones:
            return
        positions = np.flatnonzero(self._live)
        vectors = self._graph().reconstruct_n(0, self._graph().ntotal)[positions]
        rebuilt = type(self)._build(np.ascontiguousarray(vectors), self._id_map[positions], self.params)
        self._index, self._id_map, self._live = rebuilt._index, rebuilt._id_map, rebuilt._live
        self._configure()

    def _manifest(self) -> dict[str, Any]:
        return {**super()._manifest(), "tombstones": self.n_tombstones}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**super()._arrays(), "tombstones": np.flatnonzero(~self._live).astype(np.int64)}

    @classmethod
    def _restore(cls, index: faiss.Index, params: Any, arrays: dict[str, np.ndarray],
                 meta: dict[str, Any], where: str) -> FaissIndex:
        graph = _unwrap_idmap(index, where)
        if not isinstance(graph, faiss.IndexHNSWFlat):
            raise ArtifactError(f"{where}: expected an HNSW graph, found {type(graph).__name__}")
        id_map = faiss.vector_to_array(index.id_map).astype(np.int64)
        dead = arrays.get("tombstones", np.zeros(0, np.int64))
        if (dead.ndim != 1 or len(dead) != meta.get("tombstones")
                or (len(dead) and (dead.min() < 0 or dead.max() >= len(id_map)))):
            raise ArtifactError(f"{where}: tombstones do not match the manifest or the index")
        live = np.ones(len(id_map), bool)
        live[dead] = False
        if len(np.unique(id_map[live])) != int(live.sum()):
            raise ArtifactError(f"{where}: live ids are not unique")
        return cls(index, params, id_map, live)


INDEX_CLASSES: dict[str, type[FaissIndex]] = {
    cls.kind: cls for cls in (FlatIndex, IVFFlatIndex, IVFPQIndex, HNSWIndex)
}
INDEX_KINDS: tuple[str, ...] = tuple(INDEX_CLASSES)


def build_index(vectors: np.ndarray, ids: np.ndarray | None = None, *, kind: str = "flat",
                **params: Any) -> VectorIndex:
    """Build an inner-product index of ``kind`` over ``vectors``.

    Args:
        vectors: (n, d) finite float vectors (cast to float32). L2-normalise them
            first for cosine similarity.
        ids: (n,) unique non-negative int64 external ids; default ``arange(n)``.
        kind: ``"flat"``, ``"ivf_flat"``, ``"ivf_pq"`` or ``"hnsw"``.
        **params: the kind's parameters: :class:`IVFFlatParams`, :class:`IVFPQParams`,
            :class:`HNSWParams` (flat takes none).

    Returns:
        The built index.

    Raises:
        ConfigError: unknown kind or parameters.
        ValueError: bad vectors or ids.

    >>> index = build_index(np.eye(3), np.array([7, 8, 9]), kind="flat")
    >>> index.search(np.array([[1.0, 2.0, 0.5]]), k=4)[1].tolist()
    [[8, 7, 9, -1]]
    """
    cls = INDEX_CLASSES.get(kind)
    if cls is None:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {list(INDEX_CLASSES)}")
    return cls.build(vectors, ids, **params)


def load_index(reader: ArtifactReader, prefix: str) -> VectorIndex:
    """Restore an index of any kind saved under ``prefix`` (dispatches on its manifest)."""
    return FaissIndex.load(reader, prefix)
