"""Load interactions, users and items from the usual recommender file formats.

The format is read from the file's content, not its name:

* Parquet: a file starting with the ``PAR1`` magic bytes, or a directory of
  them (read in sorted path order; names starting with ``.`` or ``_`` skipped).
* RecBole atomic files: tab-separated with a ``name:type`` header
  (``token``, ``token_seq``, ``float``, ``float_seq``); the ``:type`` is dropped.
* ``::``-separated files without a header (MovieLens 1M ``ratings.dat``,
  ``users.dat``, ``movies.dat``).
* Delimited text with or without a header; the delimiter (comma, tab,
  semicolon, pipe) is the one that splits the first lines into the same number
  of fields most consistently. A first line is a header when it names a known
  column (``user_id``, ``movieId``, ``rating``, ...), or when it is text over
  a column that is numeric below it.

Files are decoded as UTF-8, falling back to Latin-1 (MovieLens 100K ``u.item``).

Output conventions (those of :mod:`recfunnel.data.dataset`): string columns
are ``object`` dtype holding ``str`` with ``None`` for missing; numbers are
``float64`` with NaN for missing; multi-value columns hold tuples of ``str``
with ``()`` for missing. Unnamed columns (an empty header, usually a written
DataFrame index) are dropped.

Interactions: ``user_id``, ``item_id`` (str), ``timestamp`` (int64) first,
then the other columns in file order: ``rating``, ``weight``, ``watch_time``
float64; ``label`` int64 0/1; ``event`` str; anything else float64 when all
its values are numbers, else str (RecBole ``token`` columns stay str).
Timestamps: integers are kept (any unit: seconds, milliseconds, a counter),
floats are truncated, date strings are parsed to unix seconds (naive times
are taken as UTC). A headerless file is only accepted with 4 columns
``user, item, rating, timestamp`` (numeric rating and integer timestamp, as in
``u.data``) or 3 columns ``user, item, timestamp`` where every timestamp is
``>= 1e8`` (unmistakably epoch seconds or milliseconds rather than ratings
or counts); anything else needs a header.

Users / items, indexed by ``user_id`` / ``item_id``, one column kind per column:

* RecBole ``float`` -> float64; ``token`` -> str, except columns named
  ``age`` or ``*year`` where at least 95% of the values parse as numbers ->
  float64, the rest NaN (an age or a release year is a quantity, and
  ml-100k.item's release years hold the strays 'unkonwn' and 'V'; zip codes
  and occupation codes stay str);
  ``token_seq`` -> tuple of str split on spaces, except free-text columns
  (titles) -> the plain str; ``float_seq`` -> tuple of float.
* Generic tables: numbers -> float64; Parquet lists -> tuple of str; a string
  column -> tuple of str split on ``|`` when at least half of its values
  contain ``|``, or when it is named ``genres``/``tags``/``categories``/...
  and any value does; otherwise str. Free-text columns
  (:func:`recfunnel.features.specs.is_free_text_column`: titles, names, URLs,
  near-unique text with spaces) are never split and stay str, for display;
  :func:`recfunnel.features.specs.infer_feature_specs` does not use them.
* MovieLens 100K ``u.user`` / 1M ``users.dat``: ``age`` float64, ``gender``,
  ``occupation`` (ml-1m: a code), ``zip_code`` str. ``u.item``: ``title``,
  ``release_year`` (float64, from the release date), ``genres`` (tuple, from
  the 19 genre flags); the video release date and IMDb URL are dropped.
  ``movies.dat``: ``title``, ``release_year`` (from the "(1995)" in the
  title), ``genres``.
* The id column may also be called ``id``.

Rows with a missing id (or a missing timestamp, for interactions) are dropped
with a warning; a file where every row is like that is an error. Every
problem is a :class:`~recfunnel.errors.DataError` with a one-line message
that starts with the file's path.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recfunnel.errors import DataError
from recfunnel.features.specs import is_free_text_column

USER_ID_ALIASES = ("user_id", "userid", "user", "uid", "visitorid", "customer_id")
ITEM_ID_ALIASES = (
    "item_id", "movieid", "itemid", "item", "iid", "product_id", "track_id", "article_id",
)
TIMESTAMP_ALIASES = ("timestamp", "ts", "time", "unix_time", "datetime", "date", "event_time")
LABEL_ALIASES = ("label", "click", "clicked", "is_click")
WEIGHT_ALIASES = ("weight", "count", "plays", "play_count", "quantity")

#: canonical interaction column -> accepted names (case-insensitive), in order of preference
INTERACTION_ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": USER_ID_ALIASES,
    "item_id": ITEM_ID_ALIASES,
    "timestamp": TIMESTAMP_ALIASES,
    "label": LABEL_ALIASES,
    "weight": WEIGHT_ALIASES,
    "rating": ("rating",),
    "event": ("event",),
    "watch_time": ("watch_time",),
}

_MULTI_VALUE_NAMES = frozenset(
    {"genres", "genre", "tags", "tag", "categories", "category_list", "class", "keywords", "labels"}
)
_NUMERIC_TOKEN_NAME = re.compile(r"^(age|.*year)$", re.IGNORECASE)
_NUMERIC_TOKEN_SHARE = 0.95
_RECBOLE_FIELD = re.compile(r"^[^:\t]+:(token|token_seq|float|float_seq)$")
_UNNAMED = re.compile(r"^(Unnamed: \d+)?$")
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_KNOWN_HEADER_NAMES = frozenset(
    {a for aliases in INTERACTION_ALIASES.values() for a in aliases}
    | {"id", "title", "genres", "name", "age", "gender", "occupation", "zip_code"}
)
_SNIFF_DELIMITERS = ("\t", ",", ";", "|")
_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", "\x1f": "'::'"}
_ML_1M_SEP = "\x1f"  # '::' is rewritten to this one-character separator for the C parser
_EPOCH_LIKE = 1e8  # 1973-03-03 in seconds: smaller integers may be ratings or counts
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def _error(path: Path, problem: str) -> DataError:
    """A DataError whose message is one line naming the file."""
    return DataError(" ".join(f"{path}: {problem}".splitlines()))


def _columns_found(columns: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(str(c)) for c in columns[:limit])
    more = f", ... ({len(columns) - limit} more)" if len(columns) > limit else ""
    return f"columns found: [{shown}{more}]"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


@dataclass
class _RawTable:
    """A table as read from disk, before column conversion.

    Text columns hold str with NaN for missing; Parquet columns keep their dtypes.
    """

    frame: pd.DataFrame
    fmt: str
    header: bool = True
    sep: str | None = None
    recbole_types: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise _error(path, "file not found")
    return path


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def _read_parquet(path: Path) -> _RawTable:
    import pyarrow.parquet as pq

    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            and _is_parquet(p)
        )
        if not files:
            raise _error(path, "directory holds no Parquet files")
    else:
        files = [path]
    try:
        frames = [pq.read_table(f).to_pandas() for f in files]
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise _error(path, f"cannot read Parquet: {_one_line(exc)}") from exc
    # a DataFrame written with its index (e.g. a users table indexed by user_id) gets it back as a column
    frames = [f if isinstance(f.index, pd.RangeIndex) else f.reset_index() for f in frames]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return _RawTable(frame.reset_index(drop=True), "Parquet")


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _error(path, f"cannot read: {_one_line(exc)}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _first_lines(text: str, limit: int = 200) -> list[str]:
    lines: list[str] = []
    for line in io.StringIO(text):
        if line.strip():
            lines.append(line.rstrip("\r\n"))
            if len(lines) >= limit:
                break
    return lines


def _quoting(sep: str) -> int:
    # tab / pipe / '::' files (RecBole, MovieLens) carry titles with stray quotes: never quoted
    return csv.QUOTE_MINIMAL if sep in (",", ";") else csv.QUOTE_NONE


def _split_lines(lines: list[str], sep: str) -> list[list[str]]:
    return list(csv.reader(lines, delimiter=sep, quoting=_quoting(sep)))


def _sniff_delimiter(lines: list[str]) -> str | None:
    """The delimiter giving the most consistent field count (then the most fields)."""
    best: tuple[float, int, int] | None = None
    best_sep = None
    for priority, sep in enumerate(_SNIFF_DELIMITERS):
        counts = [len(row) for row in _split_lines(lines, sep)]
        n_fields, n_lines = Counter(counts).most_common(1)[0]
        if n_fields < 2:
            continue
        score = (round(n_lines / len(counts), 6), n_fields, -priority)
        if best is None or score > best:
            best, best_sep = score, sep
    return best_sep


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _is_date(values: list[str]) -> np.ndarray:
    """Which values parse as dates (with a digit: 'March' alone is not a date)."""
    if not values:
        return np.zeros(0, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce", format="mixed")
    return parsed.notna().to_numpy() & np.array([any(ch.isdigit() for ch in v) for v in values])


def _has_header(rows: list[list[str]], names: frozenset[str] = frozenset()) -> bool:
    """Whether the first row names the columns.

    It does when it holds a known column name or one of ``names`` (the columns the
    user named), or when a column reads as text over numbers or dates below it.
    """
    first = [f.strip() for f in rows[0]]
    if any(f.lower() in _KNOWN_HEADER_NAMES or f in names for f in first):
        return True
    if any(not f or _is_number(f) for f in first) or _is_date(first).any():
        return False  # a header names every column, and a name is neither a number nor a date
    for col in range(len(first)):
        below = [r[col].strip() for r in rows[1:] if col < len(r) and r[col].strip()]
        if below and (all(_is_number(v) for v in below) or _is_date(below).all()):
            return True
    return False


def _read_table(path: str | Path, names: frozenset[str] = frozenset()) -> _RawTable:
    """Read any supported file into a raw table (columns still untyped).

    ``names`` are column names the caller expects (the user's column mapping): a
    first line holding one of them is a header.
    """
    path = _check_path(path)
    if path.is_dir() or (path.stat().st_size >= 4 and _is_parquet(path)):
        table = _read_parquet(path)
        if len(table.frame) == 0:
            raise _error(path, "no rows")
        return table
    if path.stat().st_size == 0:
        raise _error(path, "empty file")
    text = _decode(path)
    if "\x00" in text[:65536]:
        raise _error(path, "binary data (NUL bytes), not a text table: expected CSV/TSV, Parquet, "
                           "a RecBole atomic file or a GroupLens file")
    lines = _first_lines(text)
    if not lines:
        raise _error(path, "empty file")

    fields = lines[0].split("\t")
    if len(fields) >= 1 and all(_RECBOLE_FIELD.match(f.strip()) for f in fields):
        fmt, sep, header = "RecBole atomic file", "\t", True
    else:
        if "::" in lines[0] and len({line.count("::") for line in lines}) == 1:
            text = text.replace("::", _ML_1M_SEP)
            lines = [line.replace("::", _ML_1M_SEP) for line in lines]
            sep = _ML_1M_SEP
        else:
            try:
                found = _sniff_delimiter(lines)
            except csv.Error as exc:
                raise _error(path, f"cannot read as delimited text: {_one_line(exc)}") from exc
            if found is None:
                raise _error(
                    path, "cannot find the column delimiter (tried comma, tab, semicolon, pipe and '::')"
                )
            sep = found
        fmt = f"{_DELIMITER_NAMES[sep]}-separated text"
        header = _has_header(_split_lines(lines[:50], sep), names)
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=sep, header=0 if header else None, dtype=object,
            keep_default_na=False, na_values=[""], quoting=_quoting(sep), index_col=False,
            skipinitialspace=sep == ",", engine="c",
        )
    except Exception as exc:  # ParserError, EmptyDataError, ...
        raise _error(path, f"cannot parse as {fmt}: {_one_line(exc)}") from exc

    recbole_types: dict[str, str] = {}
    if fmt.startswith("RecBole"):
        names = []
        for col in frame.columns:
            name, _, kind = str(col).strip().rpartition(":")
            names.append(name)
            recbole_types[name] = kind
        frame.columns = names
    elif header:
        frame.columns = [str(c).strip() for c in frame.columns]
        frame = frame.drop(columns=[c for c in frame.columns if _UNNAMED.match(c)])
    if len(frame) == 0:
        raise _error(path, "no rows (only a header)")
    return _RawTable(frame, fmt, header, sep, recbole_types)


# ----------------------------------------------------------------------------- column conversion


def _present(values: pd.Series) -> pd.Series:
    return values.notna()


#: id values that mean "missing" (what pandas and spreadsheets write for a missing value): an id
#: column holding them has a missing id, not a user or item called "nan"
MISSING_ID_TOKENS = frozenset({"nan", "NaN", "NAN", "null", "NULL", "Null", "None", "none", "<NA>", "N/A", "n/a",
                               "#N/A", "NA"})


def _to_str(values: pd.Series, *, strip: bool = False) -> pd.Series:
    """Object column of str, None for missing (and for blank values and the
    :data:`MISSING_ID_TOKENS` when ``strip``, which the id columns use)."""
    present = _present(values)
    if pd.api.types.is_float_dtype(values) and len(values[present]) and (
        values[present] == np.trunc(values[present])
    ).all():
        values = values.astype("Int64")  # ids read as floats: 7.0 -> "7"
    text = values[present]
    if not (pd.api.types.is_object_dtype(text) and pd.api.types.infer_dtype(text) == "string"):
        text = text.astype(str).astype(object)
    if strip:
        text = text.str.strip()
    out = np.full(len(values), None, dtype=object)
    out[present.to_numpy()] = text.to_numpy(dtype=object)
    if strip:
        out[pd.Series(out, dtype=object).isin(MISSING_ID_TOKENS | {""}).to_numpy()] = None
    return pd.Series(out, index=values.index, dtype=object)


def _is_listlike(values: pd.Series) -> bool:
    """True when the column holds lists / tuples / arrays (Parquet list columns)."""
    if not pd.api.types.is_object_dtype(values):
        return False
    if pd.api.types.infer_dtype(values, skipna=True) != "mixed":
        return False
    return bool(values.dropna().map(lambda v: isinstance(v, list | tuple | np.ndarray)).any())


def _try_numeric(values: pd.Series) -> pd.Series | None:
    """float64 values when every present value is a number (bool, int, float or numeric str), else None."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype(np.float64)
    if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return None
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "empty":
        return pd.Series(np.nan, index=values.index, dtype=np.float64)
    if kind not in ("string", "integer", "floating", "mixed-integer-float", "boolean", "decimal"):
        return None
    try:
        # numpy's str -> float is ~4x faster than pd.to_numeric and fails fast on text
        numbers = values.to_numpy(dtype=object, na_value=np.nan).astype(np.float64)
    except (ValueError, TypeError):
        return None
    return pd.Series(numbers, index=values.index)


def _row(values: pd.Series, position: int) -> str:
    label = values.index[position]
    return f"data row {label + 1}" if isinstance(label, int | np.integer) else f"row {label!r}"


def _to_float(values: pd.Series, path: Path, name: str) -> pd.Series:
    numbers = _try_numeric(values)
    if numbers is not None:
        return numbers
    coerced = pd.to_numeric(values.astype(object), errors="coerce")
    bad = (_present(values) & coerced.isna()).to_numpy()
    pos = int(bad.argmax())
    raise _error(path, f"column '{name}' must be numeric; found {values.iloc[pos]!r} ({_row(values, pos)})")


def _to_label(values: pd.Series, path: Path) -> pd.Series:
    numbers = _try_numeric(values)
    if numbers is not None:
        mapped = numbers.where(numbers.isin([0.0, 1.0]))
    else:
        words = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0}
        mapped = values.astype(str).str.strip().str.lower().map(words).astype(np.float64)
    bad = mapped.isna().to_numpy()
    if bad.any():
        pos = int(bad.argmax())
        raise _error(
            path, f"column 'label' must be 0/1 (or true/false); found {values.iloc[pos]!r} ({_row(values, pos)})"
        )
    return mapped.astype(np.int64)


def _datetime_seconds(stamps: pd.Series) -> np.ndarray:
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def _to_timestamp(values: pd.Series, path: Path, name: str) -> np.ndarray:
    """int64 timestamps of present values (the caller dropped missing ones)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _datetime_seconds(values)
    numeric = _try_numeric(values)
    if numeric is not None:
        numbers = numeric.to_numpy()
        bad = ~np.isfinite(numbers) | (np.abs(numbers) >= 2.0**62)
        if bad.any():
            pos = int(bad.argmax())
            raise _error(path, f"column '{name}' has an unusable timestamp {values.iloc[pos]!r} ({_row(values, pos)})")
        return np.trunc(numbers).astype(np.int64)
    text = values.astype(str)
    as_number = pd.to_numeric(text, errors="coerce")
    if as_number.notna().any():
        # numbers and something else: the something else is the bad value (a date among numbers
        # would be read in another unit than its neighbours)
        pos = int(as_number.isna().to_numpy().argmax())
        raise _error(path, f"column '{name}' has an unusable timestamp {values.iloc[pos]!r} ({_row(values, pos)}); "
                           "the other values are numbers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        if parsed.isna().any():
            parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
    if parsed.isna().any():
        pos = int(parsed.isna().to_numpy().argmax())
        raise _error(
            path,
            f"column '{name}' holds values that are neither numbers nor dates, e.g. {values.iloc[pos]!r} "
            f"({_row(values, pos)})",
        )
    return _datetime_seconds(parsed)


def _split_multi(values: pd.Series, sep: str | None) -> pd.Series:
    """Tuples of str split on ``sep`` (None: whitespace); () for missing."""

    def split(v: object) -> tuple[str, ...]:
        if isinstance(v, str):
            return tuple(t.strip() for t in v.split(sep) if t.strip())
        if isinstance(v, list | tuple | np.ndarray):
            return tuple(str(t) for t in v if t is not None and not (isinstance(t, float) and np.isnan(t)))
        return ()

    return values.map(split).astype(object)


def _to_float_tuples(values: pd.Series, path: Path, name: str) -> pd.Series:
    def split(v: object) -> tuple[float, ...]:
        if not isinstance(v, str):
            return ()
        try:
            return tuple(float(t) for t in v.split())
        except ValueError as exc:
            raise _error(path, f"column '{name}' (float_seq) has a non-number in {v!r}") from exc

    return values.map(split).astype(object)


def _is_multi_value(name: str, values: pd.Series) -> bool:
    present = values[_present(values)]
    if len(present) == 0 or is_free_text_column(name, present):
        return False
    has_pipe = present.astype(str).str.contains("|", regex=False)
    return bool(has_pipe.mean() >= 0.5 or (name.lower() in _MULTI_VALUE_NAMES and has_pipe.any()))


def _feature_column(values: pd.Series, name: str, recbole_type: str | None, path: Path) -> pd.Series:
    """Convert one user / item column by the rules in the module docstring."""
    if recbole_type == "float":
        return _to_float(values, path, name)
    if recbole_type == "token":
        if _NUMERIC_TOKEN_NAME.match(name):
            numbers = pd.to_numeric(values.astype(object), errors="coerce").astype(np.float64)
            present = int(_present(values).sum())
            # ml-100k.item has 'unkonwn' and 'V' among 1682 release years: those become NaN
            if present and numbers.notna().sum() >= _NUMERIC_TOKEN_SHARE * present:
                return numbers
        return _to_str(values)
    if recbole_type == "token_seq":
        if is_free_text_column(name, values):
            return _to_str(values)
        return _split_multi(values, None)
    if recbole_type == "float_seq":
        return _to_float_tuples(values, path, name)
    if _is_listlike(values):
        return _split_multi(values, "|")
    numbers = _try_numeric(values)
    if numbers is not None:
        return numbers
    if _is_multi_value(name, values):
        return _split_multi(values, "|")
    return _to_str(values)


def _interaction_column(values: pd.Series, name: str, recbole_type: str | None, path: Path) -> pd.Series:
    if name in ("rating", "weight", "watch_time"):
        return _to_float(values, path, name)
    if name == "label":
        return _to_label(values, path)
    if name == "event":
        return _to_str(values)
    if recbole_type in ("token_seq", "float_seq"):
        return _feature_column(values, name, recbole_type, path)
    if recbole_type == "token":
        return _to_str(values)
    if _is_listlike(values):
        return _split_multi(values, None)
    numbers = _try_numeric(values)
    if numbers is not None:
        return numbers
    return _to_str(values)


def _canonical_names(columns: list[str], aliases: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Old -> canonical name for the columns matching an alias (case-insensitive).

    For each canonical name the first alias in its preference order wins; a
    column is renamed at most once.
    """
    lower = {c: c.strip().lower() for c in columns}
    renames: dict[str, str] = {}
    for canonical, names in aliases.items():
        for alias in names:
            match = next((c for c in columns if lower[c] == alias and c not in renames), None)
            if match is not None:
                renames[match] = canonical
                break
    return renames


def _drop_missing(frame: pd.DataFrame, required: list[str], path: Path) -> pd.DataFrame:
    """Drop rows with a missing required value (with a warning); all rows bad is an error."""
    bad = np.zeros(len(frame), bool)
    for col in required:
        bad |= frame[col].isna().to_numpy()
    if bad.all():
        raise _error(path, f"every row is missing one of {required}")
    if bad.any():
        warnings.warn(
            f"{path}: dropped {int(bad.sum())} of {len(frame)} rows with a missing {' / '.join(required)}",
            stacklevel=3,
        )
        frame = frame.loc[~bad]
    return frame


# ----------------------------------------------------------------------------- interactions


def _headerless_interactions(table: _RawTable, path: Path) -> pd.DataFrame:
    frame = table.frame
    k = frame.shape[1]
    hint = "add a header line naming the columns user_id, item_id[, rating], timestamp"
    if k == 4:
        r, t = _try_numeric(frame.iloc[:, 2]), _try_numeric(frame.iloc[:, 3])
        ok = r is not None and t is not None
        if ok:
            ok = bool((t.dropna() == np.trunc(t.dropna())).all()) and not (
                r.min() >= _EPOCH_LIKE and t.max() < _EPOCH_LIKE
            )
        if not ok:
            raise _error(path, f"no header line, and the 4 columns do not read as user, item, rating, timestamp; {hint}")
        # keep the parsed numbers so they are not parsed twice
        return pd.DataFrame({"user_id": frame.iloc[:, 0], "item_id": frame.iloc[:, 1], "rating": r, "timestamp": t})
    if k == 3:
        t = _try_numeric(frame.iloc[:, 2])
        third = frame.iloc[:, 2].dropna().astype(str).tolist()
        if t is None and third and _is_date(third[:200]).all():  # user, item, date
            return pd.DataFrame({"user_id": frame.iloc[:, 0], "item_id": frame.iloc[:, 1],
                                 "timestamp": frame.iloc[:, 2]})
        present = pd.Series([], dtype=float) if t is None else t.dropna()
        if len(present) == 0 or not (present == np.trunc(present)).all() or present.min() < _EPOCH_LIKE:
            raise _error(
                path, f"no header line, and the third of 3 columns does not look like epoch timestamps "
                f"(it could be a rating or a count); {hint}"
            )
        return pd.DataFrame({"user_id": frame.iloc[:, 0], "item_id": frame.iloc[:, 1], "timestamp": t})
    raise _error(path, f"no header line and {k} columns, so the columns cannot be told apart; {hint}")


#: the column-mapping keys (``--user-col``, ``--item-col``, ``--time-col`` and the config keys
#: ``user_col``, ``item_col``, ``time_col``) -> the canonical interaction column they name
COLUMN_MAPPING_KEYS = {"user_col": "user_id", "item_col": "item_id", "time_col": "timestamp"}
_MAPPING_HINT = "name them with --user-col / --item-col / --time-col (or user_col / item_col / time_col in the config)"


def column_mapping(user_col: str | None = None, item_col: str | None = None,
                   time_col: str | None = None) -> dict[str, str]:
    """Canonical column -> the file's column name, for the names given (None: found by alias)."""
    given = {"user_id": user_col, "item_id": item_col, "timestamp": time_col}
    return {canonical: name for canonical, name in given.items() if name}


def load_interactions(path: str | Path, *, require_timestamp: bool = True,
                      columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Load an interaction log.

    Args:
        path: a file (RecBole ``.inter``, ``u.data``, ``ratings.dat``, CSV/TSV, Parquet)
            or a directory of Parquet files.
        require_timestamp: when False, a file without a timestamp column gets ``timestamp = 0``.
        columns: the file's own names of the canonical columns, e.g. ``{"user_id": "customer",
            "item_id": "product", "timestamp": "purchased_at"}`` (see :func:`column_mapping`);
            columns not named here are found by their usual aliases.

    Returns:
        DataFrame with ``user_id``, ``item_id`` (str), ``timestamp`` (int64) and the
        optional columns described in the module docstring, in file row order.

    Raises:
        DataError: missing or empty file, unknown layout, missing columns, bad values.
    """
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(INTERACTION_ALIASES))
    if unknown:
        raise DataError(f"column mapping: unknown column(s) {unknown}; valid: {sorted(INTERACTION_ALIASES)}")
    table = _read_table(path, frozenset(columns.values()))
    path = Path(path)
    if not table.header and columns:
        raise _error(path, f"no header line, so the columns {sorted(columns.values())} cannot be found; "
                           "add a header line naming the columns")
    frame = table.frame if table.header else _headerless_interactions(table, path)
    original_columns = [str(c) for c in frame.columns]
    absent = [f"{name!r} ({canonical})" for canonical, name in columns.items() if name not in original_columns]
    if absent:
        raise _error(path, f"no column {', '.join(absent)} ({table.fmt}); {_columns_found(original_columns)}")
    renames = {name: canonical for canonical, name in columns.items()}
    # a column that already bears a mapped canonical name steps aside (its data is kept)
    renames.update({c: f"{c}_original" for c in original_columns if c in columns and c not in renames})
    rest = [c for c in original_columns if c not in renames]
    renames.update(_canonical_names(rest, {k: v for k, v in INTERACTION_ALIASES.items() if k not in columns}))
    frame = frame.rename(columns=renames)
    types = {renames.get(name, name): kind for name, kind in table.recbole_types.items()}

    required = ["user_id", "item_id"] + (["timestamp"] if require_timestamp else [])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise _error(
            path, f"no {' / '.join(missing)} column ({table.fmt}); {_columns_found(original_columns)}; "
                  f"{_MAPPING_HINT}"
        )
    frame = frame.copy()
    frame["user_id"] = _to_str(frame["user_id"], strip=True)
    frame["item_id"] = _to_str(frame["item_id"], strip=True)
    has_time = "timestamp" in frame.columns
    frame = _drop_missing(frame, ["user_id", "item_id"] + (["timestamp"] if has_time else []), path)

    out = {"user_id": frame["user_id"], "item_id": frame["item_id"]}
    if has_time:
        out["timestamp"] = pd.Series(_to_timestamp(frame["timestamp"], path, "timestamp"), index=frame.index)
    else:
        out["timestamp"] = pd.Series(np.zeros(len(frame), np.int64), index=frame.index)
    for col in frame.columns:
        if col in out:
            continue
        out[str(col)] = _interaction_column(frame[col], str(col), types.get(str(col)), path)
    return pd.DataFrame(out).reset_index(drop=True)


# ----------------------------------------------------------------------------- users and items


def _headerless_entities(table: _RawTable, entity: str, path: Path) -> pd.DataFrame:
    frame = table.frame
    k, sep = frame.shape[1], table.sep
    if entity == "user" and k == 5 and sep in ("|", _ML_1M_SEP):
        names = (
            ["user_id", "age", "gender", "occupation", "zip_code"] if sep == "|"  # u.user
            else ["user_id", "gender", "age", "occupation", "zip_code"]  # users.dat
        )
        frame.columns = names
        out = {n: _to_str(frame[n]) for n in names}
        out["user_id"] = _to_str(frame["user_id"], strip=True)
        out["age"] = _to_float(frame["age"], path, "age")
        return pd.DataFrame(out)[names]
    if entity == "item" and k == 5 + len(_ML100K_GENRES) and sep == "|":  # u.item
        flags = frame.iloc[:, 5:].astype(str).apply(lambda c: c.str.strip()).to_numpy() == "1"
        genres = np.array(_ML100K_GENRES, dtype=object)
        released = pd.to_datetime(frame.iloc[:, 2], format="%d-%b-%Y", errors="coerce")
        return pd.DataFrame({
            "item_id": _to_str(frame.iloc[:, 0], strip=True),
            "title": _to_str(frame.iloc[:, 1]),
            "release_year": released.dt.year.astype(np.float64),
            "genres": pd.Series([tuple(genres[row]) for row in flags], index=frame.index, dtype=object),
        })
    if entity == "item" and k == 3 and sep == _ML_1M_SEP:  # movies.dat
        title = _to_str(frame.iloc[:, 1])
        year = title.map(lambda t: _TITLE_YEAR.search(t) if isinstance(t, str) else None)
        return pd.DataFrame({
            "item_id": _to_str(frame.iloc[:, 0], strip=True),
            "title": title,
            "release_year": year.map(lambda m: float(m.group(1)) if m else np.nan).astype(np.float64),
            "genres": _split_multi(frame.iloc[:, 2], "|"),
        })
    raise _error(
        path, f"no header line, so the {entity} id column is unknown; add a header naming it '{entity}_id'"
    )


def _load_entities(path: str | Path, entity: str, id_column: str | None = None) -> pd.DataFrame:
    id_col = f"{entity}_id"
    aliases = (USER_ID_ALIASES if entity == "user" else ITEM_ID_ALIASES) + ("id",)
    table = _read_table(path, frozenset({id_column}) if id_column else frozenset())
    path = Path(path)
    if not table.header:
        frame = _headerless_entities(table, entity, path)
    else:
        raw = table.frame
        columns = [str(c) for c in raw.columns]
        if id_column and id_column in columns:  # the name the user gave the id column of the interactions
            renames = {id_column: id_col} | {c: f"{c}_original" for c in columns if c == id_col and c != id_column}
        else:
            renames = _canonical_names(columns, {id_col: aliases})
        raw = raw.rename(columns=renames)
        if id_col not in raw.columns:
            raise _error(
                path, f"no {id_col} column ({table.fmt}); {_columns_found([str(c) for c in raw.columns])}"
            )
        types = {renames.get(n, n): t for n, t in table.recbole_types.items()}
        out = {id_col: _to_str(raw[id_col], strip=True)}
        for col in raw.columns:
            if col != id_col:
                out[str(col)] = _feature_column(raw[col], str(col), types.get(str(col)), path)
        frame = pd.DataFrame(out, index=raw.index)
    frame = _drop_missing(frame, [id_col], path)
    frame = frame.set_index(pd.Index(frame[id_col].to_numpy(dtype=object), dtype=object, name=id_col))
    return frame.drop(columns=[id_col])


def load_users(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Load a user table (RecBole ``.user``, ``u.user``, ``users.dat``, CSV/TSV, Parquet).

    Args:
        path: the file (or a directory of Parquet files).
        id_column: the id column's own name (``--user-col``); when the table has no column
            of that name, the id column is found by its usual aliases.

    Returns:
        DataFrame indexed by ``user_id`` (str); column kinds as in the module docstring.
    """
    return _load_entities(path, "user", id_column)


def load_items(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Load an item table (RecBole ``.item``, ``u.item``, ``movies.dat``, CSV/TSV, Parquet).

    Args:
        path: the file (or a directory of Parquet files).
        id_column: the id column's own name (``--item-col``); when the table has no column
            of that name, the id column is found by its usual aliases.

    Returns:
        DataFrame indexed by ``item_id`` (str); column kinds as in the module docstring.
    """
    return _load_entities(path, "item", id_column)


def read_id_list(path: str | Path) -> list[str]:
    """User ids for ``recommend --users-file``: one per line.

    Blank lines are skipped and surrounding spaces stripped; a first line
    ``user_id`` (or another user id column name) is taken as a header.

    Args:
        path: a text file.

    Returns:
        the ids in file order (duplicates kept).
    """
    path = _check_path(path)
    if path.is_dir():
        raise _error(path, "is a directory, expected a text file with one user id per line")
    text = _decode(path)
    if "\x00" in text:
        raise _error(path, "binary data (NUL bytes), expected a text file with one user id per line")
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if ids and ids[0].lower() in USER_ID_ALIASES:
        ids = ids[1:]
    if not ids:
        raise _error(path, "no user ids (expected one id per line)")
    return ids
