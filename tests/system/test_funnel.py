"""The funnel end to end on data with a planted answer."""

import numpy as np
import pandas as pd
import pytest

from recfunnel.config import config_from_dict, default_config
from recfunnel.data.dataset import build_training_data
from recfunnel.pipeline.offline.evaluate import evaluate_funnel
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.pipeline.online.funnel import Funnel
from recfunnel.testing.synthetic import make_planted_data, planted_groups

SMALL_RANKER = {"kind": "lightgbm", "params": {"n_estimators": 40, "min_child_samples": 5,
                                               "early_stopping_rounds": 10}}


@pytest.fixture(scope="module")
def data():
    return make_planted_data(n_users_per_group=30, n_groups=3, items_per_group=20, seed=1)


@pytest.fixture(scope="module")
def funnel(data):
    cfg = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 40}, {"kind": "popular", "quota": 20}],
        "ranker": SMALL_RANKER, "reranker": {"kind": "mmr"},
        "retrieval_k": 50, "rank_k": 30, "history_length": 20,
    })
    return fit_funnel(data, cfg, progress=False)


def test_recommendations_follow_the_planted_groups_and_exclude_training_items(data, funnel):
    user_group, item_group = planted_groups(data)
    users = data.user_ids.ids[:60]
    recs = funnel.recommend(users, k=5)
    assert set(recs.columns) == {"user_id", "item_id", "rank", "score"}
    assert recs.groupby("user_id").size().eq(5).all()
    u = data.user_ids.index(recs["user_id"].to_numpy())
    i = data.item_ids.index(recs["item_id"].to_numpy())
    assert (user_group[u] == item_group[i]).mean() > 0.9
    seen = data.interactions.to_csr(binary=True)
    assert np.asarray(seen[u, i]).ravel().sum() == 0
    assert (recs.groupby("user_id")["rank"].apply(list) == [list(range(1, 6))] * recs["user_id"].nunique()).all()


def test_unknown_users_get_the_cold_start_fallback(funnel):
    recs = funnel.recommend(["nobody", "ghost"], k=7)
    assert recs.groupby("user_id").size().to_dict() == {"ghost": 7, "nobody": 7}


def test_save_load_gives_identical_recommendations(tmp_path, data, funnel):
    funnel.save(tmp_path / "model")
    loaded = Funnel.load(tmp_path / "model")
    users = list(data.user_ids.ids[::7]) + ["nobody"]
    pd.testing.assert_frame_equal(funnel.recommend(users, 10), loaded.recommend(users, 10))


def test_trace_reports_every_stage(data, funnel):
    out, traces = funnel.run(funnel.request(data.user_ids.ids[:4]), 5, trace=True)
    assert [t.stage for t in traces] == ["retrieval:itemcf", "retrieval:popular", "retrieval", "rank", "rerank"]
    assert (traces[-1].n_out == 5).all() and out.item_index.shape == (4, 5)


def test_ranking_learns_a_planted_user_item_match_that_retrieval_cannot_see():
    """Users come to prefer the item type named in their profile; popularity retrieval is blind to it."""
    rng = np.random.default_rng(0)
    n_users, n_items, t0 = 400, 100, 1_700_000_000
    rows = []
    for u in range(n_users):
        liked = np.arange(u % 2, n_items, 2)
        items = np.concatenate([rng.choice(n_items, 4, replace=False), rng.choice(liked, 6, replace=False)])
        items = pd.unique(items)
        rows += [(f"u{u}", f"i{it}", t0 + j * 3600 + u) for j, it in enumerate(items)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    position = df.groupby("user_id").cumcount(ascending=False)
    train, test = df[position >= 2], df[position < 2]
    users = pd.DataFrame({"likes": [f"t{u % 2}" for u in range(n_users)]},
                         index=pd.Index([f"u{u}" for u in range(n_users)], name="user_id"))
    items = pd.DataFrame({"type": [f"t{i % 2}" for i in range(n_items)]},
                         index=pd.Index([f"i{i}" for i in range(n_items)], name="item_id"))
    data = build_training_data(train, users, items)
    base = {"channels": [{"kind": "popular", "quota": 100}], "retrieval_k": 100, "rank_k": 50}
    plain = fit_funnel(data, config_from_dict(base), progress=False)
    ranked = fit_funnel(data, config_from_dict({**base, "ranker": SMALL_RANKER}), progress=False)
    m_plain = evaluate_funnel(plain, test, (10,))["metrics"]
    m_ranked = evaluate_funnel(ranked, test, (10,))["metrics"]
    assert m_ranked["ndcg@10"] > 1.3 * m_plain["ndcg@10"], (m_plain["ndcg@10"], m_ranked["ndcg@10"])
    recs = ranked.recommend([f"u{u}" for u in range(20)], 10)
    match = recs["user_id"].str[1:].astype(int) % 2 == recs["item_id"].str[1:].astype(int) % 2
    assert match.mean() > 0.9


def test_default_config_fits_on_tiny_data(data):
    funnel = fit_funnel(data, default_config(), progress=False)
    assert len(funnel.recommend(data.user_ids.ids[:3], 10)) == 30
