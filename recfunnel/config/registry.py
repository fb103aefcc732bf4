"""The explicit registry of stage kinds: kind -> (config class, stage class).

Imports are lazy so that loading a config does not import every model.
"""

from __future__ import annotations

import importlib
from typing import Any

from recfunnel.errors import ConfigError

# kind -> (module, config class name, stage class name)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "popular": ("recfunnel.stages.recall.popular", "PopularConfig", "PopularRetriever"),
    "hot": ("recfunnel.stages.recall.popular", "HotConfig", "HotRetriever"),
    "category_popular": ("recfunnel.stages.recall.popular", "CategoryPopularConfig", "CategoryPopularRetriever"),
    "new_items": ("recfunnel.stages.recall.new_items", "NewItemConfig", "NewItemRetriever"),
    "itemcf": ("recfunnel.stages.recall.itemcf", "ItemCFConfig", "ItemCFRetriever"),
    "usercf": ("recfunnel.stages.recall.usercf", "UserCFConfig", "UserCFRetriever"),
    "swing": ("recfunnel.stages.recall.swing", "SwingConfig", "SwingRetriever"),
    "als": ("recfunnel.stages.recall.mf", "ALSConfig", "ALSRetriever"),
    "bpr": ("recfunnel.stages.recall.mf", "BPRConfig", "BPRRetriever"),
    "ease": ("recfunnel.stages.recall.ease", "EASEConfig", "EASERetriever"),
    "category_index": ("recfunnel.stages.recall.profile", "CategoryIndexConfig", "CategoryIndexRetriever"),
    "author": ("recfunnel.stages.recall.profile", "AuthorConfig", "AuthorRetriever"),
    "geo": ("recfunnel.stages.recall.profile", "GeoConfig", "GeoRetriever"),
    "cache": ("recfunnel.stages.recall.cache", "CacheConfig", "CacheRetriever"),
    "cluster": ("recfunnel.stages.recall.cluster", "ClusterConfig", "ClusterRetriever"),
    "lookalike": ("recfunnel.stages.recall.lookalike", "LookalikeConfig", "LookalikeRetriever"),
    "item2vec": ("recfunnel.stages.recall.embedding", "Item2VecConfig", "Item2VecRetriever"),
    "deepwalk": ("recfunnel.stages.recall.embedding", "DeepWalkConfig", "DeepWalkRetriever"),
    "node2vec": ("recfunnel.stages.recall.embedding", "Node2VecConfig", "Node2VecRetriever"),
    "eges": ("recfunnel.stages.recall.embedding", "EGESConfig", "EGESRetriever"),
    "lightgbm": ("recfunnel.stages.rank.lightgbm", "LightGBMRankerConfig", "LightGBMRanker"),
    "xgboost": ("recfunnel.stages.rank.xgboost", "XGBoostRankerConfig", "XGBoostRanker"),
    "gbdt_lr": ("recfunnel.stages.rank.gbdt_lr", "GBDTLRRankerConfig", "GBDTLRRanker"),
    "neural": ("recfunnel.stages.rank.neural", "NeuralRankerConfig", "NeuralRanker"),
    "mmr": ("recfunnel.stages.rerank.mmr", "MMRConfig", "MMRReRanker"),
}


def kinds() -> list[str]:
    return sorted(_REGISTRY)


def _lookup(kind: str) -> tuple[Any, Any]:
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown stage kind '{kind}'; known kinds: {kinds()}")
    module, cfg_name, stage_name = _REGISTRY[kind]
    mod = importlib.import_module(module)
    return getattr(mod, cfg_name), getattr(mod, stage_name)


def config_class(kind: str) -> type:
    return _lookup(kind)[0]


def stage_class(kind: str) -> type:
    return _lookup(kind)[1]
