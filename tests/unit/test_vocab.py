from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recfunnel.features.specs import FeatureSpec, infer_feature_specs, is_free_text_column
from recfunnel.features.vocab import PAD, UNKNOWN, Vocabulary


def test_reserved_indices_and_sorted_values():
    vocab = Vocabulary().fit(["m", "f", "m", None, np.nan, ""])
    assert (PAD, UNKNOWN) == (0, 1)
    assert vocab.values_.tolist() == ["f", "m"] and vocab.counts_.tolist() == [1, 2]
    assert len(vocab) == 4
    out = vocab.transform(np.array(["f", "m", "x", None, np.nan, ""], dtype=object))
    assert out.dtype == np.int64 and out.tolist() == [2, 3, 1, 0, 0, 0]


def test_fit_on_training_only_unknown_at_test_time():
    vocab = Vocabulary().fit(pd.Series(["a", "b"]))
    assert vocab.transform(pd.Series(["c", "a"])).tolist() == [UNKNOWN, 2]


def test_min_count():
    vocab = Vocabulary(min_count=2).fit(["a", "a", "b"])
    assert vocab.transform(["a", "b"]).tolist() == [2, UNKNOWN]
    with pytest.raises(ValueError):
        Vocabulary(min_count=0).fit(["a"])


def test_multi_value_fit_and_transform_lists():
    values = [("Drama", "Comedy"), (), ("Action", "Drama", "War"), None, "Comedy"]
    vocab = Vocabulary().fit(values)
    assert vocab.values_.tolist() == ["Action", "Comedy", "Drama", "War"]
    out = vocab.transform_lists(values + [("Horror",)], max_len=2)
    assert out.dtype == np.int64 and out.shape == (6, 2)
    assert out.tolist() == [[4, 3], [0, 0], [2, 4], [0, 0], [3, 0], [1, 0]]
    assert vocab.transform_lists(values, max_len=0).shape == (5, 0)
    with pytest.raises(TypeError):
        vocab.transform(values)


def test_save_without_pickle(tmp_path):
    vocab = Vocabulary(min_count=1).fit(["b", "a", "ç"])
    np.savez(tmp_path / "v.npz", **vocab.to_arrays())
    with np.load(tmp_path / "v.npz", allow_pickle=False) as arrays:
        loaded = Vocabulary.from_arrays(arrays)
    assert loaded.transform(["ç", "a", "?"]).tolist() == vocab.transform(["ç", "a", "?"]).tolist()
    assert all(a.dtype != object for a in vocab.to_arrays().values())
    with pytest.raises(ValueError):
        Vocabulary.from_arrays({"values": np.array(["b", "a"]), "counts": np.ones(2), "min_count": np.array(1)})


def test_empty_and_unfitted():
    vocab = Vocabulary().fit([None])
    assert len(vocab) == 2 and vocab.transform(["a"]).tolist() == [UNKNOWN]
    with pytest.raises(RuntimeError):
        Vocabulary().transform(["a"])


def test_feature_spec_is_frozen_and_validated():
    spec = FeatureSpec("age", "dense", "user")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        FeatureSpec("x", "embedding", "user")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FeatureSpec("x", "dense", "somewhere")  # type: ignore[arg-type]


def test_infer_feature_specs_follows_column_kinds():
    items = pd.DataFrame(
        {
            "price": [1.0, np.nan, 3.0],
            "in_stock": [True, False, True],
            "brand": ["x", "y", None],
            "genres": [("a", "b", "c"), (), ("a",)],
            "title": ["Toy Story", "Heat", "Up"],
            "empty": [None, None, None],
        },
        index=pd.Index(["1", "2", "3"], name="item_id"),
    )
    specs = infer_feature_specs(items, "item")
    assert specs == (
        FeatureSpec("price", "dense", "item"),
        FeatureSpec("in_stock", "dense", "item"),
        FeatureSpec("brand", "sparse", "item", vocab_size=4),
        FeatureSpec("genres", "sequence", "item", vocab_size=5, max_len=3),
    )


def test_infer_feature_specs_skips_keys_of_interaction_tables():
    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1], "label": [1], "device": ["ios"]})
    assert [s.name for s in infer_feature_specs(inter, "interaction")] == ["device"]


def test_free_text_rule():
    assert is_free_text_column("movie_title", pd.Series(["a"]))
    assert is_free_text_column("imdb_url", pd.Series(["a"]))
    unique_sentences = pd.Series([f"a long review number {k}" for k in range(30)])
    assert is_free_text_column("blurb", unique_sentences)
    assert not is_free_text_column("city", pd.Series([f"city{k % 5}" for k in range(30)]))
