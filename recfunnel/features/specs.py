"""Feature specifications: what each model input column is.

A :class:`FeatureSpec` names one input column, its kind and where it comes from.
:func:`infer_feature_specs` reads the kinds off a raw table following the
convention of :mod:`recfunnel.data.dataset`:

* float / int / bool columns -> ``dense`` (one float per row, NaN = missing);
* columns of ``str`` -> ``sparse`` (one vocabulary index per row);
* columns of tuples of ``str`` -> ``sequence`` (multi-value: genres, tags).

Free-text columns (titles, names, URLs, descriptions; see
:func:`is_free_text_column`) are kept in the tables for display but are not
features: a near-unique string is just a second id and only adds a huge,
unlearnable embedding table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from recfunnel.features.vocab import Vocabulary

FeatureKind = Literal["dense", "sparse", "sequence"]
FeatureSource = Literal["user", "item", "context", "interaction"]

_KINDS = ("dense", "sparse", "sequence")
_SOURCES = ("user", "item", "context", "interaction")

#: columns of interaction / context tables that are keys or targets, never features
RESERVED_COLUMNS = frozenset({"user_id", "item_id", "timestamp", "label"})

_FREE_TEXT_NAME = re.compile(
    r"(^|[_\W])(title|name|description|desc|text|summary|overview|url|comment|review|body)s?($|[_\W])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FeatureSpec:
    """One model input column.

    Attributes:
        name: column name (unique within a model).
        kind: ``dense`` (float), ``sparse`` (one id) or ``sequence`` (list of ids).
        source: the table it is read from.
        vocab_size: number of embedding rows for sparse / sequence features,
            including index 0 (missing / padding) and 1 (unknown); 0 for dense.
        max_len: slots per row for sequence features; 0 otherwise.

    >>> FeatureSpec("genres", "sequence", "item", vocab_size=21, max_len=6).kind
    'sequence'
    """

    name: str
    kind: FeatureKind
    source: FeatureSource
    vocab_size: int = 0
    max_len: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"FeatureSpec {self.name!r}: kind must be one of {_KINDS}, got {self.kind!r}")
        if self.source not in _SOURCES:
            raise ValueError(f"FeatureSpec {self.name!r}: source must be one of {_SOURCES}, got {self.source!r}")
        if self.vocab_size < 0 or self.max_len < 0:
            raise ValueError(f"FeatureSpec {self.name!r}: vocab_size and max_len must be >= 0")


def is_free_text_column(name: str, values: pd.Series) -> bool:
    """True when a string column reads like free text rather than a category.

    The rule: the name contains a word such as ``title``, ``name``, ``url``,
    ``description``, ``text``, ``summary`` or ``review``; or (with at least 20
    non-missing values) at least 95% of the values are distinct and at least
    half of them contain a space.

    >>> is_free_text_column("movie_title", pd.Series(["Toy Story"]))
    True
    >>> is_free_text_column("genres", pd.Series(["Comedy|Drama", "Drama"]))
    False
    """
    if _FREE_TEXT_NAME.search(str(name)):
        return True
    present = values.dropna()
    present = present[present.map(lambda v: isinstance(v, str))]
    if len(present) < 20:
        return False
    distinct_ratio = present.nunique() / len(present)
    spaced = present.str.contains(" ", regex=False).mean()
    return bool(distinct_ratio >= 0.95 and spaced >= 0.5)


def _column_kind(values: pd.Series) -> str | None:
    """``dense``, ``sparse``, ``sequence`` or None (not a feature) for one column."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return "dense"
    present = values.dropna()
    if len(present) == 0:
        return None
    is_tuple = present.map(lambda v: isinstance(v, tuple))
    if is_tuple.all():
        # tuples of numbers (RecBole float_seq) have no vocabulary
        if all(isinstance(t, str) for v in present for t in v):
            return "sequence"
        return None
    if present.map(lambda v: isinstance(v, str)).all():
        return "sparse"
    return None


def infer_feature_specs(table: pd.DataFrame, source: FeatureSource) -> tuple[FeatureSpec, ...]:
    """Feature specs for every usable column of a raw table, in column order.

    The index (``user_id`` / ``item_id``) is not a feature. For ``interaction``
    and ``context`` tables the key and target columns (:data:`RESERVED_COLUMNS`)
    are skipped. Free-text columns, all-missing columns and columns of other
    types (datetimes, tuples of numbers) are skipped. ``vocab_size`` counts the
    distinct values seen plus the two reserved indices (see :class:`Vocabulary`).

    Args:
        table: a raw users / items / interactions table (see :mod:`recfunnel.data.dataset`).
        source: where the columns come from.

    Returns:
        one :class:`FeatureSpec` per feature column.

    >>> t = pd.DataFrame({"age": [20.0, 31.0], "gender": ["F", "M"], "tags": [("a", "b"), ()]})
    >>> [(s.name, s.kind, s.vocab_size, s.max_len) for s in infer_feature_specs(t, "user")]
    [('age', 'dense', 0, 0), ('gender', 'sparse', 4, 0), ('tags', 'sequence', 4, 2)]
    """
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
    specs: list[FeatureSpec] = []
    for name in table.columns:
        if source in ("interaction", "context") and name in RESERVED_COLUMNS:
            continue
        values = table[name]
        kind = _column_kind(values)
        if kind is None:
            continue
        if kind == "dense":
            specs.append(FeatureSpec(str(name), "dense", source))
        elif kind == "sparse":
            if is_free_text_column(str(name), values):
                continue
            vocab = Vocabulary().fit(values.to_numpy(dtype=object))
            specs.append(FeatureSpec(str(name), "sparse", source, vocab_size=len(vocab)))
        else:
            lengths = values.map(lambda v: len(v) if isinstance(v, tuple) else 0).to_numpy()
            max_len = int(lengths.max(initial=0))
            if max_len == 0:
                continue
            vocab = Vocabulary().fit(values.to_numpy(dtype=object))
            specs.append(FeatureSpec(str(name), "sequence", source, vocab_size=len(vocab), max_len=max_len))
    return tuple(specs)


__all__ = ["FeatureSpec", "RESERVED_COLUMNS", "infer_feature_specs", "is_free_text_column"]
