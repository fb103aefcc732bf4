"""recfunnel: a multi-stage recommender system.

retrieval (many channels) -> pre-ranking -> ranking -> re-ranking, trained
offline, updated nearline from events, served online.

The curated public API is importable from here; imports are lazy so that
``import recfunnel`` stays cheap.

>>> import recfunnel
>>> recfunnel.default_config().channels[0].kind
'itemcf'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Funnel": "recfunnel.pipeline.online.funnel",
    "fit_funnel": "recfunnel.pipeline.offline.fit",
    "evaluate_funnel": "recfunnel.pipeline.offline.evaluate",
    "FunnelConfig": "recfunnel.config",
    "default_config": "recfunnel.config",
    "load_config": "recfunnel.config",
    "config_from_dict": "recfunnel.config",
    "TrainingData": "recfunnel.data.dataset",
    "build_training_data": "recfunnel.data.dataset",
    "load_interactions": "recfunnel.data.loaders",
    "load_users": "recfunnel.data.loaders",
    "load_items": "recfunnel.data.loaders",
    "Candidates": "recfunnel.types",
    "RequestBatch": "recfunnel.types",
    "FeatureBatch": "recfunnel.types",
    "RecfunnelError": "recfunnel.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recfunnel' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
