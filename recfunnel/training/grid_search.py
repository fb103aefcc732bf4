"""Hyper-parameter grid search with scikit-learn (seed 000 §3, "网格搜索").

:func:`grid_search` runs :class:`sklearn.model_selection.GridSearchCV` over any
scikit-learn compatible estimator (``lightgbm.LGBMClassifier``,
``xgboost.XGBClassifier``, ``sklearn`` models). When ``groups`` are given (the
user of each sample) the folds come from :class:`~sklearn.model_selection.GroupKFold`,
so no user has samples on both sides of a fold: a user's other candidates would
otherwise leak the user's taste into the validation score.

Tuning a funnel ranker: draw the samples the ranker trains on, search with the
matching scikit-learn estimator, then copy the winner into the ranker's config::

    from recfunnel.stages.rank.samples import ranker_samples
    config = XGBoostRankerConfig(nthread=1)
    samples = ranker_samples(config, data, request, candidates, labels)  # as fit_candidates gets them
    result = grid_search(
        lambda: xgboost.XGBClassifier(tree_method="hist", enable_categorical=True,
                                      feature_types=samples.feature_types, n_jobs=1),
        {"max_depth": [3, 6], "learning_rate": [0.05, 0.1]},
        samples.x, samples.y, groups=samples.rows)
    ranker = XGBoostRanker(ranker_config_with(config, result.best_params))

For ``LightGBMRanker`` / ``GBDTLRRanker`` use ``lightgbm.LGBMClassifier`` and pass
``fit_params={"categorical_feature": samples.categorical}``;
:func:`ranker_config_with` maps the wrapper's names (``colsample_bytree``,
``subsample``, ``reg_lambda``) onto LightGBM's (``feature_fraction``,
``bagging_fraction``, ``lambda_l2``). The rankers early-stop on a validation
split, so a searched ``n_estimators`` is an upper bound there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, StratifiedKFold

from recfunnel.errors import ConfigError

#: scikit-learn wrapper / native names -> the other spelling a ranker config may use
PARAM_ALIASES: dict[str, tuple[str, ...]] = {
    "colsample_bytree": ("feature_fraction",),
    "feature_fraction": ("colsample_bytree",),
    "subsample": ("bagging_fraction",),
    "bagging_fraction": ("subsample",),
    "reg_lambda": ("lambda_l2",),
    "lambda_l2": ("reg_lambda",),
    "lambda": ("reg_lambda", "lambda_l2"),
    "eta": ("learning_rate",),
    "min_data_in_leaf": ("min_child_samples",),
    "num_boost_round": ("n_estimators",),
    "n_jobs": ("nthread", "num_threads"),
}


@dataclass(frozen=True)
class GridSearchResult:
    """Outcome of :func:`grid_search`.

    Attributes:
        best_params: the parameter combination with the best mean validation score.
        best_score: its mean validation score over the folds.
        cv_results: one row per combination (scikit-learn's ``cv_results_``: ``param_*``,
            ``mean_test_score``, ``std_test_score``, ``rank_test_score``, ``split*_test_score``, times).
        folds: the (train indices, validation indices) of every fold.
        best_estimator: the estimator refitted on all rows with ``best_params`` (``refit=True`` only).
    """

    best_params: dict[str, Any]
    best_score: float
    cv_results: pd.DataFrame
    folds: list[tuple[np.ndarray, np.ndarray]]
    best_estimator: Any = None


def _make_estimator(estimator: Any) -> Any:
    if hasattr(estimator, "get_params") and hasattr(estimator, "fit") and not isinstance(estimator, type):
        return estimator
    if callable(estimator):
        made = estimator()
        if hasattr(made, "get_params") and hasattr(made, "fit"):
            return made
        raise TypeError(f"the estimator factory returned {type(made).__name__}, not a scikit-learn estimator")
    raise TypeError(f"expected a scikit-learn estimator or a factory of one, got {type(estimator).__name__}")


def _check_grid(param_grid: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]]) -> None:
    grids = [param_grid] if isinstance(param_grid, Mapping) else list(param_grid)
    if not grids:
        raise ValueError("param_grid is empty")
    for grid in grids:
        if not isinstance(grid, Mapping):
            raise TypeError(f"param_grid must be a dict or a list of dicts, got {type(grid).__name__}")
        for name, values in grid.items():
            if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray) or len(values) == 0:
                raise ValueError(f"param_grid['{name}'] must be a non-empty list of values, got {values!r}")


def make_folds(x: Any, y: np.ndarray, groups: np.ndarray | None = None, cv: int = 3, *,
               classifier: bool = True, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, validation) index pairs used by :func:`grid_search`.

    With ``groups``: :class:`GroupKFold` (shuffled by ``seed``), each group in exactly one
    validation fold. Without: :class:`StratifiedKFold` for classifiers, else :class:`KFold`.

    >>> folds = make_folds(np.zeros((6, 1)), np.array([0, 1] * 3), groups=np.array([7, 7, 8, 8, 9, 9]))
    >>> sorted(sorted(val.tolist()) for _, val in folds)
    [[0, 1], [2, 3], [4, 5]]
    """
    if isinstance(cv, bool) or not isinstance(cv, int | np.integer) or cv < 2:
        raise ValueError(f"cv must be an integer >= 2 (the number of folds), got {cv!r}")
    y = np.asarray(y)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (len(y),):
            raise ValueError(f"groups must have one entry per row: shape {groups.shape}, {len(y)} rows")
        n_groups = len(np.unique(groups))
        if n_groups < cv:
            raise ValueError(f"{n_groups} distinct groups cannot fill {cv} folds; lower cv or add groups")
        splitter = GroupKFold(n_splits=cv, shuffle=True, random_state=seed)
    elif classifier:
        splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=cv, shuffle=True, random_state=seed)
    folds = [(np.asarray(tr), np.asarray(va)) for tr, va in splitter.split(x, y, groups)]
    if groups is not None:
        for tr, va in folds:
            # GroupKFold's contract; checked because a leak here silently inflates every score
            if np.intersect1d(groups[tr], groups[va]).size:
                raise AssertionError("a group is on both sides of a fold")
    return folds


def grid_search(
    estimator: Any | Callable[[], Any],
    param_grid: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]],
    X: Any,
    y: np.ndarray,
    groups: np.ndarray | None = None,
    scoring: str | Callable | None = "roc_auc",
    cv: int = 3,
    *,
    fit_params: Mapping[str, Any] | None = None,
    n_jobs: int = 1,
    refit: bool = False,
    seed: int = 0,
) -> GridSearchResult:
    """Exhaustive search of ``param_grid`` by cross-validation.

    Args:
        estimator: a scikit-learn compatible estimator (cloned for every fit) or a
            zero-argument factory returning one.
        param_grid: name -> list of values (or a list of such dicts), as ``GridSearchCV`` takes.
        X: (N, F) features (array or DataFrame).
        y: (N,) targets.
        groups: (N,) group of each row (e.g. the user); no group is split across a fold.
        scoring: a scikit-learn scorer name or callable; ``"roc_auc"`` by default.
        cv: number of folds.
        fit_params: extra arguments of ``estimator.fit`` (e.g. ``categorical_feature``).
        n_jobs: parallel fits (keep 1 when the estimator itself is multi-threaded).
        refit: refit the best combination on all rows (``best_estimator``).
        seed: shuffling of the folds.

    Returns:
        :class:`GridSearchResult`.

    >>> from sklearn.tree import DecisionTreeClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2)); y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)  # XOR
    >>> result = grid_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 4]}, X, y,
    ...                      groups=np.arange(300) // 3)
    >>> result.best_params, result.best_score > 0.9, len(result.cv_results)
    ({'max_depth': 4}, True, 2)
    """
    est = _make_estimator(estimator)
    _check_grid(param_grid)
    y = np.asarray(y)
    if len(y) != (X.shape[0] if hasattr(X, "shape") else len(X)):
        raise ValueError(f"X has {X.shape[0] if hasattr(X, 'shape') else len(X)} rows, y has {len(y)}")
    folds = make_folds(X, y, groups, cv, classifier=is_classifier(est), seed=seed)
    search = GridSearchCV(est, param_grid, scoring=scoring, cv=folds, n_jobs=n_jobs, refit=refit,
                          error_score="raise")
    search.fit(X, y, **dict(fit_params or {}))
    return GridSearchResult(
        best_params=dict(search.best_params_), best_score=float(search.best_score_),
        cv_results=pd.DataFrame(search.cv_results_), folds=folds,
        best_estimator=search.best_estimator_ if refit else None)


def ranker_config_with(config: Any, params: Mapping[str, Any]) -> Any:
    """A copy of the ranker ``config`` dataclass with ``params`` (e.g. ``best_params``) set.

    Names are matched to the config's fields directly, else through
    :data:`PARAM_ALIASES` (``colsample_bytree`` -> ``feature_fraction`` for the
    LightGBM rankers, ``eta`` -> ``learning_rate``, ...). NumPy scalars become
    Python numbers. The config validates the values as usual.

    Raises:
        ConfigError: a name matches no field of the config.

    >>> from recfunnel.stages.rank.lightgbm import LightGBMRankerConfig
    >>> cfg = ranker_config_with(LightGBMRankerConfig(), {"colsample_bytree": 0.5, "num_leaves": np.int64(15)})
    >>> cfg.feature_fraction, cfg.num_leaves, type(cfg.num_leaves).__name__
    (0.5, 15, 'int')
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a ranker config instance, got {config!r}")
    fields = {f.name for f in dataclasses.fields(config)}
    updates: dict[str, Any] = {}
    unknown = []
    for name, value in params.items():
        target = name if name in fields else next((a for a in PARAM_ALIASES.get(name, ()) if a in fields), None)
        if target is None:
            unknown.append(name)
            continue
        updates[target] = value.item() if isinstance(value, np.generic) else value
    if unknown:
        raise ConfigError(f"{type(config).__name__} has no parameter(s) {sorted(unknown)}; "
                          f"parameters: {sorted(fields)}")
    return dataclasses.replace(config, **updates)
