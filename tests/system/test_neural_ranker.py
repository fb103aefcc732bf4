"""Neural rankers inside the funnel: they learn what retrieval cannot see, and save/load exactly."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recfunnel.config import config_from_dict
from recfunnel.data.dataset import build_training_data
from recfunnel.errors import ArtifactError, ConfigError
from recfunnel.pipeline.offline.evaluate import evaluate_funnel
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.pipeline.online.funnel import Funnel
from recfunnel.stages.rank.neural import NeuralRanker
from recfunnel.storage.artifacts import ArtifactReader


def _planted():
    """Users come to prefer the item type named in their profile; popularity retrieval is blind to it."""
    rng = np.random.default_rng(0)
    n_users, n_items, t0 = 400, 100, 1_700_000_000
    rows = []
    for u in range(n_users):
        liked = np.arange(u % 2, n_items, 2)
        items = pd.unique(np.concatenate([rng.choice(n_items, 4, replace=False), rng.choice(liked, 6, replace=False)]))
        rows += [(f"u{u}", f"i{it}", t0 + j * 3600 + u) for j, it in enumerate(items)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    position = df.groupby("user_id").cumcount(ascending=False)
    train, test = df[position >= 2], df[position < 2]
    users = pd.DataFrame({"likes": [f"t{u % 2}" for u in range(n_users)]},
                         index=pd.Index([f"u{u}" for u in range(n_users)], name="user_id"))
    items = pd.DataFrame({"type": [f"t{i % 2}" for i in range(n_items)]},
                         index=pd.Index([f"i{i}" for i in range(n_items)], name="item_id"))
    return build_training_data(train, users, items), test


BASE = {"channels": [{"kind": "popular", "quota": 100}], "retrieval_k": 100, "rank_k": 50, "history_length": 20}


def _ranker(model: str) -> dict:
    return {"kind": "neural", "params": {
        "model": model, "model_params": {"embed_dim": 8, "hidden": [32]},
        "trainer": {"epochs": 6, "batch_size": 256, "learning_rate": 0.005, "patience": 2, "threads": 1},
        "encoder": {"max_sequence_length": 10}, "negatives_per_user": 40}}


@pytest.fixture(scope="module")
def planted():
    data, test = _planted()
    plain = fit_funnel(data, config_from_dict(BASE), progress=False)
    return data, test, evaluate_funnel(plain, test, (10,))["metrics"]["ndcg@10"]


@pytest.mark.parametrize("model", ["deepfm", "din", "dien"])
def test_neural_ranker_learns_the_planted_match_and_saves_exactly(tmp_path, planted, model):
    data, test, plain_ndcg = planted
    ranked = fit_funnel(data, config_from_dict({**BASE, "ranker": _ranker(model)}), progress=False)
    ndcg = evaluate_funnel(ranked, test, (10,))["metrics"]["ndcg@10"]
    assert ndcg > 1.3 * plain_ndcg, (plain_ndcg, ndcg)
    recs = ranked.recommend([f"u{u}" for u in range(20)], 10)
    match = recs["user_id"].str[1:].astype(int) % 2 == recs["item_id"].str[1:].astype(int) % 2
    assert match.mean() > 0.9
    # only models that read the behaviour sequence get one encoded (at training and at serving)
    assert bool(ranked.ranker.schema_.sequences) == (model in ("din", "dien"))
    ranked.save(tmp_path / "m")
    again = Funnel.load(tmp_path / "m")
    assert again.ranker.schema_ == ranked.ranker.schema_
    pd.testing.assert_frame_equal(again.recommend([f"u{u}" for u in range(20)], 10), recs)
    # weights that do not fit the configured model are refused with a clear error, not a torch traceback
    reader = ArtifactReader(tmp_path / "m")
    prefix = next(name for name in reader.files if name.endswith("weights.npz"))[:-len("weights.npz")]
    other = config_from_dict({**BASE, "ranker": _ranker(model)}).ranker.config
    other = dataclasses.replace(other, model_params={**other.model_params, "embed_dim": 4})
    with pytest.raises(ArtifactError, match="refit"):
        NeuralRanker.load(reader, prefix, other)


def test_unknown_model_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="known models"):
        config_from_dict({**BASE, "ranker": {"kind": "neural", "params": {"model": "nope"}}})
    with pytest.raises(ConfigError, match="no option"):
        config_from_dict({**BASE, "ranker": {"kind": "neural", "params": {"model": "deepfm",
                                                                           "model_params": {"depth": 3}}}})
