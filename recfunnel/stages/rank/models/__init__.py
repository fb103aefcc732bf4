"""The ranking model zoo, selectable by name (MISSION_MAP §4).

Each model is a short file composed from :mod:`recfunnel.layers`. Imports are
lazy, so naming one model does not import the others.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from recfunnel.errors import ConfigError
from recfunnel.layers.inputs import ModelSchema

# name -> (module under recfunnel.stages.rank.models, class name)
MODELS: dict[str, tuple[str, str]] = {
    "lr": ("lr", "LR"),
    "fm": ("fm", "FM"),
    "ffm": ("ffm", "FFM"),
    "fnn": ("fnn", "FNN"),
    "ipnn": ("pnn", "IPNN"),
    "opnn": ("pnn", "OPNN"),
    "wide_deep": ("wide_deep", "WideDeep"),
    "deepfm": ("deepfm", "DeepFM"),
    "dcn": ("dcn", "DCN"),
    "dcnv2": ("dcn", "DCNv2"),
    "xdeepfm": ("xdeepfm", "XDeepFM"),
    "nfm": ("nfm", "NFM"),
    "afm": ("afm", "AFM"),
    "autoint": ("autoint", "AutoInt"),
    "fibinet": ("fibinet", "FiBiNET"),
    "ppnet": ("ppnet", "PPNet"),
    "youtube_wlr": ("youtube", "YouTubeWeightedLR"),
    "din": ("din", "DIN"),
    "dien": ("dien", "DIEN"),
    "bst": ("bst", "BST"),
    "dsin": ("dsin", "DSIN"),
    "sim": ("sim", "SIM"),
    "time_lstm": ("time_lstm", "TimeAwareLSTM"),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def model_class(name: str) -> type:
    if name not in MODELS:
        raise ConfigError(f"unknown ranking model {name!r}; known models: {model_names()}")
    module, cls = MODELS[name]
    return getattr(importlib.import_module(f"recfunnel.stages.rank.models.{module}"), cls)


def build_model(name: str, schema: ModelSchema, params: Mapping[str, Any] | None = None):
    """A new model ``name`` for ``schema`` with its config built from ``params`` (unknown keys are errors)."""
    cls = model_class(name)
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {unknown}; options: {sorted(known)}")
    for key, value in list(params.items()):
        if isinstance(value, list):
            params[key] = tuple(value)
    return cls(schema, cls.config_class(**params))


__all__ = ["MODELS", "build_model", "model_class", "model_names"]
