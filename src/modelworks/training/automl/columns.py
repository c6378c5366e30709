"""What each input column is (numeric, categorical, datetime, text) and which to leave out.

Detection reads the training frame once; the lists it returns drive the preprocessing of
every model family, so a column is typed the same way for all of them.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from modelworks.core.errors import InvalidInput

# A string column is free text when its values are long and mostly distinct.
TEXT_MIN_MEAN_LENGTH = 25
TEXT_MIN_UNIQUE_RATIO = 0.3
TEXT_MIN_MEAN_WORDS = 3.0


@dataclass
class ColumnKinds:
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    datetime: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.datetime, *self.text]


@dataclass
class ColumnReport:
    kinds: ColumnKinds
    dropped: list[str]
    warnings: list[str]


def check_target(frame: pd.DataFrame, target: str) -> None:
    """The target exists and has values; otherwise say what is there instead."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput(f"AutoML takes a pandas DataFrame; got {type(frame).__name__}.")
    if target not in frame.columns:
        names = [str(c) for c in frame.columns]
        close = difflib.get_close_matches(str(target), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        shown = ", ".join(map(repr, names[:20])) + (" ..." if len(names) > 20 else "")
        raise InvalidInput(f"Target column {target!r} is not in the frame.{hint} Columns: {shown}.")
    if frame[target].isna().all():
        raise InvalidInput(
            f"Target column {target!r} is all null; give a frame with labelled rows."
        )


def _unsupported(name: Hashable, s: pd.Series) -> str | None:
    dtype = s.dtype
    if pd.api.types.is_complex_dtype(dtype):
        return "complex numbers: split into real and imaginary columns"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "a duration: convert it with .dt.total_seconds()"
    if isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype | pd.SparseDtype):
        return "not a plain column type: convert it to numbers, strings or datetimes"
    if dtype is np.dtype(object):
        sample = s.dropna().head(200)
        odd = [v for v in sample if isinstance(v, list | dict | set | tuple | bytes | np.ndarray)]
        if odd:
            return (
                f"holds {type(odd[0]).__name__} values: flatten them into scalar columns "
                "or join them into strings"
            )
    return None


def _is_datetime_strings(s: pd.Series) -> bool:
    sample = s.dropna().astype(str).head(200)
    if sample.empty or sample.str.fullmatch(r"[-+]?\d+(\.\d+)?").mean() > 0.5:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed", utc=True)
    return bool(parsed.notna().mean() >= 0.9)


def _is_text(s: pd.Series) -> bool:
    values = s.dropna().astype(str)
    if values.empty:
        return False
    lengths = values.str.len()
    words = values.str.count(r"\s+") + 1
    unique_ratio = values.nunique() / len(values)
    return bool(
        lengths.mean() >= TEXT_MIN_MEAN_LENGTH
        and words.mean() >= TEXT_MIN_MEAN_WORDS
        and unique_ratio >= TEXT_MIN_UNIQUE_RATIO
    )


def _is_id_like(s: pd.Series) -> bool:
    """Unique per row integers or strings carry no signal, only the row's identity."""
    values = s.dropna()
    if len(values) < 20 or values.nunique() != len(s):
        return False
    if pd.api.types.is_integer_dtype(values):
        return True
    return bool(values.dtype == object or isinstance(values.dtype, pd.StringDtype))


def _predicts_target(x: pd.Series, y: pd.Series, task: str) -> bool:
    """True when the column alone gives the target on every row (a leak, or a copy)."""
    mask = x.notna() & y.notna()
    if mask.sum() < 20:
        return False
    xs, ys = x[mask], y[mask]
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(xs) or pd.api.types.is_bool_dtype(xs):
            return False
        with np.errstate(all="ignore"):
            corr = np.corrcoef(xs.astype(float), ys.astype(float))[0, 1]
        return bool(np.isfinite(corr) and abs(corr) > 0.9999)
    if xs.nunique() >= len(xs) * 0.5:
        return False
    groups = pd.DataFrame({"x": xs.astype(str).to_numpy(), "y": ys.astype(str).to_numpy()})
    return bool((groups.groupby("x")["y"].nunique() == 1).all())


def _kind(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    if _is_datetime_strings(s):
        return "datetime"
    if _is_text(s):
        return "text"
    return "categorical"


def inspect_columns(frame: pd.DataFrame, target: str, task: str) -> ColumnReport:
    """Type every feature column; drop all-null and id-like ones; flag leaks."""
    kinds = ColumnKinds()
    dropped: list[str] = []
    notes: list[str] = []
    y = frame[target]
    for name in frame.columns:
        if name == target:
            continue
        s = frame[name]
        if not isinstance(name, str):
            raise InvalidInput(
                f"Column names must be strings; {name!r} is a {type(name).__name__}. "
                "Rename the columns, e.g. frame.columns = frame.columns.astype(str)."
            )
        problem = _unsupported(name, s)
        if problem:
            raise InvalidInput(f"Column {name!r} has unsupported dtype {s.dtype}: {problem}.")
        if s.isna().all():
            dropped.append(name)
            notes.append(f"Column {name!r} is all null and was dropped.")
            continue
        kind = _kind(s)
        if kind in ("numeric", "categorical") and _is_id_like(s):
            dropped.append(name)
            notes.append(
                f"Column {name!r} looks like an id (a distinct value on every row) and was "
                "dropped: it would leak row identity instead of signal."
            )
            continue
        if _predicts_target(s, y, task):
            notes.append(
                f"Column {name!r} predicts the target perfectly on the training rows: a "
                "possible leak (a copy of the target or something known only after it). "
                "Drop it unless it is really available at prediction time."
            )
        getattr(kinds, kind).append(name)
    if not kinds.all:
        raise InvalidInput(
            f"No usable feature columns are left besides the target {target!r}"
            + (f" (dropped: {', '.join(dropped)})" if dropped else "")
            + "; give the frame at least one feature column."
        )
    return ColumnReport(kinds=kinds, dropped=dropped, warnings=notes)
