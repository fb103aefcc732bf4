import numpy as np
import pandas as pd
import torch

from recfunnel.data.dataset import build_training_data
from recfunnel.features.ranking import RankingFeatureBuilder, RankingFeatureConfig
from recfunnel.features.tensors import TensorEncoder, TensorEncoderConfig
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.types import Candidates


def _data():
    rows = [("u0", "i0", 10), ("u0", "i1", 20), ("u1", "i2", 15), ("u0", "i3", 30), ("u1", "i0", 40)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    # eight items, three genres: few enough values per item to be categories rather than ids
    genres = [("a", "b"), ("b",), ("c",), (), ("a",), ("b",), ("c",), ("a",)]
    years = [1990.0, 2000.0, np.nan, 1995.0, 1991.0, 1992.0, 1993.0, 1994.0]
    items = pd.DataFrame({"genre": genres, "year": years}, index=pd.Index([f"i{i}" for i in range(8)], name="item_id"))
    users = pd.DataFrame({"gender": ["F", "M"]}, index=pd.Index(["u0", "u1"], name="user_id"))
    return build_training_data(inter, users, items)


def _encode(encoder=None):
    data = _data()
    store = UserHistoryStore(data.interactions)
    request = store.request(np.array([0, 1, -1]), time=np.array([25, 45, 50]), history_length=3,
                            exclude_seen=False)
    cand = Candidates(np.array([[2, 3], [1, -1], [0, 99]]), np.zeros((3, 2), np.float32))
    builder = RankingFeatureBuilder(RankingFeatureConfig(), ()).fit(data)
    feats, rows, cols = builder.transform(request, cand)
    encoder = encoder or TensorEncoder(TensorEncoderConfig(max_sequence_length=4)).fit(data, feats)
    return encoder, encoder.transform(request, cand, feats, rows, cols), request, rows


def test_ids_sequences_and_ages_follow_the_request():
    encoder, batch, request, rows = _encode()
    schema = encoder.schema()
    names = [f.name for f in schema.sparse]
    assert names[:3] == ["user_id", "item_id", "item_category"]
    assert [s.name for s in schema.sequences] == ["hist_item_id", "hist_item_category"]
    # user u0 at t=25 saw i0 (t=10) and i1 (t=20), newest first; the unknown user has no history
    np.testing.assert_array_equal(batch.sequences["hist_item_id"][0].numpy(), [1 + 2, 0 + 2, 0, 0])
    np.testing.assert_array_equal(batch.sequence_age[0].numpy(), [5, 15, 0, 0])
    assert (batch.sequences["hist_item_id"][rows == 2] == 0).all()
    # unknown user and unknown item map to the "unknown" row 1
    assert batch.sparse[rows == 2][0, 0].item() == 1
    assert batch.sparse[-1, 1].item() == 1
    # the category sequence reads the first genre of each history item (i1 -> "b", i0 -> "a")
    cat = batch.sequences["hist_item_category"][0].numpy()
    assert cat[0] != cat[1] and cat[0] >= 2 and cat[1] >= 2
    assert torch.isfinite(batch.dense).all()
    assert "item_genre" in batch.bags and batch.bags["item_genre"].shape[1] == 2


def test_save_load_round_trip_gives_identical_tensors():
    encoder, batch, _, _ = _encode()
    import json

    meta = json.loads(json.dumps(encoder.meta(), sort_keys=True))  # as the artifact writer stores it
    restored = TensorEncoder.from_arrays(encoder.config, encoder.to_arrays(), meta)
    _, again, _, _ = _encode(restored)
    for a, b in ((batch.sparse, again.sparse), (batch.dense, again.dense), (batch.sequence_age, again.sequence_age)):
        assert torch.equal(a, b)
    for k in batch.sequences:
        assert torch.equal(batch.sequences[k], again.sequences[k])
    assert encoder.schema() == restored.schema()


def test_dense_buckets_are_equal_frequency_sparse_fields():
    data = _data()
    store = UserHistoryStore(data.interactions)
    request = store.request(np.array([0, 1, -1]), time=np.array([25, 45, 50]), history_length=3,
                            exclude_seen=False)
    cand = Candidates(np.array([[2, 3], [1, -1], [0, 5]]), np.zeros((3, 2), np.float32))
    feats, rows, cols = RankingFeatureBuilder(RankingFeatureConfig(), ()).fit(data).transform(request, cand)
    enc = TensorEncoder(TensorEncoderConfig(max_sequence_length=2, dense_buckets=4)).fit(data, feats)
    schema = enc.schema()
    batch = enc.transform(request, cand, feats, rows, cols)
    names = [f.name for f in schema.sparse]
    j = names.index("item_year_bucket")
    year = feats.dense["item_year"]
    ids = batch.sparse[:, j].numpy()
    assert ((ids == 0) == np.isnan(year)).all()  # missing values get id 0
    known = ~np.isnan(year)
    # buckets are ordered like the values
    order = np.argsort(year[known])
    assert (np.diff(ids[known][order]) >= 0).all()
    assert ids.max() < schema.sparse[j].vocab_size


def test_vocabulary_sizes_come_from_the_builder_tables_not_only_the_sampled_rows():
    data = _data()
    store = UserHistoryStore(data.interactions)
    # a request batch with user u0 only: u1's gender never appears among the rows
    request = store.request(np.array([0]), time=np.array([25]), history_length=2, exclude_seen=False)
    cand = Candidates(np.array([[2, 3]]), np.zeros((1, 2), np.float32))
    builder = RankingFeatureBuilder(RankingFeatureConfig(), ()).fit(data)
    feats, rows, cols = builder.transform(request, cand)
    sizes_rows = dict((f.name, f.vocab_size) for f in TensorEncoder().fit(data, feats).schema().sparse)
    sizes_full = dict((f.name, f.vocab_size) for f in TensorEncoder().fit(data, feats, builder).schema().sparse)
    assert sizes_full["user_gender"] == int(builder.user_sparse_["user_gender"].max()) + 1
    assert sizes_full["user_gender"] > sizes_rows["user_gender"]
