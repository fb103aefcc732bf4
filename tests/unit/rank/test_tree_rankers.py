"""Tree rankers (XGBoost, GBDT+LR, LightGBM) and the grid-search helper, on planted data.

The planted task: items have one of 4 types and each user interacts almost only
with items of one type. Candidates are the user's held-out items (positives)
among random unseen items; the retrieval score is noise and item popularity is
flat, so only a model that relates the candidate's type to the user's history
ranks well. Models are scored on users they never saw.
"""

import dataclasses
import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.tree import DecisionTreeClassifier

from recfunnel.config import make_spec
from recfunnel.data.dataset import build_training_data
from recfunnel.data.splits import user_temporal_holdout_mask
from recfunnel.errors import ConfigError, RecfunnelError
from recfunnel.evaluation.metrics import auc
from recfunnel.stages.rank.gbdt_lr import (
    GBDTLRRanker,
    GBDTLRRankerConfig,
    encode_leaves,
    leaf_offsets,
)
from recfunnel.stages.rank.lightgbm import LightGBMRanker, LightGBMRankerConfig
from recfunnel.stages.rank.samples import ranker_samples
from recfunnel.stages.rank.xgboost import XGBoostRanker, XGBoostRankerConfig
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.training.grid_search import grid_search, make_folds, ranker_config_with
from recfunnel.types import Candidates

N_TYPES = 4
N_CANDIDATES = 20


def _planted(n_users=240, n_items=80, per_user=10, seed=0):
    rng = np.random.default_rng(seed)
    item_type = np.arange(n_items) % N_TYPES
    rows = []
    for u in range(n_users):
        liked = np.flatnonzero(item_type == u % N_TYPES)
        other = np.flatnonzero(item_type != u % N_TYPES)
        n_other = rng.binomial(per_user, 0.05)
        items = np.concatenate([rng.choice(liked, per_user - n_other, replace=False),
                                rng.choice(other, n_other, replace=False)])
        rng.shuffle(items)
        rows += [(f"u{u:04d}", f"i{it:04d}", 1_700_000_000 + 3600 * j + u) for j, it in enumerate(items)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"type": [f"t{t}" for t in item_type]},
                         index=pd.Index([f"i{i:04d}" for i in range(n_items)], name="item_id"))
    data = build_training_data(events, items=items)
    inter = data.interactions
    held_out = user_temporal_holdout_mask(inter.user_index, inter.timestamp, 0.2)
    hist = data.restrict(~held_out)
    users = np.unique(inter.user_index[held_out])
    seen = hist.interactions.to_csr(binary=True)
    cand = np.full((len(users), N_CANDIDATES), -1, np.int64)
    labels = np.zeros(cand.shape, bool)
    for r, u in enumerate(users):  # a few hundred tiny users
        pos = inter.item_index[held_out & (inter.user_index == u)]
        unseen = np.setdiff1d(np.arange(data.n_items), np.concatenate([seen[u].indices, pos]))
        c = np.concatenate([pos, rng.choice(unseen, N_CANDIDATES - len(pos), replace=False)])
        order = rng.permutation(N_CANDIDATES)
        cand[r], labels[r] = c[order], np.isin(c, pos)[order]
    noise = rng.random(cand.shape).astype(np.float32)
    popularity = np.bincount(hist.interactions.item_index, minlength=data.n_items).astype(np.float32)
    store = UserHistoryStore(hist.interactions)

    def part(mask):
        request = store.request(users[mask], history_length=10)
        c = Candidates(cand[mask], noise[mask], {"random": noise[mask]})
        return request, c, labels[mask]

    train_mask = np.arange(len(users)) % 3 != 0
    return {"hist": hist, "train": part(train_mask), "test": part(~train_mask), "popularity": popularity}


@pytest.fixture(scope="module")
def planted():
    return _planted()


RANKERS = {
    "xgboost-binary": (XGBoostRanker, XGBoostRankerConfig(
        n_estimators=60, learning_rate=0.2, max_depth=3, early_stopping_rounds=10, validation_fraction=0.25,
        nthread=1)),
    "xgboost-ndcg": (XGBoostRanker, XGBoostRankerConfig(
        objective="rank:ndcg", n_estimators=60, learning_rate=0.2, max_depth=3, early_stopping_rounds=10,
        validation_fraction=0.25, nthread=1)),
    "xgboost-pairwise": (XGBoostRanker, XGBoostRankerConfig(
        objective="rank:pairwise", n_estimators=30, learning_rate=0.2, max_depth=3, early_stopping_rounds=0,
        nthread=1)),
    "gbdt_lr": (GBDTLRRanker, GBDTLRRankerConfig(
        n_estimators=20, num_leaves=8, min_child_samples=5, num_threads=1)),
    "lightgbm": (LightGBMRanker, LightGBMRankerConfig(
        n_estimators=60, min_child_samples=5, early_stopping_rounds=10, validation_fraction=0.25, num_threads=1)),
}
_fitted: dict = {}


def _fit(name, planted):
    if name not in _fitted:
        cls, config = RANKERS[name]
        _fitted[name] = cls(config).fit_candidates(planted["hist"], *planted["train"])
    return _fitted[name]


def _test_auc(scores, candidates, labels):
    valid = candidates.valid
    return auc(labels[valid], scores[valid])


@pytest.mark.parametrize("name", list(RANKERS))
def test_learns_the_planted_signal_on_unseen_users(name, planted):
    ranker = _fit(name, planted)
    request, candidates, labels = planted["test"]
    model_auc = _test_auc(ranker.score(request, candidates), candidates, labels)
    popularity = planted["popularity"][np.maximum(candidates.item_index, 0)]
    baseline = max(_test_auc(candidates.score, candidates, labels), _test_auc(popularity, candidates, labels))
    print(f"{name}: test AUC {model_auc:.3f}, best trivial baseline {baseline:.3f}")
    assert baseline < 0.6
    assert model_auc > 0.8 and model_auc > baseline + 0.25, (model_auc, baseline)


@pytest.mark.parametrize("name", list(RANKERS))
def test_save_load_gives_identical_scores_from_plain_files(name, planted, tmp_path):
    ranker = _fit(name, planted)
    with ArtifactWriter(tmp_path / "m", kind="test") as writer:
        ranker.save(writer, "rank/")
    reader = ArtifactReader(tmp_path / "m")
    assert all(f.endswith((".json", ".txt", ".npz")) for f in reader.files)
    for f in reader.files:
        if f.endswith(".json"):
            json.loads(reader.read_text(f))  # the XGBoost booster is JSON text too
    loaded = type(ranker).load(reader, "rank/", ranker.config)
    request, candidates, _ = planted["test"]
    np.testing.assert_array_equal(loaded.score(request, candidates), ranker.score(request, candidates))
    ranked = loaded.rank(request, candidates, 5)
    assert ranked.item_index.shape == (len(request), 5)


@pytest.mark.parametrize("name", ["xgboost-binary", "gbdt_lr"])
def test_same_seed_same_model(name, planted):
    cls, config = RANKERS[name]
    again = cls(config).fit_candidates(planted["hist"], *planted["train"])
    request, candidates, _ = planted["test"]
    np.testing.assert_array_equal(again.score(request, candidates), _fit(name, planted).score(request, candidates))


def test_xgboost_keeps_only_the_rounds_up_to_the_best_one(planted):
    ranker = _fit("xgboost-ndcg", planted)
    summary = ranker.train_summary_
    assert summary["validation_metric"] == "ndcg@10" and summary["validation_score"] > 0
    assert ranker.booster_.num_boosted_rounds() == summary["best_iteration"] + 1 <= 60
    assert _fit("xgboost-pairwise", planted).booster_.num_boosted_rounds() == 30  # no early stopping


def test_gbdt_lr_encodes_each_row_as_one_leaf_per_tree(planted):
    ranker = _fit("gbdt_lr", planted)
    samples = ranker_samples(ranker.config, planted["hist"], *planted["test"])
    leaves = ranker.booster_.predict(samples.x, pred_leaf=True)
    offsets = leaf_offsets(ranker.booster_)
    n_trees = ranker.booster_.num_trees()
    encoded = encode_leaves(leaves, offsets)
    assert encoded.shape == (len(samples.x), offsets[-1]) == (len(samples.x), len(ranker.lr_weights_))
    np.testing.assert_array_equal(np.diff(encoded.indptr), n_trees)
    np.testing.assert_array_equal(np.asarray(encoded.sum(axis=1)).ravel(), n_trees)
    assert set(encoded.data.tolist()) == {1.0}
    cols = encoded.indices.reshape(len(samples.x), n_trees)
    assert ((cols >= offsets[:-1]) & (cols < offsets[1:])).all()  # one column in each tree's block
    summary = ranker.train_summary_
    assert summary["tree_rows"] > 0 and summary["lr_rows"] > 0
    assert summary["tree_rows"] + summary["lr_rows"] <= summary["rows"]


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("xgboost", {"n_estimators": 0}, "xgboost: n_estimators must be >= 1, got 0"),
    ("xgboost", {"objective": "rank:map"}, "'rank:map' is not one of"),
    ("xgboost", {"subsample": 1.5}, "xgboost: subsample must be in (0, 1], got 1.5"),
    ("xgboost", {"nthread": -2}, "xgboost: nthread must be >= 0"),
    ("xgboost", {"validation_fraction": 1.0}, "xgboost: validation_fraction must be in [0, 1)"),
    ("xgboost", {"max_dept": 3}, "unknown parameter(s) ['max_dept']"),
    ("gbdt_lr", {"gbdt_fraction": 1.0}, "gbdt_lr: gbdt_fraction must be in (0, 1)"),
    ("gbdt_lr", {"num_leaves": 1}, "gbdt_lr: num_leaves must be >= 2, got 1"),
    ("gbdt_lr", {"lr_c": 0}, "gbdt_lr: lr_c must be > 0"),
    ("gbdt_lr", {"negatives_per_user": -1}, "gbdt_lr: negatives_per_user must be >= 0"),
    ("gbdt_lr", {"n_estimators": "10"}, "expected an integer"),
])
def test_config_errors_are_clear(kind, params, message):
    with pytest.raises(ConfigError) as err:
        make_spec({"kind": kind, "params": params}, "ranker")
    assert message in str(err.value)


def test_config_errors_also_come_from_the_constructor():
    with pytest.raises(ConfigError, match="objective must be one of"):
        XGBoostRankerConfig(objective="reg:squarederror")
    with pytest.raises(ConfigError, match="min_child_samples must be >= 1"):
        GBDTLRRankerConfig(min_child_samples=0)


def test_unfitted_rankers_refuse_to_save(tmp_path):
    writer = ArtifactWriter(tmp_path / "m", kind="test")
    for ranker in (XGBoostRanker(), GBDTLRRanker()):
        with pytest.raises(RecfunnelError, match="not trained"):
            ranker.save(writer, "rank/")
    writer.abort()


# ---------------------------------------------------------------- grid search
def _xor(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)  # no first-order signal: stumps cannot see it
    return x, y, np.arange(n) // 6


@pytest.mark.parametrize(("factory", "grid", "best"), [
    (lambda: xgb.XGBClassifier(n_estimators=20, tree_method="hist", n_jobs=1, random_state=0),
     {"max_depth": [1, 3]}, {"max_depth": 3}),
    (lambda: lgb.LGBMClassifier(n_estimators=20, n_jobs=1, verbosity=-1, random_state=0),
     {"num_leaves": [2, 8]}, {"num_leaves": 8}),
], ids=["xgboost", "lightgbm"])
def test_grid_search_picks_the_parameter_that_can_represent_the_planted_signal(factory, grid, best):
    x, y, groups = _xor()
    result = grid_search(factory, grid, x, y, groups=groups, cv=3)
    scores = result.cv_results.set_index(f"param_{next(iter(grid))}")["mean_test_score"]
    print(f"grid search AUCs: {scores.to_dict()}")
    assert result.best_params == best
    assert result.best_score > 0.9 and scores.min() < 0.65
    assert len(result.cv_results) == 2 and {"mean_test_score", "rank_test_score"} <= set(result.cv_results)


def test_grid_search_never_puts_one_group_in_two_folds():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 40, 500)
    x, y = rng.normal(size=(500, 2)), rng.integers(0, 2, 500)
    folds = make_folds(x, y, groups, cv=4)
    assert len(folds) == 4
    seen = np.concatenate([va for _, va in folds])
    np.testing.assert_array_equal(np.sort(seen), np.arange(500))  # every row validated once
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])
    fold_of_group = {}
    for f, (_, va) in enumerate(folds):
        for g in set(groups[va]):
            assert fold_of_group.setdefault(g, f) == f


def test_grouped_folds_stop_a_user_memorising_model_from_leaking():
    """The label is a per-user coin flip and the feature is the user id: only a leak can score."""
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(60), 10)
    y = rng.integers(0, 2, 60)[users]
    x = users[:, None].astype(float)
    tree = DecisionTreeClassifier(random_state=0)
    leaky = grid_search(tree, {"min_samples_leaf": [1]}, x, y, cv=3)
    grouped = grid_search(tree, {"min_samples_leaf": [1]}, x, y, groups=users, cv=3)
    assert leaky.best_score > 0.95 and grouped.best_score < 0.7, (leaky.best_score, grouped.best_score)


def test_grid_search_input_errors():
    x, y, groups = _xor(60)
    tree = DecisionTreeClassifier()
    with pytest.raises(ValueError, match="distinct groups cannot fill 3 folds"):
        grid_search(tree, {"max_depth": [1]}, x, y, groups=np.arange(60) % 2)
    with pytest.raises(ValueError, match="cv must be an integer >= 2"):
        grid_search(tree, {"max_depth": [1]}, x, y, cv=1)
    with pytest.raises(ValueError, match="non-empty list"):
        grid_search(tree, {"max_depth": []}, x, y)
    with pytest.raises(ValueError, match="one entry per row"):
        grid_search(tree, {"max_depth": [1]}, x, y, groups=groups[:10])
    with pytest.raises(TypeError, match="not a scikit-learn estimator"):
        grid_search(lambda: 3, {"max_depth": [1]}, x, y)


def test_ranker_config_with_maps_wrapper_names_and_validates():
    lgbm = ranker_config_with(LightGBMRankerConfig(), {"colsample_bytree": 0.5, "subsample": 0.7,
                                                       "reg_lambda": 2.0, "n_estimators": np.int64(50)})
    assert (lgbm.feature_fraction, lgbm.bagging_fraction, lgbm.lambda_l2, lgbm.n_estimators) == (0.5, 0.7, 2.0, 50)
    xgbc = ranker_config_with(XGBoostRankerConfig(), {"eta": 0.3, "max_depth": 4, "subsample": 0.9})
    assert (xgbc.learning_rate, xgbc.max_depth, xgbc.subsample) == (0.3, 4, 0.9)
    with pytest.raises(ConfigError, match=r"has no parameter\(s\) \['gamma'\]"):
        ranker_config_with(XGBoostRankerConfig(), {"gamma": 1.0})
    with pytest.raises(ConfigError, match="max_depth must be >= 1"):
        ranker_config_with(XGBoostRankerConfig(), {"max_depth": 0})


def test_grid_search_tunes_a_ranker_on_its_own_samples(planted):
    config = dataclasses.replace(RANKERS["xgboost-binary"][1], n_estimators=20, early_stopping_rounds=0)
    samples = ranker_samples(config, planted["hist"], *planted["train"])
    assert samples.x.shape == (len(samples.y), len(samples.feature_names))
    result = grid_search(
        lambda: xgb.XGBClassifier(n_estimators=20, tree_method="hist", enable_categorical=True,
                                  feature_types=samples.feature_types, n_jobs=1, random_state=0),
        {"max_depth": [2, 4]}, samples.x, samples.y, groups=samples.rows, cv=3)
    for tr, va in result.folds:
        assert not set(samples.rows[tr]) & set(samples.rows[va])
    ranker = XGBoostRanker(ranker_config_with(config, result.best_params))
    ranker.fit_candidates(planted["hist"], *planted["train"])
    request, candidates, labels = planted["test"]
    assert ranker.config.max_depth == result.best_params["max_depth"]
    assert _test_auc(ranker.score(request, candidates), candidates, labels) > 0.8
