"""ANN indexes: one search contract for every kind, recall against exact search, edits, persistence."""

from __future__ import annotations

import json
import warnings

import faiss
import numpy as np
import pytest

from recfunnel.errors import ArtifactError, ConfigError
from recfunnel.index import (
    INDEX_KINDS,
    FlatIndex,
    HNSWIndex,
    IVFFlatIndex,
    VectorIndex,
    build_index,
    load_index,
    recall_at_k,
)
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter, sha256_file

DIM = 32
N_ITEMS = 5_000
N_QUERIES = 200
K = 10

# Observed recall@10 on this data (seeds 0-3, 100 clusters, noise 1.0, built on 80% + 20% added):
# ivf_flat 0.971-0.981 (default nprobe = nlist/8), hnsw 1.000, ivf_pq 0.679-0.710 (m=8 bytes/vector).
# Bounds sit just below.
MIN_RECALL = {"flat": 1.0, "ivf_flat": 0.95, "hnsw": 0.98, "ivf_pq": 0.65}


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    # The test machine has 2 busy cores; OpenMP spinning on both makes k-means ~4x slower.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, dim: int, rng: np.random.Generator, n_clusters: int = 100,
              noise: float = 1.0) -> np.ndarray:
    """(n, dim) float32 Gaussian mixture: unit-variance centres plus isotropic noise."""
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    return (centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim))).astype(np.float32)


def quiet_build(vectors, ids=None, *, kind, **params) -> VectorIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # IVF-PQ on few vectors warns about codebook training
        return build_index(vectors, ids, kind=kind, **params)


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    x = clustered(N_ITEMS + N_QUERIES, DIM, rng)
    ids = rng.choice(10 * N_ITEMS, N_ITEMS, replace=False).astype(np.int64)
    return x[:N_ITEMS], ids, x[N_ITEMS:]


@pytest.fixture(scope="module")
def built(corpus):
    """Each kind built (trained) on 80% of the items, the other 20% added afterwards."""
    vectors, ids, _ = corpus
    split = 4 * N_ITEMS // 5
    indexes = {kind: quiet_build(vectors[:split], ids[:split], kind=kind) for kind in INDEX_KINDS}
    for index in indexes.values():
        index.add(ids[split:], vectors[split:])
    return indexes


@pytest.fixture(scope="module")
def exact(corpus):
    return build_index(corpus[0], corpus[1]).search(corpus[2], K)


def small(kind: str, n: int = 400, dim: int = 8, seed: int = 1) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """A small index that scans everything (nprobe clipped to nlist) so edits are checked exactly."""
    rng = np.random.default_rng(seed)
    vectors = clustered(n, dim, rng, n_clusters=10)
    ids = np.arange(n, dtype=np.int64) * 3 + 7
    params = {"nprobe": 10_000} if kind.startswith("ivf") else {}
    return quiet_build(vectors, ids, kind=kind, **params), vectors, ids


# --------------------------------------------------------------------------- recall


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_recall_at_10_against_exact_search(kind, corpus, built, exact):
    """Recall of an index built on 80% of the items and grown by add() to all of them."""
    scores, found = built[kind].search(corpus[2], K)
    recall = recall_at_k(found, exact[1])
    assert recall >= MIN_RECALL[kind], f"{kind}: recall@10 = {recall:.3f}"
    assert built[kind].kind == kind and len(built[kind]) == N_ITEMS


def test_flat_scores_are_exact_inner_products(corpus, exact):
    vectors, ids, queries = corpus
    scores, found = exact
    order = np.argsort(ids)
    rows = order[np.searchsorted(ids[order], found)]
    expected = np.einsum("qd,qkd->qk", queries, vectors[rows])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    brute = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :K]
    np.testing.assert_allclose(scores, brute, rtol=1e-4, atol=1e-4)


def test_ivf_recall_grows_with_nprobe(corpus, exact):
    vectors, ids, queries = corpus
    index = build_index(vectors, ids, kind="ivf_flat", nprobe=1)
    recalls = []
    for nprobe in (1, 4, 64):
        index.set_search_params(nprobe=nprobe)  # no rebuild
        recalls.append(recall_at_k(index.search(queries, K)[1], exact[1]))
    assert recalls[0] < recalls[1] < recalls[2]
    assert recalls[2] >= 0.999
    index.set_search_params(nprobe=10**6)
    assert index.params.nprobe == index.params.nlist
    with pytest.raises(ConfigError, match="cannot change after the build"):
        index.set_search_params(nlist=4)


def test_hnsw_ef_search_changes_without_rebuild(tmp_path):
    index, vectors, _ = small("hnsw")
    index.set_search_params(ef_search=16)
    assert index.params.ef_search == 16
    loaded = load_index(save(index, tmp_path / "m"), "retrieval/")
    assert loaded.params.ef_search == 16
    with pytest.raises(ConfigError, match="ef_search must be"):
        index.set_search_params(ef_search=0)
    with pytest.raises(ConfigError, match="cannot change"):
        index.set_search_params(M=8)


# --------------------------------------------------------------------------- shapes and padding


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_shapes_order_and_padding(kind):
    index, vectors, ids = small(kind)
    scores, found = index.search(vectors[:5], 3)
    assert scores.shape == found.shape == (5, 3)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert np.isin(found, ids).all()

    k = len(ids) + 25
    scores, found = index.search(vectors[:3], k)
    assert scores.shape == (3, k)
    assert (found[:, len(ids):] == -1).all() and np.isneginf(scores[:, len(ids):]).all()
    for row in found:  # every item exactly once, then padding
        assert np.array_equal(np.sort(row[: len(ids)]), ids)
    assert np.isfinite(scores[:, : len(ids)]).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_empty_index_returns_padding(kind):
    index = build_index(np.zeros((0, 4), np.float32), kind=kind)
    assert len(index) == 0 and index.dim == 4
    scores, found = index.search(np.ones((2, 4)), 3)
    assert (found == -1).all() and np.isneginf(scores).all()


def test_no_queries_gives_empty_result():
    index, _, _ = small("flat")
    scores, found = index.search(np.zeros((0, 8)), 5)
    assert scores.shape == found.shape == (0, 5)


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
def test_too_few_vectors_to_train_falls_back_to_flat(kind):
    vectors = np.random.default_rng(0).standard_normal((0 if kind == "ivf_flat" else 100, 8))
    with pytest.warns(UserWarning, match="too few"):
        index = build_index(vectors, kind=kind)
    assert isinstance(index, FlatIndex) and len(index) == len(vectors)


def test_nlist_is_clipped_to_the_training_set():
    vectors = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.warns(UserWarning, match="nlist"):
        index = build_index(vectors, kind="ivf_flat", nlist=50, nprobe=100)
    assert index.params.nlist == 20 and index.params.nprobe == 20
    assert (index.search(vectors, 20)[1] >= 0).all()


# --------------------------------------------------------------------------- add / remove / update


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_removed_ids_are_never_returned(kind):
    index, vectors, ids = small(kind)
    gone = ids[::3]
    assert index.remove(np.concatenate([gone, gone[:5], [10**9]])) == len(gone)  # repeats/unknown ignored
    assert index.remove(gone) == 0
    assert len(index) == len(ids) - len(gone)
    scores, found = index.search(vectors[::3][:20], len(ids))
    assert not np.isin(found, gone).any()
    kept = np.setdiff1d(ids, gone)
    for row in found:
        assert np.array_equal(np.sort(row[row >= 0]), kept)
    assert np.array_equal(index.ids, kept)


def score_of(item: int, scores: np.ndarray, found: np.ndarray) -> float:
    assert (found == item).sum() == 1, f"{item} returned {(found == item).sum()} times"
    return float(scores[found == item][0])


# Edited vectors are copies of existing ones, so even IVF-PQ (whose codebooks only know the
# training distribution) must give the copy exactly the original's code and score.


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_added_items_are_found(kind):
    index, vectors, ids = small(kind)
    index.add(np.array([5_000, 5_001]), vectors[[30, 31]])
    assert len(index) == len(ids) + 2
    scores, found = index.search(vectors[[30, 31]], 10)
    assert score_of(5_000, scores[:1], found[:1]) == pytest.approx(score_of(ids[30], scores[:1], found[:1]))
    assert score_of(5_001, scores[1:], found[1:]) == pytest.approx(score_of(ids[31], scores[1:], found[1:]))
    with pytest.raises(ValueError, match="already in the index"):
        index.add(np.array([5_000]), vectors[:1])


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_update_moves_the_vector(kind):
    index, vectors, ids = small(kind)
    target = 17
    # move item 17 onto the vector least like its own: it must leave its old place
    new_place = int(np.argmin(vectors @ vectors[target]))
    index.update(ids[[target]], vectors[[new_place]])
    assert len(index) == len(ids)
    scores, found = index.search(vectors[[new_place]], 10)
    assert score_of(ids[target], scores, found) == pytest.approx(score_of(ids[new_place], scores, found))
    _, old_place = index.search(vectors[[target]], 10)
    assert ids[target] not in old_place
    _, everything = index.search(vectors[[new_place]], len(ids) + 5)
    assert (everything == ids[target]).sum() == 1  # replaced, not duplicated
    # update of an unknown id inserts it
    index.update(np.array([99_999]), vectors[:1])
    assert len(index) == len(ids) + 1


def test_hnsw_tombstones_keep_recall_and_compact(corpus):
    vectors, ids, queries = corpus
    n = 1_500
    index = quiet_build(vectors[:n], ids[:n], kind="hnsw")
    assert isinstance(index, HNSWIndex) and not index.removes_in_place
    gone = ids[:n:2]
    index.remove(gone)
    assert index.n_tombstones == len(gone) and len(index) == n - len(gone)
    kept = np.flatnonzero(~np.isin(ids[:n], gone))
    reference = build_index(vectors[kept], ids[kept]).search(queries, K)
    scores, found = index.search(queries, K)
    assert not np.isin(found, gone).any()
    assert (found >= 0).all()  # the selector skips dead nodes during the walk: rows stay full
    assert recall_at_k(found, reference[1]) >= 0.98
    index.compact()
    assert index.n_tombstones == 0 and len(index) == n - len(gone)
    assert recall_at_k(index.search(queries, K)[1], reference[1]) >= 0.98


def test_remove_everything_gives_padding():
    index, vectors, ids = small("hnsw")
    assert index.remove(ids) == len(ids)
    scores, found = index.search(vectors[:2], 4)
    assert (found == -1).all() and np.isneginf(scores).all()
    index.add(ids[:1], vectors[:1])
    assert index.search(vectors[:1], 2)[1].tolist() == [[ids[0], -1]]


def test_edits_do_not_change_faiss_threads():
    faiss.omp_set_num_threads(1)
    index, vectors, ids = small("ivf_flat")
    index.update(ids[:3], vectors[3:6])
    index.search(vectors, 5)
    assert faiss.omp_get_max_threads() == 1


# --------------------------------------------------------------------------- persistence


def save(index: VectorIndex, path, prefix: str = "retrieval/") -> ArtifactReader:
    with ArtifactWriter(path, kind="test") as writer:
        index.save(writer, prefix)
    return ArtifactReader(path)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_save_load_round_trip_is_identical(kind, tmp_path):
    index, vectors, ids = small(kind)
    index.remove(ids[:30])
    index.update(ids[40:45], vectors[:5] * 2.0)
    loaded = load_index(save(index, tmp_path / "m"), "retrieval/")
    assert type(loaded) is type(index)
    assert (loaded.kind, loaded.dim, len(loaded), loaded.params) == (index.kind, index.dim, len(index), index.params)
    assert np.array_equal(loaded.ids, index.ids)
    for k in (1, 10, len(ids) + 3):
        expected, got = index.search(vectors, k), loaded.search(vectors, k)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    # the loaded index keeps working
    loaded.remove(ids[50:52])
    assert not np.isin(loaded.search(vectors[50:52], 3)[1], ids[50:52]).any()


def test_manifest_records_the_index(tmp_path):
    index, _, ids = small("hnsw")
    index.remove(ids[:4])
    reader = save(index, tmp_path / "m")
    meta = reader.read_json("retrieval/index.json")
    assert meta["kind"] == "hnsw" and meta["dim"] == 8 and meta["count"] == len(ids) - 4
    assert meta["metric"] == "inner_product" and meta["tombstones"] == 4
    assert meta["params"] == {"M": 32, "ef_construction": 200, "ef_search": 128}
    assert set(reader.files) == {"retrieval/index.npz", "retrieval/index.json"}


def test_tampered_index_file_is_refused(tmp_path):
    index, _, _ = small("ivf_flat")
    save(index, tmp_path / "m")
    path = tmp_path / "m" / "retrieval" / "index.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_index(ArtifactReader(tmp_path / "m"), "retrieval/")


def _forge_manifest(path, **changes) -> ArtifactReader:
    """Edit the index manifest and re-sign it, as a consistent but wrong artifact would be."""
    meta_path = path / "retrieval" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["retrieval/index.json"] = sha256_file(meta_path)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return ArtifactReader(path)


@pytest.mark.parametrize("changes, message", [
    ({"count": 3}, "manifest says 3"),
    ({"dim": 9}, "dimension"),
    ({"kind": "flat", "params": {}}, "expected a flat index"),
    ({"kind": "annoy"}, "unknown index kind"),
    ({"params": {"M": 32, "depth": 2}}, "invalid params"),
    ({"tombstones": 2}, "tombstones"),
])
def test_manifest_mismatch_is_refused(tmp_path, changes, message):
    index, _, _ = small("hnsw")
    save(index, tmp_path / "m")
    with pytest.raises(ArtifactError, match=message):
        load_index(_forge_manifest(tmp_path / "m", **changes), "retrieval/")


def test_loading_as_the_wrong_class_is_refused(tmp_path):
    index, _, _ = small("hnsw")
    reader = save(index, tmp_path / "m")
    with pytest.raises(ArtifactError, match="expected 'ivf_flat'"):
        IVFFlatIndex.load(reader, "retrieval/")
    assert isinstance(HNSWIndex.load(reader, "retrieval/"), HNSWIndex)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("queries, k, message", [
    (np.ones((2, 7)), 3, "dimension 7"),
    (np.ones(8), 3, "2-D"),
    (np.full((1, 8), np.nan), 3, "NaN"),
    (np.full((1, 8), 1e300), 3, "infinite"),
    (np.ones((1, 8)), 0, "k must be"),
    (np.ones((1, 8)), 2.0, "k must be"),
    (np.ones((1, 8)), True, "k must be"),
])
def test_bad_queries_raise_value_error(queries, k, message):
    index, _, _ = small("flat")
    with pytest.raises(ValueError, match=message):
        index.search(queries, k)


@pytest.mark.parametrize("ids, vectors, message", [
    (np.array([1, 1]), np.ones((2, 8)), "duplicates"),
    (np.array([-3]), np.ones((1, 8)), "non-negative"),
    (np.array([1.5]), np.ones((1, 8)), "integers"),
    (np.array([1, 2]), np.ones((1, 8)), "length 1"),
    (np.array([5000]), np.ones((1, 3)), "dimension 3"),
    (np.array([5000]), np.array([[np.inf] * 8]), "infinite"),
])
def test_bad_edits_raise_value_error_and_change_nothing(ids, vectors, message):
    index, _, _ = small("flat")
    before = index.ids
    with pytest.raises(ValueError, match=message):
        index.add(ids, vectors)
    with pytest.raises(ValueError, match=message):
        index.update(ids, vectors)
    assert np.array_equal(index.ids, before)


@pytest.mark.parametrize("kind, params, message", [
    ("annoy", {}, "unknown index kind"),
    ("hnsw", {"nprobe": 3}, "unknown parameters"),
    ("hnsw", {"M": 1}, "M must be"),
    ("ivf_flat", {"nlist": 0}, "nlist must be"),
    ("ivf_pq", {"m": 5}, "must divide"),
    ("ivf_pq", {"nbits": 17}, "nbits"),
])
def test_bad_kind_or_params_raise_config_error(kind, params, message):
    vectors = np.random.default_rng(0).standard_normal((300, 8))
    with pytest.raises(ConfigError, match=message):
        quiet_build(vectors, kind=kind, **params)


def test_recall_at_k_counts_only_expected_ids():
    assert recall_at_k(np.array([[3, 2, 1]]), np.array([[1, 2, 3]])) == 1.0
    assert recall_at_k(np.array([[-1, -1]]), np.array([[-1, -1]])) == 1.0
    assert recall_at_k(np.array([[4, -1]]), np.array([[5, 4]])) == 0.5
