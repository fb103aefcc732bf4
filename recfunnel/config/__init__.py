"""Funnel configuration: frozen dataclasses, an explicit registry, ``load_config(path)``.

A config file (JSON or TOML) names each stage by its registry ``kind`` and gives
that stage's parameters; unknown kinds or parameters are errors, never ignored.

Example (JSON)::

    {"channels": [{"kind": "itemcf", "quota": 300, "params": {"neighbours": 200}},
                  {"kind": "popular", "quota": 100}],
     "ranker": {"kind": "lightgbm", "params": {"n_estimators": 300}},
     "reranker": {"kind": "mmr", "params": {"relevance_weight": 0.9}},
     "retrieval_k": 300, "rank_k": 100}
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recfunnel.config.registry import config_class, kinds
from recfunnel.errors import ConfigError


@dataclass(frozen=True)
class StageSpec:
    """One stage of the funnel: its registry kind, instance name and typed config.

    ``quota`` is used by retrieval channels only: how many candidates the channel
    contributes to the merged set.
    """

    kind: str
    name: str
    config: Any
    quota: int = 0


@dataclass(frozen=True)
class FunnelConfig:
    """The whole funnel.

    Attributes:
        channels: retrieval channels, merged with quotas.
        ranker / reranker: optional stages (None skips the stage).
        retrieval_k: candidates after merging; rank_k: candidates kept by the ranker.
        history_length: items of point-in-time history given to every stage.
        holdout_ratio: share of each user's newest training events the ranker learns to predict.
        user_col / item_col / time_col: the interaction file's own names of the user, item and
            timestamp columns (None: found by their usual aliases); ``--user-col`` etc. override
            them. Kept with the model, so ``evaluate`` reads a test file of the same layout.
    """

    channels: tuple[StageSpec, ...]
    ranker: StageSpec | None = None
    reranker: StageSpec | None = None
    retrieval_k: int = 300
    rank_k: int = 100
    history_length: int = 100
    holdout_ratio: float = 0.2
    seed: int = 0
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    fallback: StageSpec = field(default_factory=lambda: make_spec({"kind": "popular", "name": "fallback"}))


#: the config keys naming the interaction file's own columns (see FunnelConfig)
COLUMN_KEYS = ("user_col", "item_col", "time_col")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of parameters, got {value!r}")
        return build_dataclass(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _dataclass_default(f: dataclasses.Field) -> Any:
    """The field's default when it is a config dataclass instance (else None)."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        return None
    return value if dataclasses.is_dataclass(value) and not isinstance(value, type) else None


def build_dataclass(cls: type, params: dict[str, Any], where: str, base: Any = None) -> Any:
    """Instantiate config dataclass ``cls`` from plain ``params``, validating names and types.

    A nested table overrides its field's default key by key: ``{"trainer": {"epochs": 8}}``
    keeps every other option of the ranker's default trainer (weight averaging, the
    minimum steps per epoch), not those of a bare ``TrainerConfig()``. ``base``, when
    given, is the instance whose values the unnamed keys keep.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {unknown}; valid: {sorted(fields)}")
    kwargs = {}
    for k, v in params.items():
        default = getattr(base, k) if base is not None else _dataclass_default(fields[k])
        if isinstance(v, dict) and isinstance(hints[k], type) and isinstance(default, hints[k]):
            kwargs[k] = build_dataclass(type(default), v, f"{where}.{k}", base=default)
        else:
            kwargs[k] = _coerce(v, hints[k], f"{where}.{k}")
    try:
        if base is not None:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def make_spec(entry: dict[str, Any], where: str = "stage") -> StageSpec:
    if not isinstance(entry, dict) or "kind" not in entry:
        raise ConfigError(f"{where}: each stage needs a 'kind' (one of {kinds()})")
    unknown = sorted(set(entry) - {"kind", "name", "quota", "params"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; use kind, name, quota, params")
    kind = entry["kind"]
    cls = config_class(kind)
    name = entry.get("name", kind)
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"{where}: stage name {name!r} must be letters, digits, '-' or '_'")
    quota = entry.get("quota", 0)
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise ConfigError(f"{where}: quota must be a non-negative integer")
    return StageSpec(kind, name, build_dataclass(cls, entry.get("params", {}) or {}, f"{where}({kind})"), quota)


def config_from_dict(raw: dict[str, Any]) -> FunnelConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the funnel config must be a table")
    known = {f.name for f in dataclasses.fields(FunnelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"funnel config: unknown key(s) {unknown}; valid: {sorted(known)}")
    channels = raw.get("channels")
    if not channels:
        raise ConfigError("funnel config: 'channels' must list at least one retrieval channel")
    specs = tuple(make_spec(c, f"channels[{i}]") for i, c in enumerate(channels))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"funnel config: channel names must be unique, got {names}")
    kwargs: dict[str, Any] = {"channels": specs}
    for key in ("ranker", "reranker", "fallback"):
        if raw.get(key) is not None:
            kwargs[key] = make_spec(raw[key], key)
    hints = typing.get_type_hints(FunnelConfig)
    for key in ("retrieval_k", "rank_k", "history_length", "holdout_ratio", "seed", *COLUMN_KEYS):
        if key in raw:
            kwargs[key] = _coerce(raw[key], hints[key], key)
    cfg = FunnelConfig(**kwargs)
    if cfg.retrieval_k < 1 or cfg.rank_k < 1 or cfg.history_length < 1:
        raise ConfigError("funnel config: retrieval_k, rank_k and history_length must be positive")
    if not 0.0 < cfg.holdout_ratio < 1.0:
        raise ConfigError("funnel config: holdout_ratio must be in (0, 1)")
    for key in COLUMN_KEYS:
        if getattr(cfg, key) is not None and not getattr(cfg, key).strip():
            raise ConfigError(f"funnel config: {key} must name a column, got an empty string")
    return cfg


def _spec_to_dict(spec: StageSpec) -> dict[str, Any]:
    return {"kind": spec.kind, "name": spec.name, "quota": spec.quota,
            "params": json.loads(json.dumps(dataclasses.asdict(spec.config)))}


def config_to_dict(cfg: FunnelConfig) -> dict[str, Any]:
    """Plain dict that :func:`config_from_dict` turns back into ``cfg``."""
    out: dict[str, Any] = {"channels": [_spec_to_dict(s) for s in cfg.channels]}
    for key in ("ranker", "reranker", "fallback"):
        spec = getattr(cfg, key)
        out[key] = None if spec is None else _spec_to_dict(spec)
    for key in ("retrieval_k", "rank_k", "history_length", "holdout_ratio", "seed", *COLUMN_KEYS):
        out[key] = getattr(cfg, key)
    return out


def load_config(path: str | Path) -> FunnelConfig:
    """Read a JSON or TOML funnel config that overrides the default funnel key by key.

    A file names only what it changes: ``{"ranker": {"kind": "neural", "params":
    {"model": "deepfm"}}}`` keeps the default channels, re-ranker and sizes. A key it
    gives replaces the default's whole entry (a ``channels`` list is the new list),
    and ``null`` for ``ranker`` or ``reranker`` removes that stage. Nested tables then
    override their own defaults key by key, as in :func:`config_from_dict`, which
    (unlike this function) takes a complete config.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse config: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the funnel config must be a table, got {type(raw).__name__}")
    return config_from_dict({**DEFAULT_CONFIG, **raw})


#: The best merged set the benchmarks support (BENCHMARKS.md, "Retrieval"): ItemCF, UserCF
#: and BPR find different items (their union at 500 beats every single channel), popular
#: covers users without history. BPR runs on one thread so that fits are reproducible.
DEFAULT_CONFIG: dict[str, Any] = {
    "channels": [
        {"kind": "itemcf", "quota": 300},
        {"kind": "usercf", "quota": 200},
        {"kind": "bpr", "quota": 200, "params": {"num_threads": 1}},
        {"kind": "popular", "quota": 100},
    ],
    # DIEN over each user's 20 newest behaviours, with the neural ranker's default trainer
    # (list-wise softmax, early stopping on GAUC). Every model of the zoo was tried in the funnel
    # (BENCHMARKS.md, "Which ranker"); of the six then run on 12 seeds (FM, AutoInt and DSIN
    # included) it has the best ML-100K NDCG@10. Paired by seed against DeepFM, the default before
    # it: ML-100K +0.0022 +- 0.0008, Taobao +0.0005 +- 0.0002 (8 seeds), the 25k-user simulated
    # platform a tie (0.1998 against 0.1999). It costs 3-7x DeepFM's fit and 4.6x its scoring
    # time; 20 behaviours score as well as the encoder's default 50 at less than half the cost.
    "ranker": {"kind": "neural", "params": {"model": "dien", "encoder": {"max_sequence_length": 20}}},
    "reranker": {"kind": "mmr"},
    "retrieval_k": 300,
    "rank_k": 100,
    "history_length": 100,
}


def default_config() -> FunnelConfig:
    """The best configuration the benchmarks support (see BENCHMARKS.md)."""
    return config_from_dict(DEFAULT_CONFIG)
