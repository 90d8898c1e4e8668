"""Safe model files: a fitted estimator as a versioned ``.npz`` that loading never executes.

A pickle runs code while it loads, so a shared pickle is a security hole. A jaxkde model file
is a NumPy ``.npz`` archive read with ``allow_pickle=False``:

* ``header``: a 0-d unicode array holding JSON: ``{"format": "jaxkde.estimator",
  "version": 1, "jaxkde": <version that wrote it>, "tree": <the estimator>}``;
* ``a0``, ``a1``, ...: the numeric arrays the tree refers to, stored bit for bit.

The tree is the estimator's attributes (what pickling would save) in JSON: ``null``, booleans,
numbers, strings and lists as themselves, and one-key objects for the rest: ``{"tuple":
[...]}``, ``{"dict": [[key, value], ...]}``, ``{"array": i}`` (NumPy array ``a{i}``),
``{"jax": i}`` (a JAX array), ``{"scalar": i}`` (a NumPy scalar), ``{"dtype": "float32"}``
and ``{"object": name, "fields": {...}}``, where ``name`` must be one of a fixed list of
jaxkde's own record types (:data:`RECORD_TYPES`) or estimators: nothing else is ever
constructed, and no name is ever imported. A file of a newer version, of another layout, or
truncated is refused with a :class:`ModelFileError` that says which.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import tempfile
import zipfile
from typing import Any

import jax
import numpy as np

from jaxkde.bandwidth.learned import BandwidthFit
from jaxkde.bandwidth.rules import CovarianceFactor, PointBandwidths
from jaxkde.core.kernels import KERNEL_NAMES, get_kernel
from jaxkde.core.state import ClassConditionalState, HostWhitening, KDEState
from jaxkde.variants.bounds import Bounds

__all__ = ["ESTIMATOR_NAMES", "FORMAT", "RECORD_TYPES", "VERSION", "ModelFileError",
           "load_estimator", "save_estimator"]  # fmt: skip

FORMAT = "jaxkde.estimator"
#: The layout version this release writes and the newest it reads.
VERSION = 1
#: The record types a file may name (besides the estimators themselves).
RECORD_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        KDEState,
        ClassConditionalState,
        HostWhitening,
        BandwidthFit,
        Bounds,
        CovarianceFactor,
        PointBandwidths,
        *(type(get_kernel(name)) for name in KERNEL_NAMES),
    )
}
#: The estimators a file may hold (saved as the attributes their pickling would save).
ESTIMATOR_NAMES = ("KDE", "KDEClassifier")


class ModelFileError(ValueError):
    """A file that is not a jaxkde model file this release can read (says why)."""


def _fields(value) -> dict:
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value._asdict()


class _Writer:
    def __init__(self):
        self.arrays: list[np.ndarray] = []

    def array(self, a: np.ndarray, tag: str) -> dict:
        if a.dtype.hasobject:
            raise TypeError("cannot save an array of Python objects in a model file.")
        self.arrays.append(np.ascontiguousarray(a))
        return {tag: len(self.arrays) - 1}

    def encode(self, value) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, float)) and type(value) in (int, float):
            return value
        if isinstance(value, jax.Array):
            return self.array(np.asarray(value), "jax")
        if isinstance(value, np.ndarray):
            return self.array(value, "array")
        if isinstance(value, np.generic):
            return self.array(np.asarray(value), "scalar")
        if isinstance(value, np.dtype):
            return {"dtype": value.str}
        name = type(value).__name__
        if RECORD_TYPES.get(name) is type(value):
            fields = {k: self.encode(v) for k, v in _fields(value).items()}
            return {"object": name, "fields": fields}
        if name in ESTIMATOR_NAMES and hasattr(value, "__getstate__"):
            return {"object": name, "fields": self.encode(value.__getstate__())}
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return {"tuple": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            return {"dict": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if callable(value):
            raise TypeError(
                f"cannot save the callable {value!r} in a model file (files hold no "
                "code); set a CovarianceFactor or an explicit bandwidth first."
            )
        raise TypeError(f"cannot save a value of type {type(value).__qualname__} in a model file.")


def save_estimator(estimator, path) -> None:
    """Write ``estimator`` (a ``KDE`` or ``KDEClassifier``) to ``path`` atomically: a
    temporary file in the same folder, then renamed over ``path``.

    Raises ``TypeError`` for a ``path`` that is not a string or path, and for an attribute that
    has no place in the layout; nothing is written then.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    path = pathlib.Path(path)
    writer = _Writer()
    tree = writer.encode(estimator)
    header = {"format": FORMAT, "version": VERSION, "jaxkde": _version(), "tree": tree}
    members = {"header": np.array(json.dumps(header, allow_nan=True))}
    members.update({f"a{i}": a for i, a in enumerate(writer.arrays)})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _version() -> str:
    try:
        return importlib.metadata.version("jaxkde")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


class _Reader:
    def __init__(self, archive, path, estimators: dict[str, type]):
        self.archive = archive
        self.path = path
        self.estimators = estimators

    def fail(self, why: str):
        raise ModelFileError(f"{self.path} is not a valid jaxkde model file: {why}.")

    def array(self, index) -> np.ndarray:
        if type(index) is not int or f"a{index}" not in self.archive.files:
            self.fail(f"it refers to a missing array {index!r}")
        return self.archive[f"a{index}"]

    def decode(self, node) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict) or len(node) not in (1, 2):
            self.fail(f"unexpected node {str(node)[:80]!r}")
        if len(node) == 2:
            return self.record(node)
        [(tag, value)] = node.items()
        if tag == "tuple" and isinstance(value, list):
            return tuple(self.decode(v) for v in value)
        if tag == "dict" and isinstance(value, list):
            if not all(isinstance(p, list) and len(p) == 2 for p in value):
                self.fail("a dict entry is not a [key, value] pair")
            return {_hashable(self.decode(k), self): self.decode(v) for k, v in value}
        if tag == "array":
            return self.array(value)
        if tag == "jax":
            return jax.numpy.asarray(self.array(value))
        if tag == "scalar":
            a = self.array(value)
            if a.ndim != 0:
                self.fail("a scalar is not 0-dimensional")
            return a[()]
        if tag == "dtype" and isinstance(value, str):
            try:
                dtype = np.dtype(value)
            except TypeError:
                self.fail(f"unknown dtype {value!r}")
            if dtype.hasobject:
                self.fail("an object dtype")
            return dtype
        return self.fail(f"unknown tag {tag!r}")

    def record(self, node: dict):
        name, fields = node.get("object"), node.get("fields")
        if name in self.estimators:
            state = self.decode(fields)
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                self.fail(f"the attributes of {name} are not a dict of names")
            estimator = self.estimators[name].__new__(self.estimators[name])
            estimator.__setstate__(state)
            return estimator
        if name not in RECORD_TYPES or not isinstance(fields, dict):
            self.fail(f"unknown record type {name!r}" if isinstance(name, str) else "bad record")
        cls = RECORD_TYPES[name]
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else (
            set(cls._fields))  # fmt: skip
        if set(fields) - names:
            self.fail(f"{name} has no fields {sorted(set(fields) - names)}")
        try:
            return cls(**{k: self.decode(v) for k, v in fields.items()})
        except TypeError as err:
            self.fail(f"{name} cannot be rebuilt ({err})")


def _hashable(key, reader: _Reader):
    try:
        hash(key)
    except TypeError:
        reader.fail("a dict key is not hashable")
    return key


def load_estimator(path, estimators: dict[str, type]):
    """Read a model file written by :func:`save_estimator`; see the module docstring.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFileError
        Not an ``.npz`` archive, truncated or tampered with (a damaged member fails its
        checksum), a pickle or other file, of a newer layout version, or of a layout this
        release cannot read.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {str(path)!r}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile) or "header" not in archive.files:
                raise ModelFileError(f"{path} is not a jaxkde model file (no header).")
            header = _header(archive, path)
            tree = header["tree"]
            reader = _Reader(archive, path, estimators)
            result = reader.decode(tree)
    except ModelFileError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as err:
        raise ModelFileError(
            f"{path} could not be read as a jaxkde model file (truncated, damaged, a pickle or "
            f"another kind of file): {type(err).__name__}: {err}"
        ) from None
    if type(result) not in estimators.values():
        raise ModelFileError(f"{path} is not a valid jaxkde model file: it holds no estimator.")
    return result


def _header(archive, path) -> dict:
    raw = archive["header"]
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ModelFileError(f"{path} is not a jaxkde model file (its header is not text).")
    try:
        header = json.loads(str(raw))
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path} has a damaged header ({err}).") from None
    kind = header.get("format") if isinstance(header, dict) else None
    if kind != FORMAT:
        raise ModelFileError(f"{path} is not a jaxkde model file (format {kind!r}).")
    version = header.get("version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{path} has no valid layout version ({version!r}).")
    if version > VERSION:
        raise ModelFileError(
            f"{path} was written by jaxkde {header.get('jaxkde')!r} in layout version {version}; "
            f"this jaxkde reads versions up to {VERSION}. Upgrade jaxkde to load it."
        )
    if "tree" not in header:
        raise ModelFileError(f"{path} is not a valid jaxkde model file: no tree.")
    return header
