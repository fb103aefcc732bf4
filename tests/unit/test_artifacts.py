import json
import pickle

import numpy as np
import pytest

from recfunnel.errors import ArtifactError
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter, atomic_write_text


def _write(path):
    with ArtifactWriter(path, kind="test", metadata={"v": 1}) as w:
        w.write_arrays("a.npz", {"x": np.arange(4), "names": np.array(["a", "b"])})
        w.write_json("sub/meta.json", {"k": 2})
    return path


def test_round_trip_and_manifest(tmp_path):
    r = ArtifactReader(_write(tmp_path / "m"), kind="test")
    assert r.read_arrays("a.npz")["x"].tolist() == [0, 1, 2, 3]
    assert r.read_json("sub/meta.json") == {"k": 2}
    assert r.metadata == {"v": 1}


def test_tampered_file_is_refused(tmp_path):
    path = _write(tmp_path / "m")
    (path / "sub" / "meta.json").write_text('{"k": 3}')
    with pytest.raises(ArtifactError, match="checksum"):
        ArtifactReader(path).read_json("sub/meta.json")


def test_pickle_payload_is_refused_and_never_run(tmp_path):
    path = _write(tmp_path / "m")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    # an attacker replaces the arrays with an object array and fixes the manifest checksum
    with open(path / "a.npz", "wb") as f:
        np.savez(f, x=np.array([Payload()], dtype=object))
    manifest = json.loads((path / "manifest.json").read_text())
    from recfunnel.storage.artifacts import sha256_file

    manifest["files"]["a.npz"] = sha256_file(path / "a.npz")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="pickle"):
        ArtifactReader(path).read_arrays("a.npz")
    assert not marker.exists()
    assert pickle  # the payload above is what pickle would have run


@pytest.mark.parametrize("name", ["../evil.json", "/etc/passwd", "manifest.json"])
def test_paths_outside_the_directory_are_refused(tmp_path, name):
    path = _write(tmp_path / "m")
    with pytest.raises(ArtifactError):
        ArtifactReader(path).read_json(name)
    with pytest.raises(ArtifactError):
        with ArtifactWriter(tmp_path / "n", kind="test") as w:
            w.write_json(name, {})


def test_symlink_escape_is_refused(tmp_path):
    path = _write(tmp_path / "m")
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (path / "sub" / "meta.json").unlink()
    (path / "sub" / "meta.json").symlink_to(secret)
    with pytest.raises(ArtifactError):
        ArtifactReader(path).read_json("sub/meta.json")


def test_failed_write_leaves_old_model_intact(tmp_path):
    path = _write(tmp_path / "m")
    with pytest.raises(RuntimeError):
        with ArtifactWriter(path, kind="test") as w:
            w.write_json("other.json", {})
            raise RuntimeError("crash mid-write")
    assert ArtifactReader(path).read_json("sub/meta.json") == {"k": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "x.txt", "hello")
    assert (tmp_path / "x.txt").read_text() == "hello"
    assert len(list(tmp_path.iterdir())) == 1


def test_not_a_model_dir(tmp_path):
    with pytest.raises(ArtifactError, match="not a recfunnel model"):
        ArtifactReader(tmp_path)


def test_an_existing_folder_that_is_not_a_model_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ArtifactError, match="not a model directory"):
        ArtifactWriter(tmp_path, kind="test")
    assert (tmp_path / "notes.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty)  # an empty folder is fine
    _write(empty)  # and so is an earlier model
    assert ArtifactReader(empty).read_json("sub/meta.json") == {"k": 2}
