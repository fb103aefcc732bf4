"""Funnels whose ranker is XGBoost or GBDT+LR, selected by the config's ``kind``."""

import numpy as np
import pandas as pd
import pytest

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.pipeline.online.funnel import Funnel
from recfunnel.stages.rank.gbdt_lr import GBDTLRRanker
from recfunnel.stages.rank.xgboost import XGBoostRanker
from recfunnel.testing.synthetic import make_planted_data, planted_groups

RANKERS = {
    "xgboost": ({"n_estimators": 30, "max_depth": 3, "early_stopping_rounds": 10, "nthread": 1}, XGBoostRanker),
    "gbdt_lr": ({"n_estimators": 15, "num_leaves": 8, "min_child_samples": 5, "num_threads": 1}, GBDTLRRanker),
}


@pytest.fixture(scope="module")
def data():
    return make_planted_data(n_users_per_group=30, n_groups=3, items_per_group=20, seed=1)


@pytest.mark.parametrize("kind", list(RANKERS))
def test_a_tree_ranker_chosen_by_kind_fits_recommends_and_round_trips(kind, data, tmp_path):
    params, cls = RANKERS[kind]
    cfg = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 40}, {"kind": "popular", "quota": 20}],
        "ranker": {"kind": kind, "params": params},
        "retrieval_k": 50, "rank_k": 30, "history_length": 20,
    })
    funnel = fit_funnel(data, cfg, progress=False)
    assert isinstance(funnel.ranker, cls)
    users = data.user_ids.ids[:60]
    recs = funnel.recommend(users, k=5)
    assert recs.groupby("user_id").size().eq(5).all()
    user_group, item_group = planted_groups(data)
    u = data.user_ids.index(recs["user_id"].to_numpy())
    i = data.item_ids.index(recs["item_id"].to_numpy())
    assert (user_group[u] == item_group[i]).mean() > 0.9
    seen = data.interactions.to_csr(binary=True)
    assert np.asarray(seen[u, i]).ravel().sum() == 0
    funnel.save(tmp_path / "model")
    loaded = Funnel.load(tmp_path / "model")
    some = list(data.user_ids.ids[::7]) + ["nobody"]
    pd.testing.assert_frame_equal(funnel.recommend(some, 10), loaded.recommend(some, 10))
