"""Checked readers of the files the workflow passes between its jobs.

Every file a job reads is checked on load: that it is readable (a damaged or truncated
archive, a missing member, pickled Python objects where numbers are expected, malformed JSON
or CSV), that its arrays have the shapes it records or its neighbours imply, and that its
numbers are finite.  Every problem is one :class:`CorruptFileError` (a ``ValueError``)
whose message names the file, and the network and layer where they apply, and says what to
do: a file the workflow made is recomputed once it is deleted.
"""

from __future__ import annotations

import csv
import json
import zipfile
import zlib
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: what to do about a damaged file the workflow made
RECOMPUTE = "delete the file to have it recomputed"

#: the exceptions that reading a damaged file raises (numpy, zipfile, zlib, json, csv)
READ_ERRORS = (OSError, EOFError, KeyError, IndexError, TypeError, ValueError, zipfile.BadZipFile,
               zlib.error, csv.Error)


class CorruptFileError(ValueError):
    """A file cannot be used: unreadable, incomplete, or inconsistent with what it records or
    with the files it is used with.  The message names the file (and the network and layer
    where they apply) and what to do."""


def _detail(error: BaseException) -> str:
    text = str(error)
    if "allow_pickle" in text:  # numpy's hint would suggest loading untrusted pickles
        return "it holds pickled Python objects where numbers are expected"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextmanager
def reading(what: str, hint: str = RECOMPUTE):
    """Turn the errors of reading a damaged file into one :class:`CorruptFileError`:
    ``"<what> (<the error>); <hint>"``.  ``what`` names the file (and network and layer);
    a missing file is reported as such."""
    try:
        yield
    except CorruptFileError:
        raise
    except FileNotFoundError as error:
        raise CorruptFileError(f"{what}: no such file ({error.filename or error})") from error
    except READ_ERRORS as error:
        raise CorruptFileError(f"{what} ({_detail(error)}); {hint}") from error


def corrupt(path, problem: str, hint: str = RECOMPUTE) -> CorruptFileError:
    """``CorruptFileError("<path>: <problem>; <hint>")``."""
    return CorruptFileError(f"{path}: {problem}; {hint}")


def open_npz(path):
    """``np.load`` of an ``.npz`` archive, never unpickling: a file that is not a zip archive
    (truncated, or something else) raises ``BadZipFile`` instead of being tried as a pickle."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise zipfile.BadZipFile("not a zip archive: truncated, or not an .npz file")
    return np.load(path, allow_pickle=False)


def load_npz(path, what: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    """The members ``required`` (all must be there) and those of ``optional`` that are, of a
    NumPy ``.npz`` file (never unpickling), as ``{name: array}``."""
    required = list(required)
    with reading(f"{path}: not a readable {what}"):
        with open_npz(path) as data:
            missing = [key for key in required if key not in data.files]
            if missing:
                raise corrupt(path, f"{what} without the member(s) {missing} (it has {sorted(data.files)})")
            return {key: data[key] for key in [*required, *(k for k in optional if k in data.files)]}


def read_json(path, what: str, keys: Iterable[str] = ()) -> dict:
    """A JSON object with (at least) the keys ``keys``."""
    with reading(f"{path}: not a readable {what}"):
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(result, dict):
        raise corrupt(path, f"{what} holds a JSON {type(result).__name__}, not an object")
    missing = [key for key in keys if key not in result]
    if missing:
        raise corrupt(path, f"{what} without the key(s) {missing}")
    return result


def read_csv(path, what: str, columns: Iterable[str] = ()) -> list:
    """The rows of a CSV file with a header holding (at least) ``columns``, as dicts."""
    with reading(f"{path}: not a readable {what}"):
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    missing = [column for column in columns if column not in header]
    if missing:
        raise corrupt(path, f"{what} without the column(s) {missing} (header: {header})")
    return rows


def n_nonfinite(array) -> int:
    """How many entries of a numeric array are NaN or infinite."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.inexact):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def check_array(path, array, name: str, what: str, *, ndim: int | None = None, shape=None,
                integer: bool = False, finite: bool = True) -> np.ndarray:
    """Check one array read from ``path`` (``name``: the member; ``what``: the file kind):
    its number of dimensions or shape (None entries: any), integer or real numbers, and
    finiteness.  Returns it."""
    array = np.asarray(array)
    kind = np.integer if integer else np.number
    if not np.issubdtype(array.dtype, kind) or np.iscomplexobj(array) or array.dtype == bool:
        raise corrupt(path, f"{what}: {name} holds {array.dtype} values, expected "
                            f"{'integers' if integer else 'real numbers'}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and array.ndim != ndim or shape is not None and any(
            want is not None and got != want for got, want in zip(array.shape, shape)):
        expected = (f"({', '.join('*' if w is None else str(w) for w in shape)})" if shape is not None
                    else f"{ndim} dimension{'s' * (ndim != 1)}")
        raise corrupt(path, f"{what}: {name} has shape {array.shape}, expected {expected}")
    bad = n_nonfinite(array) if finite else 0
    if bad:
        raise corrupt(path, f"{what}: {name} has {bad} non-finite values")
    return array
